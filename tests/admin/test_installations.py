import pytest
from django.urls import reverse

from rotation.models import AuditEvent, CredentialVersion, Installation
from tests.conftest import PASSWORD, make_installation

TOKEN = "vci_admin_page_token_51d2"
SECRET = "pg-secret-value-0f9e8d"


@pytest.fixture
def data(db):
    installation = make_installation("icfg_adm", token=TOKEN, resources=3)
    resource = installation.resources.first()
    version = CredentialVersion(resource=resource, stage="current")
    version.seal([{"name": "PGPASSWORD", "value": SECRET}])
    version.save()
    return installation


def pages(installation):
    resource = installation.resources.first()
    return [
        reverse("admin:rotation_installation_changelist"),
        reverse("admin:rotation_installation_change", args=[installation.pk]),
        reverse("admin:rotation_resource_changelist"),
        reverse("admin:rotation_resource_change", args=[resource.pk]),
        reverse("admin:rotation_resource_changelist") + "?q=icfg_adm",
    ]


def test_it_never_shows_the_token_or_a_secret_value(client, root, data):
    client.force_login(root)
    for url in pages(data):
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        assert TOKEN not in body, url
        assert SECRET not in body, url
    change = client.get(reverse("admin:rotation_installation_change", args=[data.pk]))
    assert "under key <code>dev</code>" in change.content.decode()


def test_support_can_view_but_not_change(client, alice, data):
    client.force_login(alice)
    for url in pages(data):
        assert client.get(url).status_code == 200, url
    response = client.post(
        reverse("admin:rotation_installation_change", args=[data.pk]),
        {"vercel_id": "icfg_adm", "name": "hijack", "endpoint": "current", "status": "active"},
    )
    assert response.status_code == 403
    assert Installation.objects.get(pk=data.pk).name != "hijack"


def test_compliance_and_plain_staff_cannot_see_resources(client, carol, dave, data):
    for user in (carol, dave):
        client.force_login(user)
        assert client.get(pages(data)[2]).status_code == 403


def test_anonymous_is_sent_to_login(client, data):
    response = client.get(pages(data)[0])
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_replacing_the_token_stores_it_encrypted_and_audits(client, root, data):
    client.force_login(root)
    response = client.post(
        reverse("admin:rotation_installation_change", args=[data.pk]),
        {
            "vercel_id": "icfg_adm",
            "name": "Team",
            "team_id": "team_x",
            "contact_email": "ops@example.com",
            "endpoint": "deprecated",
            "status": "active",
            "new_access_token": "vci_replaced_token_77",
            "_save": "Save",
        },
        REMOTE_ADDR="203.0.113.9",
    )
    assert response.status_code == 302
    installation = Installation.objects.get(pk=data.pk)
    assert installation.access_token() == "vci_replaced_token_77"
    assert installation.endpoint == "deprecated"
    event = AuditEvent.objects.get(action="installation.token_replaced")
    assert event.actor_username == "root"
    assert event.source_ip == "203.0.113.9"
    assert event.installation_ref == "icfg_adm"
    assert "vci_replaced_token_77" not in str(event.details)
    page = client.get(reverse("admin:rotation_installation_change", args=[data.pk]))
    assert "vci_replaced_token_77" not in page.content.decode()


def test_an_empty_token_field_keeps_the_stored_token(client, root, data):
    client.force_login(root)
    client.post(
        reverse("admin:rotation_installation_change", args=[data.pk]),
        {"vercel_id": "icfg_adm", "name": "Renamed", "endpoint": "current", "status": "active"},
    )
    installation = Installation.objects.get(pk=data.pk)
    assert installation.name == "Renamed"
    assert installation.access_token() == TOKEN


def test_a_new_installation_needs_a_token(client, root, db):
    client.force_login(root)
    response = client.post(
        reverse("admin:rotation_installation_add"),
        {"vercel_id": "icfg_new", "name": "New", "endpoint": "current", "status": "active"},
    )
    assert response.status_code == 200
    assert "A new installation needs its access token." in response.content.decode()
    assert not Installation.objects.filter(vercel_id="icfg_new").exists()


def test_the_login_page_works_for_demo_style_users(client, alice):
    response = client.post(
        reverse("admin:login"), {"username": "alice", "password": PASSWORD, "next": "/admin/"}
    )
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("new_access_token", "vci_a\nb", "must be printable ASCII without spaces"),
        ("new_access_token", "vci_a b", "must be printable ASCII without spaces"),
        ("vercel_id", "icfg_\u202eadm", "is not a Vercel id"),
        ("team_id", "team\uff3fx", "is not a Vercel id"),
    ],
)
def test_the_installation_form_applies_the_import_rules(client, root, data, field, value, message):
    """Finding 8: the form took tokens with line breaks (they failed only at push time)."""
    client.force_login(root)
    before = bytes(Installation.objects.get(pk=data.pk).access_token_encrypted)
    post = {
        "vercel_id": "icfg_adm",
        "name": "Team",
        "team_id": "team_x",
        "endpoint": "current",
        "status": "active",
        "_save": "Save",
        field: value,
    }
    response = client.post(reverse("admin:rotation_installation_change", args=[data.pk]), post)
    assert response.status_code == 200
    assert message in response.content.decode()
    installation = Installation.objects.get(pk=data.pk)
    assert (installation.vercel_id, installation.team_id) == ("icfg_adm", "team_icfg_adm")
    assert bytes(installation.access_token_encrypted) == before
    assert "vci_a" not in response.content.decode()  # the refused token is not echoed
