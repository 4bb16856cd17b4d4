"""What the qcluster runs: one attempt of one event's workflow.

The event row, not django-q2, owns the state machine (``pending → running → succeeded``, or
``failed`` with a scheduled retry, or ``dead``). django-q2 is configured not to retry
(``ack_failure``); every task start *claims* the event with a conditional UPDATE, so a task
that django-q2 delivers twice (ORM broker lock expiry, crash redelivery) runs the workflow once.
"""

from __future__ import annotations

import json
import logging
import random
import traceback
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from webhooks_app import queue, registry, signals
from webhooks_app.conf import webhook_settings
from webhooks_app.logutil import printable
from webhooks_app.models import EventStatus, WebhookEvent

logger = logging.getLogger("webhooks_app")

TRACEBACK_FRAMES = 5


def process_event(event_id: int) -> str:
    """Run one attempt of event ``event_id``; returns what happened (for django-q2's logs)."""
    now = timezone.now()
    claimed = (
        WebhookEvent.objects.filter(pk=event_id)
        .filter(
            Q(status=EventStatus.PENDING) | Q(status=EventStatus.FAILED, next_attempt_at__lte=now)
        )
        .update(
            status=EventStatus.RUNNING, started_at=now, finished_at=None, attempts=F("attempts") + 1
        )
    )
    if not claimed:
        return "skipped: not due (already running, finished or waiting for a retry)"
    event = WebhookEvent.objects.get(pk=event_id)
    func = registry.get_workflow(event.workflow_name)
    try:
        if func is None:
            raise LookupError(f"No workflow is registered as {event.workflow_name!r}.")
        result = func(event.payload, event)
        json.dumps(result)  # stored as JSON: refuse anything that would not round-trip
    except BaseException as exc:
        # BaseException: django-q2's timeout is a SystemExit raised inside the workflow.
        record_failure(event, exc)
        if not isinstance(exc, Exception):
            raise
        return "failed"
    record_success(event, result)
    return "succeeded"


def _attempt_entry(
    event: WebhookEvent, finished: datetime, outcome: str, **extra: Any
) -> dict[str, Any]:
    assert event.started_at is not None
    return {
        "attempt": event.attempts,
        "started_at": event.started_at.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_ms": round((finished - event.started_at).total_seconds() * 1000, 1),
        "outcome": outcome,
        **extra,
    }


def _finish(event: WebhookEvent, **fields: Any) -> bool:
    """Write the attempt's outcome, unless recovery already took the event back."""
    for name, value in fields.items():
        setattr(event, name, value)
    return bool(
        WebhookEvent.objects.filter(
            pk=event.pk, status=EventStatus.RUNNING, attempts=event.attempts
        ).update(**fields)
    )


def record_success(event: WebhookEvent, result: Any) -> None:
    finished = timezone.now()
    if _finish(
        event,
        status=EventStatus.SUCCEEDED,
        result=result,
        error="",
        finished_at=finished,
        next_attempt_at=None,
        history=[*event.history, _attempt_entry(event, finished, "succeeded")],
    ):
        signals.event_succeeded.send(sender=WebhookEvent, event=event, result=result)


def retry_delay(attempt: int) -> float:
    """``RETRY_BACKOFF`` doubled per attempt, with ±20 % jitter so retries do not stampede."""
    base = float(webhook_settings.RETRY_BACKOFF) * 2 ** (attempt - 1)
    return base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


def record_failure(event: WebhookEvent, exc: BaseException) -> None:
    finished = timezone.now()
    frames = traceback.format_exception(exc, limit=-TRACEBACK_FRAMES)
    error = "".join(frames)
    summary = printable(f"{type(exc).__name__}: {exc}", limit=500)
    will_retry = event.attempts < webhook_settings.MAX_ATTEMPTS
    delay = retry_delay(event.attempts) if will_retry else 0.0
    if delay < 1:  # below the scheduler's resolution: straight back on the queue
        delay = 0.0
    next_attempt = finished + timedelta(seconds=delay) if will_retry else None
    with transaction.atomic():
        finished_ok = _finish(
            event,
            status=EventStatus.FAILED if will_retry else EventStatus.DEAD,
            error=error,
            finished_at=finished,
            next_attempt_at=next_attempt,
            history=[*event.history, _attempt_entry(event, finished, "failed", error=summary)],
        )
        if finished_ok and next_attempt is not None:
            if delay == 0:
                queue.enqueue_in_transaction(event.pk)
            else:
                queue.schedule_retry(event.pk, event.attempts + 1, next_attempt)
    if not finished_ok:
        return
    logger.warning(
        "Webhook event %s (%s:%s) attempt %s failed: %s%s",
        event.pk,
        printable(event.source),
        printable(event.webhook_id),
        event.attempts,
        summary,
        f"; retry in {delay:.0f}s" if will_retry else "; now dead",
    )
    signals.event_failed.send(sender=WebhookEvent, event=event, error=error, will_retry=will_retry)
