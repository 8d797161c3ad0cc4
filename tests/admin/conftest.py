"""Fixtures of the rotation admin tests: a view-only persona and resources to rotate."""

import pytest
from django.contrib.auth.models import Permission

from rotation.models import Resource
from tests.conftest import make_installation, make_user


@pytest.fixture
def viewer(db):
    """Staff who may look at resources but not rotate them."""
    user = make_user("victor")
    user.user_permissions.add(
        Permission.objects.get(codename="view_resource"),
        Permission.objects.get(codename="view_rotationbatch"),
        Permission.objects.get(codename="view_rotation"),
    )
    return user


@pytest.fixture
def resources(installation):
    make_installation("icfg_test2", resources=2)
    return list(Resource.objects.order_by("pk"))
