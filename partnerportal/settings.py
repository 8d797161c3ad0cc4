"""Settings for partnerportal, read from the environment (and `.env`) with django-environ.

Development runs with no configuration at all (SQLite, the django-q2 ORM broker, a fixed
development encryption key). With DEBUG=False the real keys are required.
"""

from datetime import date
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)

# Development-only values: public in this repository, so never valid with DEBUG=False.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105
DEV_FIELD_ENCRYPTION_KEYS = "dev:ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE="
DEV_AUDIT_FINGERPRINT_KEY = "dev-only-audit-fingerprint-key"

SECRET_KEY = env.str("SECRET_KEY", default="")
FIELD_ENCRYPTION_KEYS = env.str("FIELD_ENCRYPTION_KEYS", default="")
AUDIT_FINGERPRINT_KEY = env.str("AUDIT_FINGERPRINT_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
# The class that makes and retires credentials (see rotation.providers). Development uses
# the demo provider, which production refuses: it pushes random values that open nothing.
DEMO_CREDENTIAL_PROVIDER = "rotation.devtools.demo_provider.RandomCredentialProvider"
ROTATION_CREDENTIAL_PROVIDER = env.str("ROTATION_CREDENTIAL_PROVIDER", default="")

if DEBUG:
    SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY
    FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or DEV_FIELD_ENCRYPTION_KEYS
    AUDIT_FINGERPRINT_KEY = AUDIT_FINGERPRINT_KEY or DEV_AUDIT_FINGERPRINT_KEY
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["127.0.0.1", "localhost", "[::1]", "testserver"]
    ROTATION_CREDENTIAL_PROVIDER = ROTATION_CREDENTIAL_PROVIDER or DEMO_CREDENTIAL_PROVIDER
else:
    # Every problem at once, so one failed start tells the operator everything to fix.
    problems = [
        f"{name} must be set"
        for name, value in [
            ("SECRET_KEY", SECRET_KEY),
            ("FIELD_ENCRYPTION_KEYS", FIELD_ENCRYPTION_KEYS),
            ("AUDIT_FINGERPRINT_KEY", AUDIT_FINGERPRINT_KEY),
            ("ALLOWED_HOSTS", ALLOWED_HOSTS),
            ("ROTATION_CREDENTIAL_PROVIDER", ROTATION_CREDENTIAL_PROVIDER),
        ]
        if not value
    ]
    problems += [
        f"{name} holds the development-only value published in this repository"
        for name, value, dev_value in [
            ("SECRET_KEY", SECRET_KEY, DEV_SECRET_KEY),
            ("FIELD_ENCRYPTION_KEYS", FIELD_ENCRYPTION_KEYS, DEV_FIELD_ENCRYPTION_KEYS),
            ("AUDIT_FINGERPRINT_KEY", AUDIT_FINGERPRINT_KEY, DEV_AUDIT_FINGERPRINT_KEY),
        ]
        if value == dev_value
    ]
    if ROTATION_CREDENTIAL_PROVIDER.startswith("rotation.devtools."):
        problems.append(
            "ROTATION_CREDENTIAL_PROVIDER names the demo provider, which only makes random "
            "values: name the provider of your backend"
        )
    if problems:
        raise ImproperlyConfigured(
            "DEBUG is off and the configuration is not fit for production:\n- "
            + "\n- ".join(problems)
        )

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_q",
    "rotation",
]
if DEBUG:
    # The stand-in, demo data and the demo provider; never loaded in production.
    INSTALLED_APPS.append("rotation.devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "partnerportal.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "partnerportal.wsgi.application"

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL and a busy timeout let the web server and a qcluster share the file.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")

LOGIN_URL = "admin:login"

# Email: console backend unless EMAIL_URL says otherwise.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="partnerportal@localhost")

# Vercel.
VERCEL_API_URL = env.str("VERCEL_API_URL", default="https://api.vercel.com")
VERCEL_CLIENT_SECRET = env.str("VERCEL_CLIENT_SECRET", default="")
VERCEL_CONNECT_TIMEOUT = env.float("VERCEL_CONNECT_TIMEOUT", default=3.05)
VERCEL_READ_TIMEOUT = env.float("VERCEL_READ_TIMEOUT", default=10.0)
# The deprecated Update Resource Secrets endpoint (rotation.vercel.endpoints): a push there
# answered 410/404 is tried once on the current endpoint, which the installation then keeps;
# from the sunset date (UTC, empty: none) every push goes through the current endpoint.
VERCEL_DEPRECATED_ENDPOINT_FALLBACK = env.bool("VERCEL_DEPRECATED_ENDPOINT_FALLBACK", default=True)
_sunset = env.str("VERCEL_DEPRECATED_ENDPOINT_SUNSET", default="").strip()
try:
    VERCEL_DEPRECATED_ENDPOINT_SUNSET = date.fromisoformat(_sunset) if _sunset else None
except ValueError:
    raise ImproperlyConfigured(
        f"VERCEL_DEPRECATED_ENDPOINT_SUNSET must be a date (YYYY-MM-DD), not {_sunset!r}"
    ) from None

# Redeploy tracking (rotation.redeploy): reminders, deadline, expiry of old credentials.
VERCEL_WEBHOOK_MAX_BYTES = env.int("VERCEL_WEBHOOK_MAX_BYTES", default=1_000_000)
# Stored webhook deliveries older than this are deleted by the redeploy tick, in batches.
WEBHOOK_EVENT_RETENTION_DAYS = env.float("WEBHOOK_EVENT_RETENTION_DAYS", default=30)
ROTATION_REMINDER_DAYS = [float(d) for d in env.list("ROTATION_REMINDER_DAYS", default=[1, 3, 7])]
ROTATION_REDEPLOY_GRACE_DAYS = env.float("ROTATION_REDEPLOY_GRACE_DAYS", default=14)
ROTATION_ESCALATION_HOURS_BEFORE_DEADLINE = env.float(
    "ROTATION_ESCALATION_HOURS_BEFORE_DEADLINE", default=48
)
# Empty: staff users holding rotation.confirm_redeploy (with an email address) are told.
ROTATION_ESCALATION_EMAILS = env.list("ROTATION_ESCALATION_EMAILS", default=[])
ROTATION_EXPIRE_ON_DEADLINE = env.bool("ROTATION_EXPIRE_ON_DEADLINE", default=False)
ROTATION_EXPIRE_SAFETY_DELAY_MINUTES = env.float("ROTATION_EXPIRE_SAFETY_DELAY_MINUTES", default=10)
ROTATION_EXPIRE_RETRY_MINUTES = env.float("ROTATION_EXPIRE_RETRY_MINUTES", default=5)
ROTATION_REMINDER_MAX_ATTEMPTS = env.int("ROTATION_REMINDER_MAX_ATTEMPTS", default=5)
# Deployment targets that count as a redeploy; empty means any target.
ROTATION_REDEPLOY_TARGETS = env.list("ROTATION_REDEPLOY_TARGETS", default=[])

# Rotate and push (rotation.services): bounded push attempts; waits up to
# ROTATION_PUSH_INLINE_WAIT_MAX seconds happen in the worker, longer ones via the sweeper.
ROTATION_PUSH_MAX_ATTEMPTS = env.int("ROTATION_PUSH_MAX_ATTEMPTS", default=8)
ROTATION_PUSH_INLINE_WAIT_MAX = env.float("ROTATION_PUSH_INLINE_WAIT_MAX", default=10.0)
ROTATION_PUSH_BACKOFF_BASE = env.float("ROTATION_PUSH_BACKOFF_BASE", default=0.5)
# PUTs in flight per worker (threads of a chunk task), and per installation's token within
# them; a 429 halves an installation's share for every worker (rotation.services.pace).
ROTATION_PUSH_CONCURRENCY = env.int("ROTATION_PUSH_CONCURRENCY", default=8)
ROTATION_PUSH_PER_INSTALLATION = env.int("ROTATION_PUSH_PER_INSTALLATION", default=8)

# django-q2: ORM broker by default; REDIS_URL switches to Redis.
REDIS_URL = env.str("REDIS_URL", default="")
Q_CLUSTER = {
    "name": env.str("Q_CLUSTER_NAME", default="partnerportal"),
    "workers": env.int("Q_WORKERS", default=2),
    # `retry` must exceed the longest time between a worker taking a task from the broker and
    # acknowledging it, or the broker hands the task out again while the first copy still runs.
    # That time is queue wait inside the cluster plus run time. `queue_limit` = workers caps
    # the prefetched tasks, so a fetched task waits at most one `timeout` for a free worker,
    # then runs at most one `timeout` (a chunk task stops starting pushes after timeout / 2,
    # see rotation.services.chunk_budget). Hence retry (660) > 2 x timeout (600) + a margin.
    "timeout": env.int("Q_TIMEOUT", default=300),
    "retry": env.int("Q_RETRY", default=660),
    "queue_limit": env.int("Q_QUEUE_LIMIT", default=env.int("Q_WORKERS", default=2)),
    "max_attempts": env.int("Q_MAX_ATTEMPTS", default=3),
    "ack_failures": True,
    "save_limit": env.int("Q_SAVE_LIMIT", default=1000),
    "catch_up": False,
    "label": "Background tasks",
    "poll": env.float("Q_POLL", default=0.2),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
# A rotation untouched in preparing/pushing for longer than a task may live lost its worker;
# the sweeper re-queues it.
ROTATION_STUCK_AFTER_SECONDS = env.float(
    "ROTATION_STUCK_AFTER_SECONDS", default=Q_CLUSTER["timeout"] + 60
)

# Production hardening; `manage.py check --deploy` is clean with DEBUG=False.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # urllib3 logs full URLs at DEBUG; keep it quiet.
        "urllib3": {"level": "WARNING"},
    },
}
