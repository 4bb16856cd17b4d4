"""The ``WEBHOOKS`` setting: defaults, environment fall-backs and per-source configuration.

Read lazily and cached; reset when ``WEBHOOKS`` changes (``override_settings`` works) and by
:meth:`WebhookSettings.reload` (tests that change the environment). Nothing is ever written
back onto ``django.conf.settings``. This module imports nothing of the app: the modules that
cache what they build from these settings clear their caches on ``setting_changed`` themselves.

The setting's keys are named so that Django's ``SafeExceptionReporterFilter`` hides them on
error pages: secrets live under ``SECRETS``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    "SOURCES": {},
    "REQUIRE_SIGNATURE": None,  # None: the environment decides, else True (fail closed)
    "TIMESTAMP_TOLERANCE": 300,
    "MAX_BODY_BYTES": 1024 * 1024,
    "MAX_ATTEMPTS": 5,
    "RETRY_BACKOFF": 30,
    "RETENTION_DAYS": 30,
    "RECOVERY_GRACE": 60,
    # How long a running attempt's lease lasts; its worker renews it every third of this.
    "LEASE_SECONDS": 30,
    "WORKFLOWS": {},
    # {"workflow": {"CONCURRENCY": 2, "RATE": "10/s"}}: win over @workflow(concurrency=, rate=)
    "WORKFLOW_LIMITS": {},
    "SCHEMES": {},
    # The staff API's DRF authentication: the session (CSRF enforced) unless the host says
    # otherwise. Not DRF's default, whose BasicAuthentication replays without a CSRF token.
    "API_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "HEALTH_TOKEN": "",  # `Authorization: Bearer <token>` sees the health details; "" = none
    # What runs the events: "django_q" (django-q2's qcluster) or "django_tasks" (Django's Tasks
    # framework on the TASKS backend; django-tasks-db's db_worker): one of TASK_RUNNERS.
    "TASK_RUNNER": "django_q",
    # Alert rules (contract §11): [{"NAME": ..., "WHEN": kind, ...}], evaluated every minute.
    "ALERTS": [],
    "ALERT_EMAIL": False,  # also mail_admins when an alert is raised or resolved
    "ALERT_URLS": [],  # JSON POSTs (Slack-compatible "text") on raise and resolve
    "ALERT_SIGNING_SECRET": "",  # signs those POSTs as Standard Webhooks when set
    "METRICS_TOKEN": "",  # `Authorization: Bearer <token>` may scrape /webhooks/metrics/
    # Keys of the database sources' secrets (webhooks_app.crypto): the first encrypts, every one
    # decrypts. [] = derived from SECRET_KEY (and SECRET_KEY_FALLBACKS, which only decrypt).
    "ENCRYPTION_KEYS": [],
}

TASK_RUNNERS = ("django_q", "django_tasks")

DEFAULT_SOURCE = "generic"
ENV_SIGNATURE_REQUIRED = "WEBHOOK_SIGNATURE_REQUIRED"
ENV_SECRET_DEFAULT = "WEBHOOK_SECRET_DEFAULT"  # noqa: S105 - a variable name, not a secret
#: Built-in schemes whose secret is a shared token sent as is in every request (their classes
#: are ``SharedTokenScheme``s; a test keeps the two in step). ``WEBHOOK_SECRET_DEFAULT`` is an
#: HMAC key for the other sources, and a token anyone on the path can read must never be one.
TOKEN_SCHEMES = frozenset({"gitlab", "telegram"})
#: The per-source options beside ``SCHEME``, ``SECRETS`` and ``ROUTES`` (contract §5, §9), with
#: their type: what a database source's ``options`` may hold (``WebhookSource.options``).
SOURCE_OPTIONS: dict[str, type] = {
    "TIMESTAMP_TOLERANCE": int,
    "MAX_BODY_BYTES": int,
    "VERIFY_TOKEN": str,
    "PUBLIC_URL": str,
    "ORDER_KEY": str,
}
_FALSE_WORDS = {"0", "false", "no", "off"}


def env_secret_name(source: str) -> str:
    """``WEBHOOK_SECRET_<SOURCE>``: upper-case, anything but letters and digits becomes ``_``."""
    return "WEBHOOK_SECRET_" + re.sub(r"[^A-Z0-9]", "_", source.upper())


def secret_env_names(source: str, scheme: str) -> tuple[str, ...]:
    """The environment variables a source without ``SECRETS`` takes its secret from, in order.

    ``WEBHOOK_SECRET_DEFAULT`` is left out for token schemes: a Telegram or GitLab token travels
    in clear, so as the default it would become every other source's HMAC key as well.
    """
    if scheme in TOKEN_SCHEMES:
        return (env_secret_name(source),)
    return (env_secret_name(source), ENV_SECRET_DEFAULT)


@dataclass(frozen=True)
class SourceConfig:
    """One configured sender, with every fall-back already applied."""

    name: str
    scheme: str
    secrets: tuple[str, ...] = field(repr=False)
    routes: Mapping[str, str]
    timestamp_tolerance: int
    max_body_bytes: int
    verify_token: str = field(default="", repr=False)
    public_url: str = ""
    #: ``ORDER_KEY``: a dotted path into the payload or ``"module:function"``; "" = unordered.
    order_key: str = ""
    secret_origin: str = ""  # which setting supplied the secrets, for error messages
    #: A :class:`~webhooks_app.models.WebhookSource` (the admin or code made it), not settings.
    stored: bool = False

    def route(self, event_type: str) -> str | None:
        """The workflow for ``event_type``: an exact route, else ``"*"``, else none."""
        return self.routes.get(event_type) or self.routes.get("*")


class WebhookSettings:
    """Attribute access to ``WEBHOOKS`` with defaults: ``webhook_settings.MAX_ATTEMPTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self._sources: dict[str, SourceConfig] | None = None

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, "WEBHOOKS", None) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"WEBHOOKS has no setting {name!r}")
        if name not in self._cache:
            value = self.user_settings.get(name, DEFAULTS[name])
            if name == "REQUIRE_SIGNATURE" and value is None:
                flag = os.environ.get(ENV_SIGNATURE_REQUIRED, "true").strip().lower()
                value = flag not in _FALSE_WORDS
            self._cache[name] = value
        return self._cache[name]

    @property
    def sources(self) -> dict[str, SourceConfig]:
        """Every enabled source by URL segment; ``generic`` is there unless set to ``None``."""
        if self._sources is None:
            raw: dict[str, Any] = {DEFAULT_SOURCE: {}, **self.SOURCES}
            self._sources = {
                name: self._build_source(name, options or {})
                for name, options in raw.items()
                if options is not None
            }
        return self._sources

    def source(self, name: str) -> SourceConfig | None:
        return self.sources.get(name)

    def _build_source(self, name: str, options: Mapping[str, Any]) -> SourceConfig:
        scheme = options.get("SCHEME", DEFAULT_SOURCE if name == DEFAULT_SOURCE else name)
        secrets, origin = _resolve_secrets(name, scheme, options.get("SECRETS"))
        return self.build_source(name, scheme, options, secrets=secrets, secret_origin=origin)

    def build_source(
        self,
        name: str,
        scheme: str,
        options: Mapping[str, Any],
        *,
        secrets: tuple[str, ...],
        secret_origin: str,
        stored: bool = False,
    ) -> SourceConfig:
        """A source from its ``ROUTES`` and :data:`SOURCE_OPTIONS`, the global defaults filling
        the gaps: one mapping for the settings sources and the database ones."""
        return SourceConfig(
            name=name,
            scheme=scheme,
            secrets=secrets,
            routes=dict(options.get("ROUTES", {})),
            timestamp_tolerance=int(options.get("TIMESTAMP_TOLERANCE", self.TIMESTAMP_TOLERANCE)),
            max_body_bytes=int(options.get("MAX_BODY_BYTES", self.MAX_BODY_BYTES)),
            verify_token=options.get("VERIFY_TOKEN") or "",
            public_url=options.get("PUBLIC_URL") or "",
            order_key=options.get("ORDER_KEY") or "",
            secret_origin=secret_origin,
            stored=stored,
        )

    def reload(self) -> None:
        """Read ``WEBHOOKS`` and the environment afresh, here and in every module that caches
        something built from them (loaded schemes, workflows from ``WORKFLOWS``): for tests
        that change the environment, which Django does not announce.

        It is announced as ``override_settings`` announces a new ``WEBHOOKS``, so each cache
        keeps listening for the one signal and this module need not know who caches what.
        """
        value = getattr(settings, "WEBHOOKS", None)
        setting_changed.send(sender=type(self), setting="WEBHOOKS", value=value, enter=True)

    def _forget(self) -> None:
        self._cache.clear()
        self._sources = None


@dataclass(frozen=True)
class Rate:
    """At most ``count`` attempt starts per ``per_seconds`` (``"10/s"``, ``"600/m"``)."""

    count: int
    per_seconds: float

    @property
    def interval(self) -> float:
        """The spacing between two starts that keeps every window within the rate."""
        return self.per_seconds / self.count


_RATE = re.compile(r"\s*([1-9][0-9]*)\s*/\s*([sm])\s*")


def parse_rate(text: object) -> Rate:
    """``"N/s"`` or ``"N/m"`` (N ≥ 1) as a :class:`Rate`; ValueError for anything else."""
    match = _RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a rate like '10/s' or '100/m'")
    return Rate(int(match[1]), 1.0 if match[2] == "s" else 60.0)


def _resolve_secrets(source: str, scheme: str, configured: Any) -> tuple[tuple[str, ...], str]:
    """Configured ``SECRETS``, else the first of :func:`secret_env_names` that is set.

    Empty strings are dropped: an empty HMAC key is not a secret (anyone can compute it). So is
    text that is not valid UTF-8 (an environment variable holding other bytes arrives with lone
    surrogates): no scheme could encode it, and the source fails closed as unconfigured (503,
    ``E003``) instead of crashing on every delivery.
    """
    if isinstance(configured, str):
        configured = [configured]
    secrets = tuple(s for s in configured or () if _usable(s))
    if secrets:
        return secrets, f"WEBHOOKS['SOURCES'][{source!r}]['SECRETS']"
    for env_name in secret_env_names(source, scheme):
        if _usable(value := os.environ.get(env_name, "")):
            return (value,), env_name
    return (), ""


def _usable(secret: object) -> bool:
    if not isinstance(secret, str) or not secret:
        return False
    try:
        secret.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


webhook_settings = WebhookSettings()


@receiver(setting_changed)
def _clear_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "WEBHOOKS":
        webhook_settings._forget()
