import os
import subprocess
import sys
from pathlib import Path

from rotation import crypto

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DEBUG": "False",
    "SECRET_KEY": "x" * 60 + "production-like-secret-key-for-tests",
    "FIELD_ENCRYPTION_KEYS": crypto.generate_key("prod1"),
    "AUDIT_FINGERPRINT_KEY": "fingerprint-key-for-tests-0123456789",
    "AUDIT_CHAIN_KEY": "chain-key-for-tests-0123456789-abcdef",
    "AUDIT_ANCHOR_URL": "file:///var/lib/partnerportal/audit-anchor.jsonl",
    "ALLOWED_HOSTS": "portal.example.com",
    "ROTATION_CREDENTIAL_PROVIDER": "tests.provider_doubles.PartnerBackendProvider",
}
DEMO_PROVIDER = "rotation.devtools.demo_provider.RandomCredentialProvider"


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and k != "DATABASE_URL"}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_names_every_missing_setting_at_once_when_debug_is_off():
    result = manage("check", DEBUG="False")
    assert result.returncode != 0
    for name in (
        "SECRET_KEY",
        "FIELD_ENCRYPTION_KEYS",
        "AUDIT_FINGERPRINT_KEY",
        "AUDIT_CHAIN_KEY",
        "AUDIT_ANCHOR_URL",
        "ALLOWED_HOSTS",
        "ROTATION_CREDENTIAL_PROVIDER",
    ):
        assert f"- {name} must be set" in result.stderr
    assert "Traceback" not in result.stderr


def test_it_refuses_development_keys_and_the_demo_provider_together():
    from django.conf import settings

    env = dict(
        PRODUCTION,
        FIELD_ENCRYPTION_KEYS=settings.DEV_FIELD_ENCRYPTION_KEYS,
        ROTATION_CREDENTIAL_PROVIDER=DEMO_PROVIDER,
    )
    result = manage("check", **env)
    assert result.returncode != 0
    assert (
        "- FIELD_ENCRYPTION_KEYS: key 'dev' is the development-only key published" in result.stderr
    )
    assert "- ROTATION_CREDENTIAL_PROVIDER names the demo provider" in result.stderr


def dev_key_under(key_id: str) -> str:
    from django.conf import settings

    return key_id + ":" + settings.DEV_FIELD_ENCRYPTION_KEYS.partition(":")[2]


def test_it_refuses_weak_keys_and_the_development_key_under_any_id_all_at_once():
    env = dict(
        PRODUCTION,
        FIELD_ENCRYPTION_KEYS=f"{crypto.generate_key('prod1')},prod2:"
        + dev_key_under("x").partition(":")[2],
        AUDIT_FINGERPRINT_KEY="a",
        AUDIT_CHAIN_KEY="b" * 31,
    )

    result = manage("check", **env)

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "- FIELD_ENCRYPTION_KEYS: key 'prod2' is the development-only key" in result.stderr
    assert "- AUDIT_FINGERPRINT_KEY must be at least 32 bytes (it has 1)" in result.stderr
    assert "- AUDIT_CHAIN_KEY must be at least 32 bytes (it has 31)" in result.stderr
    assert "ZGV2" not in result.stderr  # no key bytes in the message


def test_it_refuses_the_development_key_as_the_primary_key_under_another_id():
    result = manage("check", **dict(PRODUCTION, FIELD_ENCRYPTION_KEYS=dev_key_under("prod")))
    assert result.returncode != 0
    assert "- FIELD_ENCRYPTION_KEYS: key 'prod' is the development-only key" in result.stderr


def test_it_names_every_malformed_key_ring_entry_at_start_up():
    good = crypto.generate_key("k1")
    junk = good.replace("k1:", "k3:")[:12] + "*" + good[12:]
    ring = f"{good},garbage,k2:QUFB,{junk},{good}"

    result = manage("check", **dict(PRODUCTION, FIELD_ENCRYPTION_KEYS=ring))

    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "- FIELD_ENCRYPTION_KEYS entry 2 is not id:base64key" in result.stderr
    assert "- FIELD_ENCRYPTION_KEYS: key 'k2' must be 32 bytes, not 3" in result.stderr
    assert "- FIELD_ENCRYPTION_KEYS: key 'k3' is not base64" in result.stderr
    assert "- FIELD_ENCRYPTION_KEYS: key id 'k1' appears twice" in result.stderr
    assert good.partition(":")[2] not in result.stderr


def test_it_refuses_a_provider_that_does_not_import_or_is_no_provider():
    result = manage("check", **dict(PRODUCTION, ROTATION_CREDENTIAL_PROVIDER="tests.nowhere.X"))
    assert result.returncode != 0
    assert "rotation.E001" in result.stderr and "ROTATION_CREDENTIAL_PROVIDER" in result.stderr
    result = manage(
        "check",
        **dict(PRODUCTION, ROTATION_CREDENTIAL_PROVIDER="tests.provider_doubles.NotAProvider"),
    )
    assert result.returncode != 0
    assert "rotation.E002" in result.stderr and "create, expire" in result.stderr


def test_it_leaves_development_tools_out_of_production():
    result = manage("fake_vercel", "--help", **PRODUCTION)
    assert result.returncode != 0
    assert "Unknown command: 'fake_vercel'" in result.stderr
    assert "Unknown command: 'seed_demo'" in manage("seed_demo", **PRODUCTION).stderr
    code = "import sys; print(sorted(m for m in sys.modules if 'devtools' in m))"
    result = manage("shell", "--no-imports", "-c", code, **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_it_uses_the_demo_provider_by_default_in_development():
    code = "from django.conf import settings; print(settings.ROTATION_CREDENTIAL_PROVIDER)"
    assert manage("shell", "--no-imports", "-c", code).stdout.strip() == DEMO_PROVIDER


def test_check_deploy_is_clean_with_a_production_environment():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_redis_url_selects_the_redis_broker():
    code = (
        "from django.conf import settings; "
        "print(settings.Q_CLUSTER.get('redis'), 'orm' in settings.Q_CLUSTER)"
    )
    result = manage("shell", "--no-imports", "-c", code, REDIS_URL="redis://127.0.0.1:6379/5")
    assert result.stdout.split() == ["redis://127.0.0.1:6379/5", "False"]
    result = manage("shell", "--no-imports", "-c", code)
    assert result.stdout.split() == ["None", "True"]


def test_database_url_selects_the_database():
    code = "from django.db import connection; print(connection.vendor)"
    result = manage(
        "shell", "--no-imports", "-c", code, DATABASE_URL="postgres://postgres@127.0.0.1:5432/test"
    )
    assert result.stdout.strip() == "postgresql"
    assert manage("shell", "--no-imports", "-c", code).stdout.strip() == "sqlite"


def test_it_documents_every_setting_in_the_readme_and_env_example():
    import re

    source = (ROOT / "partnerportal" / "settings.py").read_text()
    names = set(re.findall(r'env\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert {"ROTATION_STUCK_AFTER_SECONDS", "ROTATION_CREDENTIAL_PROVIDER", "Q_POLL"} <= names
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / ".env.example").read_text()
    assert sorted(name for name in names if f"`{name}`" not in readme) == []
    assert sorted(name for name in names if f"# {name}=" not in example) == []


def test_it_refuses_a_sunset_that_is_not_a_date():
    result = manage("check", VERCEL_DEPRECATED_ENDPOINT_SUNSET="next tuesday")
    assert result.returncode != 0
    assert (
        "VERCEL_DEPRECATED_ENDPOINT_SUNSET must be a date (YYYY-MM-DD), not 'next tuesday'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert manage("check", VERCEL_DEPRECATED_ENDPOINT_SUNSET="2027-04-01").returncode == 0


def test_it_trusts_proxy_headers_only_when_configured():
    code = (
        "from django.conf import settings; "
        "print(settings.SECURE_PROXY_SSL_HEADER, '|', settings.TRUSTED_PROXY_COUNT)"
    )
    assert manage("shell", "--no-imports", "-c", code, **PRODUCTION).stdout.split() == [
        "None",
        "|",
        "0",
    ]
    configured = dict(
        PRODUCTION, SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", TRUSTED_PROXY_COUNT="2"
    )
    result = manage("shell", "--no-imports", "-c", code, **configured)
    assert result.stdout.strip() == "('HTTP_X_FORWARDED_PROTO', 'https') | 2"
    result = manage("check", "--deploy", "--fail-level", "WARNING", **configured)
    assert result.returncode == 0, result.stderr


def test_a_client_cannot_claim_https_when_no_proxy_header_is_configured(rf, settings):
    assert settings.SECURE_PROXY_SSL_HEADER is None

    assert not rf.get("/", HTTP_X_FORWARDED_PROTO="https").is_secure()


def test_the_staff_session_lifetime_comes_from_session_lifetime_hours():
    code = (
        "from django.conf import settings; "
        "print(settings.SESSION_COOKIE_AGE, settings.SESSION_EXPIRE_AT_BROWSER_CLOSE)"
    )
    assert manage("shell", "--no-imports", "-c", code).stdout.split() == ["28800", "True"]
    result = manage("shell", "--no-imports", "-c", code, SESSION_LIFETIME_HOURS="1.5")
    assert result.stdout.split() == ["5400", "True"]
    result = manage("check", SESSION_LIFETIME_HOURS="0")
    assert result.returncode != 0
    assert "SESSION_LIFETIME_HOURS must be more than 0" in result.stderr
