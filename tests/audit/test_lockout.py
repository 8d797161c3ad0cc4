"""Sign-in throttling (django-axes): lockout per user name and IP, audited once, lifted by
a superuser in the admin."""

from axes.models import AccessAttempt
from django.urls import reverse

from rotation.audit import AuditAction
from rotation.models import AuditEvent
from tests.conftest import PASSWORD, raw_database_bytes

LOGIN = reverse("admin:login")
ATTACKER = "198.51.100.7"


def sign_in(client, username, password, ip=ATTACKER):
    return client.post(
        LOGIN, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip
    )


def signed_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_it_locks_out_after_five_failures_and_audits_the_lockout_once(client, dave):
    """Finding 3: fifteen wrong passwords then the right one signed in, each failure audited."""
    counts = []
    for _ in range(15):
        sign_in(client, "dave", "wrong-Passw0rd-9f2c")
        counts.append(AuditEvent.objects.count())
    response = sign_in(client, "dave", PASSWORD)
    assert response.status_code == 429
    assert b'id="locked-out"' in response.content
    assert not signed_in(client)
    # Five failures, then one lockout event; nothing more however long the attack goes on.
    assert counts[4] == counts[-1] == AuditEvent.objects.count()
    failed = AuditEvent.objects.filter(action=AuditAction.AUTH_LOGIN_FAILED)
    assert failed.count() == 5
    lockout = AuditEvent.objects.get(action=AuditAction.AUTH_LOCKED_OUT)
    assert (lockout.outcome, lockout.actor_username, lockout.source_ip) == (
        "denied",
        "dave",
        ATTACKER,
    )
    assert lockout.details["failures"] == lockout.details["failure_limit"] == 5
    # Attempts while locked out do not grow axes' own row either.
    attempt = AccessAttempt.objects.get()
    assert attempt.failures_since_start == 5
    # Neither password reaches a table (axes masks the password field of what it keeps).
    raw = raw_database_bytes()
    assert b"wrong-Passw0rd-9f2c" not in raw and PASSWORD.encode() not in raw
    # The lock is per user name and IP: dave, from his own address, still signs in.
    assert sign_in(client, "dave", PASSWORD, ip="192.0.2.10").status_code == 302
    assert signed_in(client)


def test_it_counts_unknown_user_names_and_fingerprints_them(client, db, settings):
    settings.AXES_FAILURE_LIMIT = settings.LOGIN_FAILURE_LIMIT = 2
    for _ in range(4):
        sign_in(client, "nobody-here", "x")
    lockout = AuditEvent.objects.get(action=AuditAction.AUTH_LOCKED_OUT)
    assert lockout.actor_username == ""
    assert lockout.details["username_fingerprint"].startswith("hmac-sha256:")
    assert AuditEvent.objects.filter(action=AuditAction.AUTH_LOGIN_FAILED).count() == 2


def test_it_lets_only_superusers_unlock_in_the_admin_audited(client, dave, alice, root):
    for _ in range(5):
        sign_in(client, "dave", "wrong password")
    attempt = AccessAttempt.objects.get()
    delete_url = reverse("admin:axes_accessattempt_delete", args=[attempt.pk])
    client.force_login(alice)
    assert client.get(reverse("admin:axes_accessattempt_changelist")).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    client.force_login(root)
    changelist = client.get(reverse("admin:axes_accessattempt_changelist"))
    assert changelist.status_code == 200
    assert b"dave" in changelist.content
    assert client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not AccessAttempt.objects.exists()
    unlocked = AuditEvent.objects.get(action=AuditAction.AUTH_UNLOCKED)
    assert unlocked.actor_username == "root"
    assert unlocked.details["username"] == "dave"
    client.logout()
    assert sign_in(client, "dave", PASSWORD).status_code == 302
