"""Plasticity settings, read from the environment (see project/env.py and the README).

Two modes share one code path:

* embedded (default): SQLite under ``var/`` (WAL, IMMEDIATE transactions, busy timeout),
  django-q2 on the ORM broker, the in-memory channel layer fed from the outbox.
* distributed: ``DATABASE_URL`` (PostgreSQL) and ``REDIS_URL`` (channels_redis).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from events.env import env_bool, env_float, env_int, env_list, env_str, persistent_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(cast(str, env_str("PLASTICITY_VAR_DIR", str(BASE_DIR / "var")))).resolve()  # a default: never None

PLASTICITY_ENV = env_str("PLASTICITY_ENV", "embedded")
if PLASTICITY_ENV not in {"embedded", "production"}:
    raise ImproperlyConfigured(f"PLASTICITY_ENV must be 'embedded' or 'production', got {PLASTICITY_ENV!r}")
PRODUCTION = PLASTICITY_ENV == "production"

DEBUG = env_bool("DEBUG", False)

if PRODUCTION:
    SECRET_KEY = cast(str, env_str("SECRET_KEY", required=True))  # required: raises instead of None
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure"):
        raise ImproperlyConfigured("SECRET_KEY must be at least 50 random characters in production")
else:
    SECRET_KEY = env_str("SECRET_KEY") or persistent_secret_key(VAR_DIR / "secret_key")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "events",
    "hormones",
    "models_registry",
    "improvement",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before anything can read a request body: 413 for bodies above their path's limit.
    "project.middleware.RequestBodyLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "project.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "project.urls"

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
                "project.context_processors.live",
            ],
            # The panel's number formatting ({% load panel_format %}); project.panel is not an app.
            "libraries": {"panel_format": "project.panel.templatetags.panel_format"},
        },
    },
]

WSGI_APPLICATION = "project.wsgi.application"
# The port of the ASGI server that carries /ws/ when HTTP is served by another (``manage.py serve``
# sets it for its gunicorn workers); 0: the WebSockets share the page's origin.
PLASTICITY_WS_PORT = env_int("PLASTICITY_WS_PORT", 0, minimum=0, maximum=65535)
ASGI_APPLICATION = "project.asgi.application"

# --- database -------------------------------------------------------------------------------
SQLITE_PATH = VAR_DIR / "plasticity.sqlite3"
SQLITE_OPTIONS = {
    # IMMEDIATE takes the write lock when a transaction starts, so two writers queue on the
    # busy timeout instead of failing with "database is locked" half-way through.
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
}
#: Connections per process of ``DB_POOL=1`` (min, max): the web threads (4 by default) plus the
#: background threads that query (tracker flush, shadow checks), with room to spare.
DB_POOL_DEFAULT_SIZES = (2, 8)


def _db_pool_options() -> dict[str, Any] | None:
    """``DB_POOL``: off (unset, ``0``/``false``/``off``), on (``1``/``true``/``on``: ``DB_POOL_DEFAULT_SIZES``),
    or ``MIN:MAX`` connections per process (e.g. ``2:16``) — psycopg_pool's ``min_size`` / ``max_size``."""
    raw = os.environ.get("DB_POOL", "").strip().lower()
    if raw in {"", "0", "false", "no", "off"}:
        return None
    if raw in {"1", "true", "yes", "on"}:
        min_size, max_size = DB_POOL_DEFAULT_SIZES
    else:
        low, sep, high = raw.partition(":")
        try:
            min_size, max_size = int(low), int(high)
        except ValueError:
            min_size = max_size = -1
        if not sep or min_size < 0 or max_size < max(1, min_size):
            raise ImproperlyConfigured(
                f"DB_POOL must be 0/1 (off/on) or MIN:MAX connections per process with 0 <= MIN <= MAX and "
                f"MAX >= 1 (e.g. 2:16), got {os.environ['DB_POOL']!r}")
    return {"min_size": min_size, "max_size": max_size}


_database_url = env_str("DATABASE_URL")
if _database_url:
    DATABASES: dict[str, Any] = {"default": dj_database_url.parse(_database_url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        DATABASES["default"]["OPTIONS"] = dict(SQLITE_OPTIONS)
    else:
        DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
        # An unreachable server must fail a request fast (503), not hang it on TCP retries.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
            "connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5, minimum=1))
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            "OPTIONS": dict(SQLITE_OPTIONS),
            # Persistent connections: a request reuses its thread's connection instead of opening the file.
            "CONN_MAX_AGE": env_int("DB_CONN_MAX_AGE", 60),
            # Tests with real worker processes need a file every process can open.
            # One file per test run, so two runs in one checkout never share (and delete) a database.
            "TEST": {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")},
        }
    }
# Opt-in connection pool (PostgreSQL): Django's psycopg pool in each process instead of a
# persistent connection per thread; a request returns its connection to the pool when it ends.
# Off by default: the predict hot path makes no query, and persistent connections
# (DB_CONN_MAX_AGE) already serve the rest.
_db_pool = _db_pool_options()
if _db_pool is not None:
    if not DATABASES["default"]["ENGINE"].endswith("postgresql"):
        raise ImproperlyConfigured("DB_POOL needs PostgreSQL (DATABASE_URL=postgres://...)")
    if env_int("DB_CONN_MAX_AGE", 0) != 0:
        raise ImproperlyConfigured("DB_POOL and DB_CONN_MAX_AGE exclude each other (a pooled connection goes back "
                                   "to the pool after each request): unset DB_CONN_MAX_AGE")
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django refuses a pool with persistent connections
    # A request waits for a free connection no longer than it would for a new one (503 after that).
    _db_pool["timeout"] = float(DATABASES["default"]["OPTIONS"]["connect_timeout"])
    DATABASES["default"]["OPTIONS"]["pool"] = _db_pool
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channels ---------------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 reads with a 5 s socket timeout by default, the same as channels_redis's
                # BZPOPMIN wait: every idle WebSocket then died with "Timeout reading" (channels_redis
                # issue 422). A longer read timeout keeps it alive and still notices a dead server.
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 3}],
                "capacity": 1500, "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# The outbox relay (events/relay.py) carries events committed by other processes (workers)
# to this web process's channel layer. Needed with the in-memory layer; with Redis workers push
# on commit themselves, so it is off unless asked for.
PLASTICITY_OUTBOX_RELAY = env_bool("PLASTICITY_OUTBOX_RELAY", not REDIS_URL)

# --- task queue (django-q2, ORM broker: delivery receipts, at-least-once) ---------------------
Q_TIMEOUT = env_int("Q_TIMEOUT", 3600, minimum=60)
Q_CLUSTER: dict[str, Any] = {
    "name": "plasticity",
    "orm": "default",
    "workers": env_int("Q_WORKERS", 1, minimum=1),
    "timeout": Q_TIMEOUT,
    # retry must be longer than timeout or a slow task is delivered twice while it still runs.
    "retry": Q_TIMEOUT + 300,
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 2, minimum=1),
    # A worker process whose memory passed this (MB) is replaced once its task is done: a training
    # worker's RSS grows with the models and datasets it has loaded (262 MB over the 30-minute
    # soak, bench/results/soak.json); this is its bound.
    "max_rss": env_int("Q_MAX_RSS_MB", 1536, minimum=256) * 1024,
    "catch_up": False,
    "save_limit": 500,
    "poll": env_float("Q_POLL", 0.5, minimum=0.05),
    # Tasks a cluster pulls beyond the ones its workers execute. django-q2's default (workers²)
    # lets one cluster hold queued runs while another cluster idles; a run is long, so prefetching
    # saves nothing worth that.
    "queue_limit": env_int("Q_QUEUE_LIMIT", 1, minimum=1),
    "ack_failures": True,
    "label": "Task queue",
}
if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"]:  # pragma: no cover - guarded by construction
    raise ImproperlyConfigured("Q_CLUSTER retry must be longer than timeout")

# --- storage ----------------------------------------------------------------------------------
MEDIA_ROOT = Path(cast(str, env_str("PLASTICITY_MEDIA_ROOT", str(VAR_DIR / "media"))))  # a default: never None
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
# collectstatic fills it for deployments; WhiteNoise serves from the finders meanwhile.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {
        "BACKEND": env_str("PLASTICITY_STORAGE_BACKEND", "models_registry.storage.AtomicFileSystemStorage"),
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    },
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- auth and security --------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if PRODUCTION:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if env_bool("SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Uploads: bodies above this are refused before they are read whole.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)
# Modules (and packages) a task's algorithm_path may name; anything else is refused before it
# is imported (models_registry/loading.py). Comma-separated in the environment.
PLASTICITY_ALGORITHM_MODULES = env_list(
    "PLASTICITY_ALGORITHM_MODULES",
    ["models_registry.algorithms", "models_registry.data.hormone_model", "improvement.nn.gain_model", "user_algorithms"])
PLASTICITY_UPLOAD_MAX_BYTES = env_int("PLASTICITY_UPLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- REST API -----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Tokens verified once per PLASTICITY_TOKEN_CACHE_TTL_S per process (revocation: within the TTL).
        "project.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    # One error shape for every API error: {"error": {"code", "message", "details"?}}.
    "EXCEPTION_HANDLER": "project.api.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["project.api.throttles.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        # Per client and web process; sized for a service (1,000 predictions/s from one client).
        "predict": env_str("THROTTLE_PREDICT", "60000/min"),
        "upload": env_str("THROTTLE_UPLOAD", "30/hour"),
        "login": env_str("THROTTLE_LOGIN", "20/min"),
        "user": env_str("THROTTLE_USER", "6000/min"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Plasticity API",
    "DESCRIPTION": "Reporting, export and control of a self-improving neural model control plane.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Choice sets reused by several serializers get one component name each.
    "ENUM_NAME_OVERRIDES": {
        "ImplementationEnum": "models_registry.choices.Implementation",
        "ImplementationOrAutoEnum": ["neural", "algorithmic", "auto"],
        # Two "status" choice sets: runs keep the name they had alone, task creation jobs get their own.
        "StatusEnum": "improvement.choices.RunStatus",
        "TaskJobStatusEnum": "models_registry.choices.TaskJobStatus",
        # Two "source" choice sets: a task's data source keeps its name, a dataset version's gets its own.
        "DatasetSourceEnum": "models_registry.choices.DatasetSource",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "project.api.schema.error_responses",
    ],
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Plasticity ----------------------------------------------------------------------------------
# Torch threads per worker process: several workers on one machine must not fight over cores.
PLASTICITY_TORCH_THREADS = env_int("PLASTICITY_TORCH_THREADS", 1, minimum=1)
# Seconds a run (or a search trial) may go without a heartbeat before the reconciler considers its
# worker gone. Workers beat every few seconds (improvement.runs.lifecycle.HEARTBEAT_INTERVAL_S);
# ``manage.py serve`` reconciles every few seconds, so a dead worker's run is requeued within about
# this timeout plus five seconds (elsewhere the minute tick of the scheduler reconciles).
PLASTICITY_HEARTBEAT_TIMEOUT = env_int("PLASTICITY_HEARTBEAT_TIMEOUT", 20, minimum=5)
# Attempts of one run (each one a claim by a worker): a run whose worker vanished is requeued and
# resumes from its checkpoint until it has had this many; then it ends failed.
PLASTICITY_RUN_MAX_ATTEMPTS = env_int("PLASTICITY_RUN_MAX_ATTEMPTS", 3, minimum=1)
# Dataset versions whose files are kept per task (each holds every row up to it); older versions
# keep their lineage row, not their file.
PLASTICITY_DATASET_FILES_KEPT = env_int("PLASTICITY_DATASET_FILES_KEPT", 5, minimum=1)
# Extra strategy modules to register (dotted paths; every module in improvement/strategies/ is found on its own).
PLASTICITY_STRATEGY_MODULES = env_list("PLASTICITY_STRATEGY_MODULES", [])
# Check every live event's payload against its declared TypedDict (events/payloads.py) before publishing.
PLASTICITY_CHECK_EVENT_PAYLOADS = env_bool("PLASTICITY_CHECK_EVENT_PAYLOADS", DEBUG)
# Where architecture searches keep their Optuna studies (an SQLAlchemy URL); empty: the project's own
# database (the same PostgreSQL, or an SQLite file beside the SQLite database).
PLASTICITY_OPTUNA_STORAGE = env_str("PLASTICITY_OPTUNA_STORAGE", "") or ""
