"""Demo workflows: what a host project's ``workflows.py`` looks like."""

from __future__ import annotations

import logging
from typing import Any

from django.core.mail import send_mail

from webhooks_app import workflow
from webhooks_app.models import WebhookEvent

logger = logging.getLogger("project")


@workflow("log_event")
def log_event(inputs: dict[str, Any], event: WebhookEvent) -> dict[str, Any]:
    """Log the delivery and return how many input keys it had."""
    logger.info("Workflow log_event ran for %s with %d input key(s)", event, len(inputs))
    return {"keys": sorted(inputs)}


@workflow("send_welcome_email")
def send_welcome_email(inputs: dict[str, Any], event: WebhookEvent) -> dict[str, Any]:
    """Send a welcome e-mail (the console backend prints it)."""
    address = str(inputs.get("email", "new-user@example.com"))
    send_mail("Welcome!", "Thanks for signing up.", "noreply@example.com", [address])
    return {"sent_to": address}


@workflow("always_fail")
def always_fail(inputs: dict[str, Any], event: WebhookEvent) -> None:
    """Raise every time: shows retries with backoff and the dead state in the admin."""
    raise RuntimeError(f"always_fail was asked to fail (attempt {event.attempts})")
