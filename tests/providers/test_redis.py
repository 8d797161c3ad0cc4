"""RedisAclProvider against the real Redis at 127.0.0.1:6379 (database 13, namespaced users).
Redis checks passwords, so "logs in" here is a real AUTH."""

import logging
import secrets

import pytest
import redis

from rotation.models import CredentialVersion
from rotation.providers.redis import RECORD_KEY, RedisAclProvider
from rotation.providers.values import secret_value
from tests.conftest import make_installation

DB = 13
ADMIN_URL = f"redis://127.0.0.1:6379/{DB}"


@pytest.fixture
def acl_user(settings):
    settings.REDIS_PROVIDER_ADMIN_URL = ADMIN_URL
    user = f"pp_prov_{secrets.token_hex(3)}"
    yield user
    admin = redis.Redis.from_url(ADMIN_URL, decode_responses=True)
    admin.acl_deluser(user)
    admin.delete(RECORD_KEY.format(user=user))
    for key in admin.scan_iter(match=f"{user}:*"):
        admin.delete(key)
    admin.close()


@pytest.fixture
def kv_resource(db, acl_user):
    resource = make_installation("icfg_kv", product="kv").resources.get()
    resource.metadata = {"acl_user": acl_user, "keys": f"{acl_user}:*", "db": DB}
    resource.secret_template = [
        {"name": name, "prefix": "", "environments": ["production"]}
        for name in ("KV_URL", "REDIS_PASSWORD", "REDIS_USERNAME")
    ]
    resource.save()
    return resource


def login(made):
    client = redis.Redis.from_url(
        secret_value(made, "KV_URL"), decode_responses=True, single_connection_client=True
    )
    client.ping()
    return client


def passwords(user):
    admin = redis.Redis.from_url(ADMIN_URL, decode_responses=True)
    try:
        return admin.acl_getuser(user)["passwords"]
    finally:
        admin.close()


def version_of(resource, rotation_id, made):
    version = CredentialVersion(resource=resource, rotation_id=rotation_id, stage="previous")
    version.seal(made)
    return version


def test_both_passwords_work_during_the_overlap_and_reach_the_same_data(
    kv_resource, acl_user, caplog
):
    caplog.set_level(logging.DEBUG)
    provider = RedisAclProvider()
    old = provider.create(resource=kv_resource, rotation_id=1)
    old_client = login(old)
    old_client.set(f"{acl_user}:cart", "3 items")
    new = provider.create(resource=kv_resource, rotation_id=2)
    new_client = login(new)
    assert new_client.get(f"{acl_user}:cart") == "3 items"
    new_client.set(f"{acl_user}:cart", "4 items")
    assert old_client.get(f"{acl_user}:cart") == "4 items"
    with pytest.raises(redis.exceptions.NoPermissionError):
        new_client.set("someone-else:key", "x")  # the key pattern holds
    assert secret_value(new, "REDIS_USERNAME") == acl_user
    assert len(passwords(acl_user)) == 2
    for made in (old, new):
        assert secret_value(made, "REDIS_PASSWORD") not in caplog.text
    old_client.close()
    new_client.close()


def test_after_expiry_the_old_password_fails_and_its_sessions_are_gone(kv_resource, acl_user):
    provider = RedisAclProvider()
    old = provider.create(resource=kv_resource, rotation_id=1)
    new = provider.create(resource=kv_resource, rotation_id=2)
    old_session = login(old)

    provider.expire(resource=kv_resource, version=version_of(kv_resource, 1, old))

    admin = redis.Redis.from_url(ADMIN_URL, decode_responses=True)
    assert [c for c in admin.client_list() if c["user"] == acl_user] == []  # sessions gone
    admin.close()
    with pytest.raises(redis.exceptions.ConnectionError):
        old_session.ping()  # its session was closed (AuthenticationError if it reconnects)
    with pytest.raises(redis.exceptions.AuthenticationError):
        login(old)
    login(new).close()
    assert len(passwords(acl_user)) == 1
    # Idempotent: expiring again changes nothing and does not fail.
    provider.expire(resource=kv_resource, version=version_of(kv_resource, 1, old))
    login(new).close()


def test_ten_rotations_keep_the_data_and_at_most_two_passwords(kv_resource, acl_user):
    provider = RedisAclProvider()
    made = {}
    for rotation_id in range(1, 11):
        made[rotation_id] = provider.create(resource=kv_resource, rotation_id=rotation_id)
        if rotation_id - 2 in made:
            gone = rotation_id - 2
            provider.expire(resource=kv_resource, version=version_of(kv_resource, gone, made[gone]))
        client = login(made[rotation_id])
        client.rpush(f"{acl_user}:log", rotation_id)
        client.close()
        assert len(passwords(acl_user)) <= 2
    client = login(made[10])
    assert client.lrange(f"{acl_user}:log", 0, -1) == [str(n) for n in range(1, 11)]
    client.close()
    login(made[9]).close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        login(made[8])


def test_a_retry_of_the_same_rotation_replaces_the_lost_attempts_password(kv_resource, acl_user):
    provider = RedisAclProvider()
    current = provider.create(resource=kv_resource, rotation_id=1)
    lost = provider.create(resource=kv_resource, rotation_id=2)  # the worker died after this
    retried = provider.create(resource=kv_resource, rotation_id=2)
    assert len(passwords(acl_user)) == 2
    login(current).close()
    login(retried).close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        login(lost)


def test_connection_failures_never_show_the_admin_password(settings, kv_resource):
    from rotation.providers import CredentialProviderError

    settings.REDIS_PROVIDER_ADMIN_URL = "redis://rotator:s3cret-admin-pw@127.0.0.1:9/13"
    with pytest.raises(CredentialProviderError) as failed:
        RedisAclProvider().create(resource=kv_resource, rotation_id=1)
    assert "s3cret-admin-pw" not in str(failed.value)
