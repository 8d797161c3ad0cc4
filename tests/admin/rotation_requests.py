"""Asking for rotations through the admin as staff do: log in, select resources, confirm."""

from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.http import HttpRequest

from rotation.models import RotationBatch
from tests.conftest import PASSWORD

CHANGELIST = "/admin/rotation/resource/"


def login(client, user):
    # django-axes checks every sign-in against its request.
    assert client.login(request=HttpRequest(), username=user.username, password=PASSWORD)
    return client


def action_post(ids, **extra):
    return {"action": "rotate_and_push", "index": "0", ACTION_CHECKBOX_NAME: ids, **extra}


def confirm_post(ids, **extra):
    data = {"action": "rotate_and_push", "post": "yes", ACTION_CHECKBOX_NAME: ids}
    data.update({"reason": "leaked in a log", "ticket": "SEC-1"}, **extra)
    return data


def request_batch(client, user, resources) -> RotationBatch:
    login(client, user).post(CHANGELIST, confirm_post([r.pk for r in resources]))
    return RotationBatch.objects.order_by("-pk").first()
