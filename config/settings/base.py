"""Settings shared by every environment.

The environment is read here and nowhere else (12-factor). Defaults serve the
embedded mode: SQLite and the in-memory channel layer on one machine.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path

import environ
from csp.constants import NONE, SELF

from config.credentials import with_credentials

BASE_DIR = Path(__file__).resolve().parent.parent.parent

# Every variable X may instead be given as X_FILE, the path of a file that holds the value
# (Kubernetes Secrets mounted as files, k8s/README.md): django-environ's FileAwareEnv.
env = environ.FileAwareEnv()
# A `.env` file (DJANGO_ENV_FILE names another one) fills in what the environment leaves
# unset, and puts it into os.environ for the children. DJANGO_READ_ENV_FILE=false reads
# none: config/settings/test.py sets it, so a developer's .env reaches no test, nor any
# process a test starts.
if env.bool("DJANGO_READ_ENV_FILE", default=True):
    environ.Env.read_env(
        env.str("DJANGO_ENV_FILE", default=str(BASE_DIR / ".env")), overwrite=False
    )

SECRET_KEY = env.str("SECRET_KEY", default="embedded-mode-insecure-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.staticfiles",
    "channels",
    "game",
    "realtime",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

# The page is ES modules and a stylesheet from this origin, no inline script or style;
# its sockets go to the same host (CSP 3: 'self' covers ws: and wss: there).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# Database: SQLite file by default, anything dj-database-url style via DATABASE_URL.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}")
}
# The password apart from the URL (k8s: the database operator's Secret, as a file).
if env.str("DATABASE_PASSWORD", default=""):
    DATABASES["default"]["PASSWORD"] = env.str("DATABASE_PASSWORD")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # IMMEDIATE transactions take the write lock up front, so concurrent
    # writers queue on the busy timeout instead of failing to upgrade a lock.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# PostgreSQL: connections per process in the async pool of the move/seat/presence path
# (game/pgstore.py), on top of the ORM's one.
DATABASE_POOL_SIZE: int = env.int("DATABASE_POOL_SIZE", default=8)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: RabbitMQ when RABBITMQ_URL is set, else in-memory (embedded mode).
# The one place that decides; see layer/rabbitmq.py for the guarantees.
# RABBITMQ_USERNAME / RABBITMQ_PASSWORD, when set, replace the URL's credentials (k8s: the
# messaging topology operator's generated user, as files).
RABBITMQ_URL: str = with_credentials(
    env.str("RABBITMQ_URL", default=""),
    env.str("RABBITMQ_USERNAME", default=""),
    env.str("RABBITMQ_PASSWORD", default=""),
)
CHANNEL_CAPACITY: int = env.int("CHANNEL_CAPACITY", default=1000)
CHANNEL_EXPIRY_SECONDS: int = env.int("CHANNEL_EXPIRY_SECONDS", default=60)
if RABBITMQ_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "layer.rabbitmq.RabbitMQChannelLayer",
            "CONFIG": {
                "url": RABBITMQ_URL,
                "capacity": CHANNEL_CAPACITY,
                "expiry": CHANNEL_EXPIRY_SECONDS,
                "publish_timeout": env.float("LAYER_PUBLISH_TIMEOUT_SECONDS", default=10.0),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY, "expiry": CHANNEL_EXPIRY_SECONDS},
        }
    }

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "var" / "static"


STORAGES = {
    "staticfiles": {"BACKEND": "config.storage.ManifestStaticFilesWithModules"},
}

# --- the game -----------------------------------------------------------------
# Name this replica shows in `welcome.server`. The pid is added at runtime when
# unset, so several workers of one pod stay distinguishable.
REPLICA_NAME: str = env.str("REPLICA_NAME", default="")
# This server's start: gunicorn's master loads the settings before it forks, so its
# workers share it (realtime/replica.py tells siblings from a dead predecessor by it).
REPLICA_GENERATION: str = env.str("REPLICA_GENERATION", default=secrets.token_hex(4))
HOSTNAME = socket.gethostname()
# The server closes frames above this with 1009 itself (deploy/uvicorn_worker.py).
MAX_FRAME_BYTES: int = env.int("MAX_FRAME_BYTES", default=16384)
# The server pings every socket this often; one that does not answer in time is closed.
WS_PING_INTERVAL_SECONDS: float = env.float("WS_PING_INTERVAL_SECONDS", default=20.0)
WS_PING_TIMEOUT_SECONDS: float = env.float("WS_PING_TIMEOUT_SECONDS", default=20.0)
# permessage-deflate on game sockets (deploy/uvicorn_worker.py), without context takeover
# when on. Off: our frames are a few hundred bytes of JSON; bench/sockets.py has the bytes,
# CPU and memory of each choice.
WS_PER_MESSAGE_DEFLATE: bool = env.bool("WS_PER_MESSAGE_DEFLATE", default=False)
RATE_LIMIT_PER_SECOND: int = env.int("RATE_LIMIT_PER_SECOND", default=20)
RATE_LIMIT_CLOSE_PER_SECOND: int = env.int("RATE_LIMIT_CLOSE_PER_SECOND", default=100)
# Limits for the fleet (realtime/limits.py). A Locust swarm from one address raises the
# first (bench/, loadtest/ and the local fleet do).
MAX_SOCKETS_PER_ADDRESS: int = env.int("MAX_SOCKETS_PER_ADDRESS", default=100)  # per replica
MAX_ROOM_MEMBERS: int = env.int("MAX_ROOM_MEMBERS", default=500)  # players and spectators
ROOM_FANOUT_PER_SECOND: int = env.int("ROOM_FANOUT_PER_SECOND", default=5000)  # per replica
FLOOD_COOLDOWN_SECONDS: float = env.float("FLOOD_COOLDOWN_SECONDS", default=30.0)
# Peers whose X-Forwarded-For names the client (the ingress, HAProxy): uvicorn's option.
FORWARDED_ALLOW_IPS: str = env.str("FORWARDED_ALLOW_IPS", default="127.0.0.1")
# Presence: every replica stamps a heartbeat; connections of a replica whose
# heartbeat is older than PRESENCE_TIMEOUT are treated as gone and swept.
PRESENCE_HEARTBEAT_SECONDS: float = env.float("PRESENCE_HEARTBEAT_SECONDS", default=10.0)
PRESENCE_TIMEOUT_SECONDS: float = env.float("PRESENCE_TIMEOUT_SECONDS", default=35.0)
# Presence changes in one room share one broadcast: within this long after a close or
# a seat change, within PRESENCE_CONNECT_DELAY after a connect (see realtime/groups.py).
PRESENCE_BROADCAST_DELAY_SECONDS: float = env.float(
    "PRESENCE_BROADCAST_DELAY_SECONDS", default=0.25
)
PRESENCE_CONNECT_DELAY_SECONDS: float = env.float("PRESENCE_CONNECT_DELAY_SECONDS", default=1.0)

# How often a replica compares the versions of the rooms it serves with the database and
# re-sends a room whose last change was never broadcast (realtime/groups.py).
ROOM_CATCH_UP_SECONDS: float = env.float("ROOM_CATCH_UP_SECONDS", default=1.0)

LOG_LEVEL: str = env.str("LOG_LEVEL", default="INFO")
# text: human-readable lines (`make run`); json: one JSON object per line with the replica,
# room and connection ids (config/logs.py), for production's log pipeline.
LOG_FORMAT: str = env.str("LOG_FORMAT", default="text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logs.JsonFormatter"},
    },
    "filters": {"context": {"()": "config.logs.ContextFilter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.request": {"level": "ERROR"}},
}

os.makedirs(STATIC_ROOT, exist_ok=True)

# Worker fleet (workers/, game/jobs.py): delays between attempts of a failing job;
# after the last one it goes to the dead-letter queue.
JOB_RETRY_DELAYS: tuple[float, ...] = tuple(
    float(x) for x in env.list("JOB_RETRY_DELAYS", default=["1", "5", "25"])
)
WORKER_METRICS_PORT: int = env.int("WORKER_METRICS_PORT", default=9102)
# A job delivered this many times more without an ack (it kills its worker: a crash, an
# OOM kill) goes to the dead-letter queue instead of looping: RabbitMQ's x-delivery-limit
# on the quorum jobs queue, so at most JOB_DELIVERY_LIMIT + 1 deliveries. Changing it
# needs a new jobs queue (a queue's arguments are fixed; workers/topology.py).
JOB_DELIVERY_LIMIT: int = env.int("JOB_DELIVERY_LIMIT", default=5)
# How often each worker reads tictac_jobs_queue_depth from the broker.
WORKER_QUEUE_DEPTH_SECONDS: float = env.float("WORKER_QUEUE_DEPTH_SECONDS", default=5.0)
LAYER_PUBLISH_TIMEOUT_SECONDS: float = env.float("LAYER_PUBLISH_TIMEOUT_SECONDS", default=10.0)

# Seats and rooms nobody uses (game/lifecycle.py, the workers' sweep): a seat with no open
# socket this long is released (a running game is forfeited); a room with no seat taken
# and no socket, unchanged this long, is removed. Quick match gives up after
# QUICKMATCH_TIMEOUT_SECONDS without an opponent (the page offers the computer).
SEAT_OFFLINE_RELEASE_SECONDS: float = env.float("SEAT_OFFLINE_RELEASE_SECONDS", default=120.0)
EMPTY_ROOM_SECONDS: float = env.float("EMPTY_ROOM_SECONDS", default=600.0)
QUICKMATCH_TIMEOUT_SECONDS: float = env.float("QUICKMATCH_TIMEOUT_SECONDS", default=60.0)

# Computer opponent: pause before its move, so it reads like a turn.
BOT_THINK_SECONDS: float = env.float("BOT_THINK_SECONDS", default=0.4)

# Drain on SIGTERM (see realtime/drain.py). Kubernetes' terminationGracePeriodSeconds
# must exceed DRAIN_READINESS_DELAY + DRAIN_WINDOW + GRACEFUL_SHUTDOWN.
DRAIN_READINESS_DELAY_SECONDS: float = env.float("DRAIN_READINESS_DELAY_SECONDS", default=3.0)
DRAIN_WINDOW_SECONDS: float = env.float("DRAIN_WINDOW_SECONDS", default=10.0)
# uvicorn's graceful shutdown after the drain (deploy/); gunicorn waits the three plus 5 s.
GRACEFUL_SHUTDOWN_SECONDS: int = env.int("GRACEFUL_SHUTDOWN_SECONDS", default=25)

# The web server (deploy/): `python -m deploy.server` listens on HOST:PORT; gunicorn
# (deploy/gunicorn.conf.py) binds 0.0.0.0:PORT with WEB_CONCURRENCY worker processes.
HOST: str = env.str("HOST", default="127.0.0.1")
PORT: int = env.int("PORT", default=8000)
WEB_CONCURRENCY: int = env.int("WEB_CONCURRENCY", default=1)
