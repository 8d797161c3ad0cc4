"""Settings for partnerportal, read from the environment (and `.env`) with django-environ.

Development runs with no configuration at all (SQLite, the django-q2 ORM broker, a fixed
development encryption key). With DEBUG=False the real keys are required.
"""

from datetime import date, timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)

# Development-only values: public in this repository, so never valid with DEBUG=False.
DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production"  # noqa: S105
DEV_FIELD_ENCRYPTION_KEYS = "dev:ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE="
DEV_AUDIT_FINGERPRINT_KEY = "dev-only-audit-fingerprint-key"
DEV_AUDIT_CHAIN_KEY = "dev-only-audit-chain-key-do-not-use-in-production"
# HMAC keys shorter than this are refused in production (the output size of SHA-256).
MIN_HMAC_KEY_BYTES = 32

SECRET_KEY = env.str("SECRET_KEY", default="")
FIELD_ENCRYPTION_KEYS = env.str("FIELD_ENCRYPTION_KEYS", default="")
AUDIT_FINGERPRINT_KEY = env.str("AUDIT_FINGERPRINT_KEY", default="")
# The audit chain's HMAC key (rotation.audit.chain) and where signed checkpoints of its head
# go (rotation.audit.anchors); both outside the database.
AUDIT_CHAIN_KEY = env.str("AUDIT_CHAIN_KEY", default="")
AUDIT_ANCHOR_URL = env.str("AUDIT_ANCHOR_URL", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])
# The class that makes and retires credentials (see rotation.providers). Development uses
# the demo provider, which production refuses: it pushes random values that open nothing.
DEMO_CREDENTIAL_PROVIDER = "rotation.devtools.demo_provider.RandomCredentialProvider"
ROTATION_CREDENTIAL_PROVIDER = env.str("ROTATION_CREDENTIAL_PROVIDER", default="")
# Product id -> provider dotted path, for products whose credentials another provider makes.
ROTATION_PROVIDERS: dict[str, str] = env.json("ROTATION_PROVIDERS", default={})

if DEBUG:
    SECRET_KEY = SECRET_KEY or DEV_SECRET_KEY
    FIELD_ENCRYPTION_KEYS = FIELD_ENCRYPTION_KEYS or DEV_FIELD_ENCRYPTION_KEYS
    AUDIT_FINGERPRINT_KEY = AUDIT_FINGERPRINT_KEY or DEV_AUDIT_FINGERPRINT_KEY
    AUDIT_CHAIN_KEY = AUDIT_CHAIN_KEY or DEV_AUDIT_CHAIN_KEY
    AUDIT_ANCHOR_URL = AUDIT_ANCHOR_URL or f"file://{BASE_DIR / 'var' / 'audit-anchor.jsonl'}"
    ALLOWED_HOSTS = ALLOWED_HOSTS or ["127.0.0.1", "localhost", "[::1]", "testserver"]
    ROTATION_CREDENTIAL_PROVIDER = ROTATION_CREDENTIAL_PROVIDER or DEMO_CREDENTIAL_PROVIDER
else:
    # The ring is parsed here so a bad one stops start-up, not the first decryption.
    from rotation.crypto import key_ring_problems, parse_key_ring

    # Every problem at once, so one failed start tells the operator everything to fix.
    problems = [
        f"{name} must be set"
        for name, value in [
            ("SECRET_KEY", SECRET_KEY),
            ("FIELD_ENCRYPTION_KEYS", FIELD_ENCRYPTION_KEYS),
            ("AUDIT_FINGERPRINT_KEY", AUDIT_FINGERPRINT_KEY),
            ("AUDIT_CHAIN_KEY", AUDIT_CHAIN_KEY),
            ("AUDIT_ANCHOR_URL", AUDIT_ANCHOR_URL),
            ("ALLOWED_HOSTS", ALLOWED_HOSTS),
            ("ROTATION_CREDENTIAL_PROVIDER", ROTATION_CREDENTIAL_PROVIDER),
        ]
        if not value
    ]
    problems += [
        f"{name} holds the development-only value published in this repository"
        for name, value, dev_value in [
            ("SECRET_KEY", SECRET_KEY, DEV_SECRET_KEY),
            ("AUDIT_FINGERPRINT_KEY", AUDIT_FINGERPRINT_KEY, DEV_AUDIT_FINGERPRINT_KEY),
            ("AUDIT_CHAIN_KEY", AUDIT_CHAIN_KEY, DEV_AUDIT_CHAIN_KEY),
        ]
        if value == dev_value
    ]
    if FIELD_ENCRYPTION_KEYS:
        # The development key's bytes are refused under any id, first or not.
        problems += [
            problem
            if problem.startswith("FIELD_ENCRYPTION_KEYS")
            else f"FIELD_ENCRYPTION_KEYS: {problem}"
            for problem in key_ring_problems(
                FIELD_ENCRYPTION_KEYS, forbidden=parse_key_ring(DEV_FIELD_ENCRYPTION_KEYS)
            )
        ]
    problems += [
        f"{name} must be at least {MIN_HMAC_KEY_BYTES} bytes (it has {len(value.encode())})"
        for name, value in [
            ("AUDIT_FINGERPRINT_KEY", AUDIT_FINGERPRINT_KEY),
            ("AUDIT_CHAIN_KEY", AUDIT_CHAIN_KEY),
        ]
        if value and len(value.encode()) < MIN_HMAC_KEY_BYTES
    ]
    if ROTATION_CREDENTIAL_PROVIDER.startswith("rotation.devtools."):
        problems.append(
            "ROTATION_CREDENTIAL_PROVIDER names the demo provider, which only makes random "
            "values: name the provider of your backend"
        )
    problems += [
        f"ROTATION_PROVIDERS[{product!r}] names the demo provider: name the provider of "
        "your backend"
        for product, path in ROTATION_PROVIDERS.items()
        if str(path).startswith("rotation.devtools.")
    ]
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
    "csp",
    "axes",
    "rotation",
]
if DEBUG:
    # The stand-in, demo data and the demo provider; never loaded in production.
    INSTALLED_APPS.append("rotation.devtools")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
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
# PostgreSQL: the webhook endpoint's statements are prepared (rotation.prepared_statements).
# Off behind a pooler in transaction mode that cannot keep prepared statements.
DATABASE_PREPARED_STATEMENTS = env.bool("DATABASE_PREPARED_STATEMENTS", default=True)

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

# Staff sessions: a working day by default, and never past the browser's closing.
SESSION_COOKIE_AGE = int(env.float("SESSION_LIFETIME_HOURS", default=8) * 3600)
if SESSION_COOKIE_AGE <= 0:
    raise ImproperlyConfigured("SESSION_LIFETIME_HOURS must be more than 0")
SESSION_EXPIRE_AT_BROWSER_CLOSE = True

# Content-Security-Policy (django-csp 4): our own origin only, no inline script or style,
# no plugins, no framing. The admin's and our JavaScript are static files.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Sign-in throttling (django-axes): LOGIN_FAILURE_LIMIT failed sign-ins for one user name
# from one IP address, each within LOGIN_LOCKOUT_MINUTES of the previous one, lock that
# combination out until LOGIN_LOCKOUT_MINUTES pass without a failure or a superuser deletes
# the lock in the admin. One audit event per lockout (rotation.audit.signals).
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_LOCKOUT_MINUTES = env.float("LOGIN_LOCKOUT_MINUTES", default=15)
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(minutes=LOGIN_LOCKOUT_MINUTES)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# The client IP the audit trail records (behind trusted proxies too).
AXES_CLIENT_IP_CALLABLE = "rotation.audit.signals.client_ip"
AXES_RESET_ON_SUCCESS = True
# Attempts made while locked out change nothing: the lock does not grow, nor does any table.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_DISABLE_ACCESS_LOG = True  # sign-ins are in the audit trail
AXES_ENABLE_ADMIN = False  # rotation.admin.lockouts registers its own, superusers only
AXES_LOCKOUT_TEMPLATE = "admin/locked_out.html"

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
# Request Secrets Rotation (rotation.partner_api): Vercel's OIDC token is checked against
# these; the endpoint refuses every call while VERCEL_CLIENT_ID (the audience) is empty.
VERCEL_CLIENT_ID = env.str("VERCEL_CLIENT_ID", default="")
VERCEL_OIDC_ISSUER = env.str("VERCEL_OIDC_ISSUER", default="https://marketplace.vercel.com")
VERCEL_OIDC_JWKS_URL = env.str(
    "VERCEL_OIDC_JWKS_URL", default="https://marketplace.vercel.com/.well-known/jwks"
)
# Seconds the key set is cached, and the least time between two refetches for unknown keys.
VERCEL_OIDC_JWKS_CACHE_SECONDS = env.float("VERCEL_OIDC_JWKS_CACHE_SECONDS", default=300)
VERCEL_OIDC_JWKS_REFETCH_SECONDS = env.float("VERCEL_OIDC_JWKS_REFETCH_SECONDS", default=30)
# The warning shown on a resource in the customer's Vercel dashboard after a push
# (rotation.redeploy.notification): templates with {variables}, {resource}, {resource_id},
# {installation_id} and {deadline}. An empty href sends no link.
VERCEL_NOTIFICATION_TITLE = env.str(
    "VERCEL_NOTIFICATION_TITLE", default="New credentials are in place: redeploy to use them"
)
VERCEL_NOTIFICATION_MESSAGE = env.str(
    "VERCEL_NOTIFICATION_MESSAGE",
    default=(
        "{variables} of {resource} now hold new credentials. Redeploy the projects that use "
        "this resource so they pick them up; the old credentials stop working after that."
    ),
)
VERCEL_NOTIFICATION_HREF = env.str("VERCEL_NOTIFICATION_HREF", default="")

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

# Credential providers (rotation.providers): the partner's PostgreSQL cluster (a role with
# CREATEROLE), Redis (a user allowed to run ACL), or its own control plane over HTTP.
POSTGRES_PROVIDER_ADMIN_URL = env.str("POSTGRES_PROVIDER_ADMIN_URL", default="")
POSTGRES_PROVIDER_PUBLIC_HOST = env.str("POSTGRES_PROVIDER_PUBLIC_HOST", default="")
POSTGRES_PROVIDER_PUBLIC_PORT = env.int("POSTGRES_PROVIDER_PUBLIC_PORT", default=0)
POSTGRES_PROVIDER_PUBLIC_SSLMODE = env.str("POSTGRES_PROVIDER_PUBLIC_SSLMODE", default="require")
REDIS_PROVIDER_ADMIN_URL = env.str("REDIS_PROVIDER_ADMIN_URL", default="")
CREDENTIALS_API_URL = env.str("CREDENTIALS_API_URL", default="")
CREDENTIALS_API_SECRET = env.str("CREDENTIALS_API_SECRET", default="")
CREDENTIALS_API_CONNECT_TIMEOUT = env.float("CREDENTIALS_API_CONNECT_TIMEOUT", default=3.05)
CREDENTIALS_API_READ_TIMEOUT = env.float("CREDENTIALS_API_READ_TIMEOUT", default=10.0)
# Rotation policies: the default maximum credential age (0 = no policy) and how many
# rotations one scheduled run requests at most, so a backlog does not flood Vercel.
ROTATION_MAX_AGE_DAYS = env.int("ROTATION_MAX_AGE_DAYS", default=0)
ROTATION_POLICY_MAX_PER_RUN = env.int("ROTATION_POLICY_MAX_PER_RUN", default=50)

# django-q2: ORM broker by default; REDIS_URL switches to Redis.
REDIS_URL = env.str("REDIS_URL", default="")
# Successful task results kept (0: all, -1: none). The redeploy tick prunes them
# (rotation.services.task_results): django-q2's own pruning re-reads every kept result on
# each task it saves.
TASK_RESULTS_KEPT = env.int("Q_SAVE_LIMIT", default=1000)
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
    "save_limit": min(TASK_RESULTS_KEPT, 0),  # 0: django-q2 saves and never prunes
    "catch_up": False,
    "label": "Background tasks",
    "poll": env.float("Q_POLL", default=0.2),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
    Q_CLUSTER["broker_class"] = "partnerportal.broker.FifoOrmBroker"
# A rotation untouched in preparing/pushing for longer than a task may live lost its worker;
# the sweeper re-queues it.
ROTATION_STUCK_AFTER_SECONDS = env.float(
    "ROTATION_STUCK_AFTER_SECONDS", default=Q_CLUSTER["timeout"] + 60
)

# Behind reverse proxies, and only when configured: otherwise any client could claim https or
# an address. TRUSTED_PROXY_COUNT proxies append to X-Forwarded-For (rotation.audit.origin);
# SECURE_PROXY_SSL_HEADER names the header the nearest proxy sets to `https` (and strips).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="")
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")

# Production hardening; `manage.py check --deploy` is clean with DEBUG=False.
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

# Error pages and mails hide sensitive locals and settings even with DEBUG on.
DEFAULT_EXCEPTION_REPORTER_FILTER = "rotation.error_reports.SecretHidingReporterFilter"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # urllib3 logs full URLs at DEBUG; keep it quiet.
        "urllib3": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}
