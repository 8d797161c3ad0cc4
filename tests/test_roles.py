from django.contrib.auth.models import Group

from rotation.roles import ROLE_PERMISSIONS, roles_sync


def group_permissions() -> dict[str, set[tuple[str, str]]]:
    return {
        group.name: set(group.permissions.values_list("content_type__app_label", "codename"))
        for group in Group.objects.prefetch_related("permissions")
    }


def test_the_migrations_create_exactly_the_current_roles(db):
    # The test database is built by the migrations alone; nothing here calls roles_sync.
    assert group_permissions() == {name: set(pairs) for name, pairs in ROLE_PERMISSIONS.items()}


def test_roles_sync_restores_a_role_that_drifted(db):
    support = Group.objects.get(name="Support")
    support.permissions.clear()
    roles_sync()
    assert group_permissions()["Support"] == set(ROLE_PERMISSIONS["Support"])
