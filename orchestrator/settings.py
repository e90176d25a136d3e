"""Steward settings: one module, read from the environment.

Defaults serve a laptop demo (SQLite and a broker that needs no server). Set DATABASE_URL and
REDIS_URL to use PostgreSQL and Redis. With DEBUG off, a missing secret stops the start.
"""

import ipaddress
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("STEWARD_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str | None = None) -> str | None:
    """Return an environment variable, or its default."""
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    """Return an environment variable read as a boolean (1/true/yes/on)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    """Return an environment variable read as an integer."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from exc


def env_float(name: str, default: float) -> float:
    """Return an environment variable read as a float."""
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from exc


def env_list(name: str, default: list[str]) -> list[str]:
    """Return a comma-separated environment variable as a list."""
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str, dev_default: str | None = None) -> str | None:
    """Return a secret from NAME or the file named by NAME_FILE; refuse a default outside DEBUG."""
    value = os.environ.get(name)
    file_name = os.environ.get(f"{name}_FILE")
    if value is None and file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name} cannot be read: {exc}") from exc
    if value:
        return value
    if DEBUG:
        return dev_default
    raise ImproperlyConfigured(
        f"{name} is not set. With DEBUG off, set {name} or {name}_FILE (a file holding it)."
    )


def env_optional_secret(name: str) -> str | None:
    """Return a secret from NAME or NAME_FILE, or None; the app that needs it refuses later."""
    value = os.environ.get(name)
    file_name = os.environ.get(f"{name}_FILE")
    if value is None and file_name:
        try:
            value = Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={file_name} cannot be read: {exc}") from exc
    return value or None


def _port_open(host: str, port: int) -> bool:
    """Tell whether something listens on host:port (used to find local test services)."""
    try:
        with socket.create_connection((host, port), timeout=0.3):
            return True
    except OSError:
        return False


DEBUG = env_bool("DEBUG", default=True)
SECRET_KEY = env_secret("SECRET_KEY", dev_default="dev-insecure-steward-key-change-me")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# `make test` sets STEWARD_FIND_SERVICES so the suite uses local PostgreSQL and Redis when they run.
FIND_SERVICES = env_bool("STEWARD_FIND_SERVICES")
if FIND_SERVICES and "DATABASE_URL" not in os.environ and _port_open("127.0.0.1", 5432):
    os.environ["DATABASE_URL"] = f"postgres://{env_str('PGUSER', 'root')}@127.0.0.1:5432/steward"
if FIND_SERVICES and "REDIS_URL" not in os.environ and _port_open("127.0.0.1", 6379):
    os.environ["REDIS_URL"] = "redis://127.0.0.1:6379/0"

# pytest-xdist runs the suite in worker processes side by side (gw0, gw1, ...). pytest-django
# gives each its own test database; each also takes a Redis database of its own (the base one's
# number plus the worker's), since tests flush Redis and read the channel layer's groups.
# The processes a test starts inherit the environment, the derived URL with it, and the marker
# that keeps them from adding the offset a second time.
_TEST_WORKER = env_str("PYTEST_XDIST_WORKER")
if (
    _TEST_WORKER
    and os.environ.get("REDIS_URL")
    and os.environ.get("STEWARD_REDIS_OF_TEST_WORKER") != _TEST_WORKER
):
    _redis = urlsplit(os.environ["REDIS_URL"])
    _redis_db = int(_redis.path.strip("/") or 0) + int(_TEST_WORKER.removeprefix("gw"))
    os.environ["REDIS_URL"] = urlunsplit(_redis._replace(path=f"/{_redis_db}"))
    os.environ["STEWARD_REDIS_OF_TEST_WORKER"] = _TEST_WORKER

DATABASE_URL = env_str("DATABASE_URL")
# Seconds a connection is kept for the next request or task. orchestrator/asgi.py sets 0: under
# ASGI each request runs in a thread of its own, so a kept connection is never used again and
# stays open until its thread is collected (bench/api.py: 98 connections from one server at 10
# clients, then "too many clients"). Django: "When using ASGI, persistent connections should be
# disabled."
DB_CONN_MAX_AGE = env_int("STEWARD_DB_CONN_MAX_AGE", 60)
# Connections a process may hold in a psycopg pool (PostgreSQL only; 0: no pool). The ASGI server
# sets it (orchestrator/asgi.py): a request then takes a warm connection and gives it back at its
# end, where without a pool it paid for a new PostgreSQL backend every time (5-13 ms in
# bench/api.py, docs/benchmarks.md). A request waits up to STEWARD_DB_POOL_TIMEOUT seconds for
# one when all are taken, rather than fail on the server's max_connections. The pool checks a
# connection before lending it (CONN_HEALTH_CHECKS), so a restarted PostgreSQL costs no request.
DB_POOL_SIZE = env_int("STEWARD_DB_POOL", 0)
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=DB_CONN_MAX_AGE, conn_health_checks=True
        )
    }
    if DB_POOL_SIZE and DATABASES["default"]["ENGINE"].endswith("postgresql"):
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them; Django must not
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(2, DB_POOL_SIZE),
            "max_size": DB_POOL_SIZE,
            "timeout": env_int("STEWARD_DB_POOL_TIMEOUT", 10),
        }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "steward.sqlite3"),
            "OPTIONS": {
                "timeout": 30,
                # IMMEDIATE takes the write lock at BEGIN, so concurrent processes queue instead of
                # failing with "database is locked" when a reader upgrades to a writer.
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
if env_str("STEWARD_TEST_DB_NAME"):
    DATABASES["default"]["TEST"] = {"NAME": env_str("STEWARD_TEST_DB_NAME")}
IS_POSTGRES = DATABASES["default"]["ENGINE"].endswith(("postgresql", "postgis"))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "guardian",
    "simple_history",
    "django_htmx",
    "channels",
    "audit",
    "governance",
    "agents",
    "orchestrator",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "audit.timezones.ViewerTimeZoneMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "audit.middleware.AuditContextMiddleware",
]

AUTHENTICATION_BACKENDS = [
    "governance.backends.PrincipalBackend",  # ModelBackend, refusing every non-person principal
    "governance.backends.ObjectPermissionBackend",  # guardian's, in one query
]
# guardian looks for its own backend by name; ours extends it (governance/backends.py).
SILENCED_SYSTEM_CHECKS = ["guardian.W001"]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user object

ROOT_URLCONF = "orchestrator.urls"
ASGI_APPLICATION = "orchestrator.asgi.application"
WSGI_APPLICATION = None

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
                "orchestrator.navigation.navigation",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"

# The API (/api/v1/): bearer tokens (governance's, stored as keyed hashes) or a person's session
# with CSRF; no basic auth. Every error is problem+json; each token has its own request rate.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "governance.api.authentication.TokenScope",
    ],
    "DEFAULT_THROTTLE_CLASSES": ["governance.api.throttling.PerTokenThrottle"],
    # JSON only: any other body is 415, never half-parsed form data.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "EXCEPTION_HANDLER": "orchestrator.api.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "audit.api.pagination.CursorPagination",
    "PAGE_SIZE": 50,
}
STEWARD_API_RATE = env_str("STEWARD_API_RATE", "1200/min")
# How long an Idempotency-Key's response is replayed (seconds); after that the key is free again.
STEWARD_IDEMPOTENCY_TTL = env_int("STEWARD_IDEMPOTENCY_TTL", 24 * 3600)
# An in-flight Idempotency-Key older than this (seconds) was left by a crashed request.
STEWARD_IDEMPOTENCY_ABANDONED_AFTER = env_int("STEWARD_IDEMPOTENCY_ABANDONED_AFTER", 300)
# The key of API tokens' stored hashes; derived from SECRET_KEY when unset (rotating either
# invalidates every token).
STEWARD_TOKEN_HASH_KEY = env_optional_secret("STEWARD_TOKEN_HASH_KEY") or ""
# Email (approval notices): SMTP when EMAIL_HOST is set, else printed to the console (the demo).
EMAIL_HOST = env_str("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_optional_secret("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=True)
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
if env_str("EMAIL_FILE_PATH"):  # the file backend's directory (tests read what workers sent)
    EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Steward <steward@localhost>")
# Where people reach the web app: the links in emails start with it.
STEWARD_BASE_URL = env_str("STEWARD_BASE_URL", "http://localhost:8000")
SPECTACULAR_SETTINGS = {
    "TITLE": "Steward API",
    "DESCRIPTION": "Start and follow workflow runs, decide approvals, read agents and the audit "
    "trail. Authenticate with `Authorization: Bearer stw_...`; errors are RFC 9457 problems.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "audit.api.schema.declare_problems",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ApprovalStatusEnum": "governance.models.ApprovalStatus",
        "EscalationStatusEnum": "governance.models.EscalationStatus",
        "AgentStatusEnum": "agents.models.AgentStatus",
        "RunStatusEnum": "orchestrator.models.RunStatus",
        "StepStatusEnum": "orchestrator.models.StepStatus",
        "VersionStatusEnum": "orchestrator.models.VersionStatus",
        "WebhookEventTypeEnum": "governance.models.WebhookEventType",
    },
}

# Celery: PostgreSQL is the source of truth; a message only says "this step is ready".
REDIS_URL = env_str("REDIS_URL")
# The cache counts API request rates: in Redis when there is one, so every web process shares
# the count; in process memory on the embedded default (one web process).
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "steward",
            # One pool per process, not per thread: orchestrator/cache.py says why.
            "OPTIONS": {"pool_class": "orchestrator.cache.SharedConnectionPool"},
        }
    }
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or REDIS_URL or "filesystem://localhost/"
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "control_folder": str(BROKER_DIR / "control"),
        "polling_interval": 0.2,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# Keep database connections across tasks, as across web requests: CONN_MAX_AGE and the health
# check decide when one is closed (orchestrator/celery.py). Celery's default closes them all
# around every task.
CELERY_DB_REUSE_MAX = 2**31
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = env_str("STEWARD_QUEUE", "steward")
# Beat's housekeeping (the sweeper, the audit sequencer, SLA and retention sweeps) has a queue and
# a worker of its own, so that long steps never delay timers, lease take-back or sequencing.
STEWARD_CONTROL_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}-control"
CELERY_TASK_ROUTES = {
    name: {"queue": STEWARD_CONTROL_QUEUE}
    for name in (
        "orchestrator.sweep",
        "audit.sequence",
        "governance.sweep_overdue_approvals",
        "governance.prune_live_events",
        "agents.purge_memory",
        "orchestrator.purge_idempotency_keys",
        "orchestrator.prune_inbound_hooks",
    )
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "steward-sweeper": {
        "task": "orchestrator.sweep",
        "schedule": env_float("STEWARD_SWEEP_SECONDS", 2.0),
        "options": {"expires": 10},
    },
}

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL]},
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Live pages: a consumer re-reads the event table this often (the nudge through the layer only
# makes it prompt; the in-memory layer reaches its own process alone), and a beat task prunes
# events older than STEWARD_LIVE_KEEP_HOURS (a page disconnected longer reloads).
STEWARD_LIVE_POLL_SECONDS = env_float("STEWARD_LIVE_POLL_SECONDS", 2.0)
STEWARD_LIVE_KEEP_HOURS = env_float("STEWARD_LIVE_KEEP_HOURS", 24.0)
CELERY_BEAT_SCHEDULE["governance-live-event-pruning"] = {
    "task": "governance.prune_live_events",
    "schedule": env_float("STEWARD_LIVE_PRUNE_SECONDS", 600.0),
    "options": {"expires": 300},
}

# Engine tuning. Timers, leases and backoff live in the database; these only set their scale.
STEWARD_LEASE_SECONDS = env_float("STEWARD_LEASE_SECONDS", 30.0)
STEWARD_HEARTBEAT_SECONDS = env_float("STEWARD_HEARTBEAT_SECONDS", 10.0)
STEWARD_SWEEP_SECONDS = env_float("STEWARD_SWEEP_SECONDS", 2.0)
STEWARD_REPUBLISH_AFTER_SECONDS = env_float("STEWARD_REPUBLISH_AFTER_SECONDS", 15.0)
STEWARD_REPUBLISH_MAX_SECONDS = env_float("STEWARD_REPUBLISH_MAX_SECONDS", 300.0)
STEWARD_INLINE_STEPS = env_int("STEWARD_INLINE_STEPS", 1000)
# STEWARD_KPI_ROLLUPS=0 stops keeping the KPI rollups (docs/kpis.md) as runs move, for measuring
# their cost (bench/engine.py --kpi-ab); the KPI pages are then stale until `rebuild_kpis`.
STEWARD_KPI_ROLLUPS = env_bool("STEWARD_KPI_ROLLUPS", default=True)
# The approval rule (its slug) that says who approves new workflow versions (docs/workflows.md).
STEWARD_VERSION_APPROVAL_RULE = env_str("STEWARD_VERSION_APPROVAL_RULE", "workflow-versions")

# /metrics (docs/metrics.md) answers a bearer token or an address in the allowed networks (CIDR,
# the direct peer's address: no forwarded header is trusted); neither set refuses every scrape.
STEWARD_METRICS_TOKEN = env_optional_secret("STEWARD_METRICS_TOKEN") or ""
STEWARD_METRICS_ALLOWED_NETWORKS = env_list("STEWARD_METRICS_ALLOWED_NETWORKS", [])
for _network in STEWARD_METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"STEWARD_METRICS_ALLOWED_NETWORKS: {_exc}") from _exc

# STEWARD_LOG_FORMAT=json: one JSON object per line, with request id, run id and step id
# (audit/logs.py); anything else: plain text.
STEWARD_LOG_FORMAT = "json" if env_str("STEWARD_LOG_FORMAT", "plain") == "json" else "plain"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "audit.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": STEWARD_LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)

# Modules whose import registers tools (agents.tools.tool). Tests and deployments add their own.
STEWARD_TOOL_MODULES = [
    "agents.builtin_tools",
    "agents.demo_tools",
    *env_list("STEWARD_TOOL_MODULES", []),
]

# Provider API keys are encrypted at rest with this Fernet key (or several, comma-separated: the
# first encrypts, all decrypt). With DEBUG on and none set, agents generate a dev key under VAR_DIR;
# with DEBUG off, `manage.py check` (so migrate and the web server) refuses to start without it.
STEWARD_SECRETS_KEY = env_optional_secret("STEWARD_SECRETS_KEY")

# Approval SLAs: a beat task escalates (or expires) every pending request whose SLA passed, as a
# safety net behind each approval step's own timer and for requests opened outside a run.
CELERY_BEAT_SCHEDULE["governance-overdue-approvals"] = {
    "task": "governance.sweep_overdue_approvals",
    "schedule": env_float("STEWARD_APPROVAL_SWEEP_SECONDS", 30.0),
    "options": {"expires": 60},
}

# Shared memory retention: a beat task purges expired entries (legal holds excepted).
CELERY_BEAT_SCHEDULE["agents-memory-retention"] = {
    "task": "agents.purge_memory",
    "schedule": env_float("STEWARD_MEMORY_PURGE_SECONDS", 600.0),
    "options": {"expires": 300},
}

# Notifications: a beat task retries email and webhook deliveries that are due (a delivery lost
# after its commit included). It makes network calls, so it stays on the step queue, not control.
CELERY_BEAT_SCHEDULE["agents-notification-delivery"] = {
    "task": "agents.deliver_notifications",
    "schedule": env_float("STEWARD_NOTIFY_SWEEP_SECONDS", 15.0),
    "options": {"expires": 30},
}

# Approval notices: a beat task sends those whose task message was lost (the broker was down at
# the commit); email is a network call, so it stays on the step queue too.
CELERY_BEAT_SCHEDULE["governance-missing-notices"] = {
    "task": "governance.send_missing_notices",
    "schedule": env_float("STEWARD_NOTICE_SWEEP_SECONDS", 300.0),
    "options": {"expires": 120},
}

# Policy dry runs: a beat task queues again those whose message was lost or whose worker died
# (the next worker resumes from the committed cursor).
CELERY_BEAT_SCHEDULE["agents-policy-dry-runs"] = {
    "task": "agents.resume_policy_dry_runs",
    "schedule": env_float("STEWARD_DRY_RUN_SWEEP_SECONDS", 60.0),
    "options": {"expires": 60},
}
# Calls replayed per transaction, and how long a worker's claim on a dry run lasts unrenewed.
STEWARD_DRY_RUN_BATCH_SIZE = env_int("STEWARD_DRY_RUN_BATCH_SIZE", 2000)
STEWARD_DRY_RUN_LEASE_SECONDS = env_float("STEWARD_DRY_RUN_LEASE_SECONDS", 300.0)

# Outbound webhooks: a beat task sends the outbox deliveries that are due (retries, and first
# attempts whose message was lost). Destinations must be public addresses; an admin allows
# private, loopback or link-local ones by host name, address or CIDR here.
CELERY_BEAT_SCHEDULE["governance-webhook-delivery"] = {
    "task": "governance.deliver_webhooks",
    "schedule": env_float("STEWARD_WEBHOOK_SWEEP_SECONDS", 10.0),
    "options": {"expires": 30},
}
STEWARD_WEBHOOK_ALLOWED_HOSTS = env_list("STEWARD_WEBHOOK_ALLOWED_HOSTS", [])
STEWARD_WEBHOOK_TIMEOUT_SECONDS = env_float("STEWARD_WEBHOOK_TIMEOUT_SECONDS", 10.0)
STEWARD_WEBHOOK_MAX_ATTEMPTS = env_int("STEWARD_WEBHOOK_MAX_ATTEMPTS", 8)
STEWARD_WEBHOOK_BACKOFF_SECONDS = env_int("STEWARD_WEBHOOK_BACKOFF_SECONDS", 30)
STEWARD_WEBHOOK_MAX_BACKOFF_SECONDS = env_int("STEWARD_WEBHOOK_MAX_BACKOFF_SECONDS", 6 * 3600)
STEWARD_WEBHOOK_DISABLE_AFTER_FAILURES = env_int("STEWARD_WEBHOOK_DISABLE_AFTER_FAILURES", 20)
# Notifications' webhook channel is signed with this Standard Webhooks secret when it is set.
STEWARD_NOTIFY_WEBHOOK_SECRET = env_optional_secret("STEWARD_NOTIFY_WEBHOOK_SECRET") or ""
# Inbound webhooks: how long a received webhook-id is remembered (replays inside it are no-ops).
STEWARD_INBOUND_HOOK_KEEP_DAYS = env_int("STEWARD_INBOUND_HOOK_KEEP_DAYS", 7)
CELERY_BEAT_SCHEDULE["orchestrator-inbound-hook-pruning"] = {
    "task": "orchestrator.prune_inbound_hooks",
    "schedule": env_float("STEWARD_INBOUND_HOOK_PRUNE_SECONDS", 3600.0),
    "options": {"expires": 600},
}
# API Idempotency-Key rows past STEWARD_IDEMPOTENCY_TTL are purged by a beat task on the
# control queue.
CELERY_BEAT_SCHEDULE["orchestrator-idempotency-key-purge"] = {
    "task": "orchestrator.purge_idempotency_keys",
    "schedule": env_float("STEWARD_IDEMPOTENCY_PURGE_SECONDS", 3600.0),
    "options": {"expires": 600},
}

# The governed records (and their fields) that agents' `record.update` tool may change; the
# tool's row in the admin can narrow this further.
STEWARD_AGENT_UPDATABLE_RECORDS = {
    "agents.ticket": ["title", "description", "status", "priority", "service", "assignee"],
}

# Audit trail. The checkpoint signing key (Ed25519: base64 of 32 raw bytes, or PEM) lives outside
# the database; with DEBUG on and none set, audit generates a dev key under VAR_DIR.
AUDIT_SIGNING_KEY = env_secret("AUDIT_SIGNING_KEY", dev_default=None)
AUDIT_SEQUENCE_SECONDS = env_float("AUDIT_SEQUENCE_SECONDS", 1.0)
AUDIT_CHECKPOINT_SECONDS = env_float("AUDIT_CHECKPOINT_SECONDS", 5.0)
CELERY_BEAT_SCHEDULE["audit-sequence"] = {
    "task": "audit.sequence",
    "schedule": AUDIT_SEQUENCE_SECONDS,
    "options": {"expires": max(AUDIT_SEQUENCE_SECONDS * 5, 5.0)},
}
