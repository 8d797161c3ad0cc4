"""The staff roles, as groups with fixed permissions.

Data migrations create the groups with a frozen copy of their permissions (a migration must
not depend on today's list); `roles_sync()` applies this, the current definition, and a test
checks that the migrations arrive at it.
"""

from typing import Any

SUPPORT = "Support"
SUPPORT_LEAD = "Support lead"
COMPLIANCE = "Compliance"

SUPPORT_PERMISSIONS = [
    ("rotation", "view_installation"),
    ("rotation", "view_resource"),
    ("rotation", "view_connectedproject"),
    ("rotation", "view_rotation"),
    ("rotation", "view_rotationbatch"),
    ("rotation", "rotate_resource"),
    ("rotation", "cancel_rotation"),
    ("rotation", "retry_rotation"),
    ("rotation", "confirm_redeploy"),
]

# (app_label, codename) pairs each group holds; anything not listed is removed on sync.
ROLE_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    SUPPORT: SUPPORT_PERMISSIONS,
    # Emergency rotations and rollbacks are for leads: they cut customers off or undo a push;
    # so is switching an installation's secrets endpoint (every later push goes there).
    SUPPORT_LEAD: [
        *SUPPORT_PERMISSIONS,
        ("rotation", "rotate_resource_emergency"),
        ("rotation", "rollback_rotation"),
        ("rotation", "switch_endpoint"),
        # Installation tokens and the inventory check act on whole installations.
        ("rotation", "rotate_installation_token"),
        ("rotation", "sync_vercel_resources"),
        ("rotation", "view_inventoryreport"),
        ("rotation", "view_inventoryfinding"),
    ],
    COMPLIANCE: [
        ("rotation", "view_auditevent"),
        ("rotation", "export_auditevent"),
    ],
}


def roles_sync(apps: Any = None, roles: dict[str, list[tuple[str, str]]] | None = None) -> None:
    """Create the groups and set exactly their permissions (works inside migrations too)."""
    roles = ROLE_PERMISSIONS if roles is None else roles
    if apps is None:
        from django.apps import apps as global_apps

        apps = global_apps
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    for group_name, pairs in roles.items():
        group, _ = group_model.objects.get_or_create(name=group_name)
        permissions = []
        for app_label, codename in pairs:
            permission = permission_model.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            if permission is None:
                raise LookupError(f"permission {app_label}.{codename} does not exist")
            permissions.append(permission)
        group.permissions.set(permissions)
