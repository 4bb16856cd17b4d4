"""System checks (``manage.py check``): configuration mistakes that would lose or forge events.

Messages and hints live in :data:`MESSAGES`, one place, so tests compare them by equality.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from webhooks_app import registry
from webhooks_app.conf import env_secret_name, webhook_settings
from webhooks_app.schemes import scheme_names

#: Senders retry for days (Stripe 3 days); the idempotency record must outlive that.
MIN_RETENTION_DAYS = 3
#: Standard Webhooks asks for at least 24 random bytes.
MIN_SECRET_BYTES = 24

MESSAGES: dict[str, tuple[str, str]] = {
    "E001": (
        "Webhook source {source!r} uses the unknown scheme {scheme!r}.",
        "Use one of: {known}; or register your scheme with "
        "webhooks_app.schemes.register_scheme() or WEBHOOKS['SCHEMES'].",
    ),
    "E002": (
        "Webhook source {source!r} routes {event!r} to the unknown workflow {workflow!r}.",
        "Register it with @workflow({workflow!r}) in an installed app's workflows.py, "
        "or in WEBHOOKS['WORKFLOWS'].",
    ),
    "E003": (
        "Webhook source {source!r} has no secret while signatures are required; "
        "every delivery to it is refused with 503.",
        "Set WEBHOOKS['SOURCES'][{source!r}]['SECRETS'], or the environment variable "
        "{env} or WEBHOOK_SECRET_DEFAULT. To disable the source, set it to None in "
        "WEBHOOKS['SOURCES'].",
    ),
    "E004": (
        "Q_CLUSTER['retry'] ({retry}s) is not longer than Q_CLUSTER['timeout'] ({timeout}s): "
        "django-q2 would deliver a still-running task again and the workflow would run twice.",
        "Set retry > timeout * (queue_limit / workers + 2), e.g. timeout=60, retry=240.",
    ),
    "E005": (
        "WEBHOOKS['WORKFLOWS'][{workflow!r}] = {path!r} cannot be imported: {error}.",
        "Give the dotted path of a callable taking (inputs, event).",
    ),
    "W001": (
        "Webhook signatures are switched off while DEBUG is False: anyone can post events.",
        "Remove WEBHOOK_SIGNATURE_REQUIRED=false (or WEBHOOKS['REQUIRE_SIGNATURE'] = False) "
        "outside development.",
    ),
    "W002": (
        "WEBHOOKS['RETENTION_DAYS'] is {days}: senders redeliver for up to "
        f"{MIN_RETENTION_DAYS} days, and a cleaned-up event would run again.",
        f"Keep RETENTION_DAYS at {MIN_RETENTION_DAYS} or more (the default is 30).",
    ),
    "W003": (
        "Q_CLUSTER['timeout'] is not set: a hung workflow blocks its worker forever, and "
        "django-q2 redelivers it after 'retry' seconds while it still runs.",
        "Set Q_CLUSTER['timeout'] (e.g. 60) and a 'retry' well above it (e.g. 240).",
    ),
    "W004": (
        "A secret of webhook source {source!r} is shorter than {min_bytes} bytes.",
        "Use a random secret of at least 24 bytes, e.g. python -c "
        '"import secrets; print(secrets.token_urlsafe(32))".',
    ),
}


def message(check_id: str, **params: Any) -> checks.CheckMessage:
    text, hint = MESSAGES[check_id]
    level = checks.Error if check_id.startswith("E") else checks.Warning
    return level(text.format(**params), hint=hint.format(**params), id=f"webhooks_app.{check_id}")


@checks.register()
def check_sources(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    known_schemes = scheme_names()
    found: list[checks.CheckMessage] = []
    for source in webhook_settings.sources.values():
        if source.scheme not in known_schemes:
            found.append(
                message(
                    "E001",
                    source=source.name,
                    scheme=source.scheme,
                    known=", ".join(sorted(known_schemes)),
                )
            )
        for event, workflow_name in source.routes.items():
            if not registry.is_registered(workflow_name):
                found.append(
                    message("E002", source=source.name, event=event, workflow=workflow_name)
                )
        if webhook_settings.REQUIRE_SIGNATURE and not source.secrets:
            found.append(message("E003", source=source.name, env=env_secret_name(source.name)))
        if any(len(secret.encode()) < MIN_SECRET_BYTES for secret in source.secrets):
            found.append(message("W004", source=source.name, min_bytes=MIN_SECRET_BYTES))
    return found


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    if not webhook_settings.REQUIRE_SIGNATURE and not settings.DEBUG:
        found.append(message("W001"))
    if webhook_settings.RETENTION_DAYS < MIN_RETENTION_DAYS:
        found.append(message("W002", days=webhook_settings.RETENTION_DAYS))
    for name, path in webhook_settings.WORKFLOWS.items():
        if isinstance(path, str):
            try:
                import_string(path)
            except ImportError as exc:
                found.append(message("E005", workflow=name, path=path, error=exc))
    return found


@checks.register()
def check_queue(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    q_cluster = getattr(settings, "Q_CLUSTER", {}) or {}
    timeout, retry = q_cluster.get("timeout"), q_cluster.get("retry", 60)
    if timeout is None:
        return [message("W003")]
    if retry <= timeout:
        return [message("E004", retry=retry, timeout=timeout)]
    return []
