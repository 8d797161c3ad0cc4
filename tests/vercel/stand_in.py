"""The installation the stand-in knows in these tests, and pushing secrets to it."""

import pytest

from rotation import vercel
from rotation.vercel import VercelError

INSTALLATION = "icfg_client1"
TOKEN = "vci_client_token_abcdef123456"
RESOURCE = "res_client1"
PRODUCT = "postgres"
VALUE = "postgres://app:s3cr3t-value-0001@db.example.com/app"
PREVIEW_VALUE = "postgres://app:preview-secret-0002@db.example.com/app"


def push(**overrides):
    arguments = {
        "installation_id": INSTALLATION,
        "resource_id": RESOURCE,
        "token": TOKEN,
        "secrets": [{"name": "DATABASE_URL", "value": VALUE}],
    }
    arguments.update(overrides)
    return vercel.update_resource_secrets(**arguments)


def push_error(**overrides) -> VercelError:
    with pytest.raises(VercelError) as caught:
        push(**overrides)
    return caught.value
