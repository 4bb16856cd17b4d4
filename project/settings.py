"""Demo host project for webhooks_app.

Embedded default: SQLite in WAL mode and django-q2's ORM broker: nothing else to start.
Scaled out: ``DATABASE_URL=postgres://…`` and ``REDIS_URL=redis://…`` switch to PostgreSQL and
the Redis broker. Everything a deployment changes comes from the environment.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import dj_database_url
import django
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("WEBHOOKS_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(exist_ok=True)


def _env_flag(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() not in {"0", "false", "no", "off", ""}


DEBUG = _env_flag("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY.strip():
    if not DEBUG:
        # The development key below is public: with it anyone signs session cookies (an admin
        # login) and password-reset links. A deployment brings its own or does not start.
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set and DEBUG is off (DJANGO_DEBUG=false): refusing to "
            "start with the demo's public development key. Set DJANGO_SECRET_KEY to a random "
            'value, e.g. python -c "import secrets; print(secrets.token_urlsafe(50))".'
        )
    SECRET_KEY = "django-insecure-demo-only-change-me"
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

# HTTPS only, as soon as DEBUG is off: plain HTTP is redirected, cookies never travel in clear,
# and browsers remember it (HSTS; its includeSubDomains and preload directives only cover this
# host's own subdomains and submit nothing to any preload list). Behind a proxy that terminates
# TLS, DJANGO_SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto makes Django trust that header (only
# where the proxy always sets it). DJANGO_HTTPS=false serves plain HTTP on a private network;
# `check --deploy` then warns, as it should.
_HTTPS = _env_flag("DJANGO_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _HTTPS
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000")) if _HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_PRELOAD = _HTTPS
if _proxy_header := os.environ.get("DJANGO_SECURE_PROXY_SSL_HEADER", "").strip():
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_q",
    "webhooks_app",
    "project",  # the demo workflows in project/workflows.py
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],  # host-level admin branding
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

if os.environ.get("DATABASE_URL"):
    # Persistent connections: reconnecting per request costs PostgreSQL ingest about 4x.
    # No CONN_HEALTH_CHECKS: they cost a `SELECT 1` round trip before every request (a tenth of
    # a duplicate's time on PostgreSQL: bench/RESULTS.md). The webhook endpoint reopens a
    # connection the server dropped and stores the delivery anyway (ingest.store); any other
    # view may fail once, and Django then replaces the connection.
    DATABASES = {"default": dj_database_url.config(conn_max_age=600)}
    if DATABASES["default"]["ENGINE"].endswith("postgresql"):
        # Fail fast (503) when the server is gone instead of hanging the sender: connect within
        # 3 s, and give up on a connection whose packets go unanswered (a cut link, a server
        # that vanished) after 10 s instead of TCP's 15 minutes of retransmissions; keepalives
        # find the same on a connection that is only waiting for an answer.
        _options = DATABASES["default"].setdefault("OPTIONS", {})
        for _name, _value in {
            "connect_timeout": 3,
            "tcp_user_timeout": 10_000,
            "keepalives_idle": 10,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }.items():
            _options.setdefault(_name, _value)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "db.sqlite3"),
            # Persistent connections: opening one (and running init_command) per request
            # costs more than the request itself.
            "CONN_MAX_AGE": 600,
        }
    }
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # However SQLite is configured (the default file or DATABASE_URL=sqlite:///…), and unless
    # the URL sets an option itself. IMMEDIATE: writers queue on the busy timeout instead of
    # failing with "database is locked" when a read transaction tries to become a write one
    # (system check webhooks_app.W005); WAL: readers never wait for the writer.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        **DATABASES["default"].get("OPTIONS", {}),
    }

# django-q2: see the README's "Queue configuration". The event row owns retries and attempt
# counting, so django-q2 itself must never retry: ack_failures, and retry far above timeout
# (the retry clock also runs while a task waits in the local prefetch buffer).
Q_CLUSTER: dict = {
    "name": os.environ.get("Q_CLUSTER_NAME", "webhooks_app"),
    "workers": int(os.environ.get("Q_WORKERS", "2")),
    "queue_limit": int(os.environ.get("Q_WORKERS", "2")),
    "bulk": 1,
    "timeout": 60,
    "retry": 240,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 0,
    "catch_up": False,
    "poll": 0.2,
    "recycle": 500,
    "max_rss": 250_000,
    "label": "Webhook jobs",
}
if os.environ.get("REDIS_URL"):
    Q_CLUSTER["redis"] = os.environ["REDIS_URL"]
else:
    Q_CLUSTER["orm"] = "default"

# A cache shared by all processes: django-q2 clusters publish their state through it (the ORM
# broker), so /webhooks/health/ and the dashboard can see them.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ["REDIS_URL"],
    }
    if os.environ.get("REDIS_URL")
    else {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "cache"),
    }
}


def development_secret(var_dir: Path) -> str | None:
    """The secret from the environment, else (development only) ``var/dev-secret``, made once.

    With ``DEBUG`` on, a fresh checkout gets a random secret of its own, so ``manage.py``
    commands and ``make run`` work without setup. With ``DEBUG`` off nothing is invented: no
    secret in the environment means the app fails closed (system check E003, 503 at runtime).
    """
    for name in ("WEBHOOK_SECRET_GENERIC", "WEBHOOK_SECRET_DEFAULT"):
        if os.environ.get(name):
            return os.environ[name]
    if not DEBUG:
        return None
    path = var_dir / "dev-secret"
    if not path.exists():
        _create_private_file(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


def _create_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` unless it exists, readable by its owner alone from the start.

    The text goes into a temporary file that ``mkstemp`` creates with ``O_EXCL`` and mode 0600,
    which is then hard-linked into place. The link fails if another process got there first, so
    processes starting at once agree on one secret and none reads a half-written file.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def development_sources(dev_secret: str) -> dict[str, dict[str, Any]]:
    """With ``DEBUG`` on, one source per provider scheme (named after it), routed to
    ``log_event``, so ``manage.py send_test_webhook --source stripe`` (or any other) works
    against ``make run`` at once. Each secret is derived from ``var/dev-secret`` in the form its
    provider hands out, and differs from every other (a token scheme's secret travels in clear:
    it must never be another source's HMAC key); ``WEBHOOK_SECRET_<SOURCE>`` replaces it.
    A deployment (``DEBUG`` off) configures only the sources it really has.
    """

    def derived(scheme: str) -> bytes:
        return hmac.new(dev_secret.encode(), scheme.encode(), hashlib.sha256).digest()

    secrets_by_scheme = {
        "github": derived("github").hex(),
        "gitlab": derived("gitlab").hex(),
        "shopify": derived("shopify").hex(),
        "slack": derived("slack").hex(),
        "standard": "whsec_" + base64.b64encode(derived("standard")).decode(),
        "stripe": "whsec_" + derived("stripe").hex(),
        "telegram": base64.urlsafe_b64encode(derived("telegram")).decode().rstrip("="),
        "twilio": derived("twilio").hex()[:32],
        "whatsapp": derived("whatsapp").hex()[:32],
    }
    return {
        scheme: {
            "SCHEME": scheme,
            "SECRETS": [os.environ.get(f"WEBHOOK_SECRET_{scheme.upper()}") or secret],
            "ROUTES": {"*": "log_event"},
        }
        for scheme, secret in secrets_by_scheme.items()
    }


_dev_secret = development_secret(VAR_DIR)
WEBHOOKS: dict[str, Any] = {
    # Production secrets come from the environment: WEBHOOK_SECRET_GENERIC or _DEFAULT.
    "SOURCES": {
        "generic": {"SCHEME": "generic", "SECRETS": [_dev_secret] if _dev_secret else []},
        **(development_sources(_dev_secret) if DEBUG and _dev_secret else {}),
    },
}

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

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
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# With DEBUG on the demo's e-mails are printed, not sent (Django 6.1 configures mail through
# MAILERS). A deployment keeps Django's SMTP default (mail_admins reports errors), which
# `check --deploy` requires on Django 6.1.
if DEBUG and django.VERSION >= (6, 1):
    MAILERS = {"default": {"BACKEND": "django.core.mail.backends.console.EmailBackend"}}
elif DEBUG:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

# One console format for every line. django-q2 installs a handler and format of its own
# ("21:33:00 [Q] INFO …") only when its logger has none; runserver's request lines have their
# own as well. django-q2 logs up to four INFO lines per task (created from a schedule,
# enqueued, processing, processed): the minutely recovery schedule alone would print four a
# minute all day long, and the app logs each failed attempt itself. django-q2's warnings and
# errors still show.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "webhooks_app": {"handlers": ["console"], "level": "INFO"},
        "project": {"handlers": ["console"], "level": "INFO"},
        "django-q": {"handlers": ["console"], "level": "WARNING", "propagate": False},
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}
