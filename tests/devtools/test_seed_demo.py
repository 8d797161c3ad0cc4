import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.http import HttpRequest

from rotation.models import CredentialVersion, Installation, Resource


def test_it_seeds_users_installations_and_resources_once(db, capsys):
    call_command("seed_demo")
    first = capsys.readouterr().out
    assert "support-demo-password" in first
    call_command("seed_demo")
    second = capsys.readouterr().out
    assert "passwords unchanged" in second
    assert "support-demo-password" not in second
    users = get_user_model().objects
    assert users.get(username="support").groups.get().name == "Support"
    assert users.get(username="compliance").groups.get().name == "Compliance"
    assert users.get(username="lead").has_perm("rotation.rollback_rotation")
    assert not users.get(username="support").has_perm("rotation.rollback_rotation")
    assert users.get(username="admin").is_superuser
    assert Installation.objects.count() == 3
    assert Installation.objects.filter(endpoint="deprecated").count() == 1
    assert Resource.objects.count() == 50
    assert set(Resource.objects.values_list("product", flat=True)) == {"postgres", "redis"}
    assert CredentialVersion.objects.filter(stage="current").count() == 50
    for installation in Installation.objects.all():
        assert installation.access_token() not in first


def test_demo_users_can_log_in(db, client):
    call_command("seed_demo")
    assert client.login(request=HttpRequest(), username="support", password="support-demo-password")
    assert client.get("/admin/rotation/resource/").status_code == 200


def test_it_refuses_to_run_in_production(settings, db):
    settings.SECRET_KEY = "a-real-production-secret-key"
    with pytest.raises(CommandError, match="looks like a real deployment"):
        call_command("seed_demo")
