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
import re
import traceback
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_q.conf import Conf

from webhooks_app import queue, registry, signals, sql
from webhooks_app.conf import webhook_settings
from webhooks_app.logutil import printable
from webhooks_app.models import EventStatus, WebhookEvent

logger = logging.getLogger("webhooks_app")

TRACEBACK_FRAMES = 5


#: Without a django-q2 ``timeout`` an attempt may legitimately run this long before it counts
#: as lost (W003 asks for a timeout).
FALLBACK_ATTEMPT_SECONDS = 3600
#: Recovery handles at most this many events of each kind per pass (bounded work per run).
RECOVERY_BATCH = 500


def attempt_deadline() -> timedelta:
    """How long after its start an attempt is certainly over: django-q2 kills it at ``timeout``."""
    timeout = Conf.TIMEOUT or FALLBACK_ATTEMPT_SECONDS
    return timedelta(seconds=timeout + webhook_settings.RECOVERY_GRACE)


def process_event(event_id: int) -> str:
    """Run one attempt of event ``event_id``; returns what happened (for django-q2's logs).

    The claim accepts a ``running`` event whose attempt is past :func:`attempt_deadline`: its
    worker died, and this task is the ORM broker's redelivery (on the last attempt it is left to
    recovery, which marks the event dead).
    """
    # Safe to repeat: a claim that did commit leaves nothing due for the second one.
    event = sql.retrying_lost_connection(lambda: claim(event_id, timezone.now()))
    if event is None:
        return "skipped: not due (already running, finished or waiting for a retry)"
    func = registry.get_workflow(event.workflow_name)
    try:
        if func is None:
            raise LookupError(f"No workflow is registered as {event.workflow_name!r}.")
        result = func(event.payload, event)
    except BaseException as exc:
        # BaseException: django-q2's timeout is a SystemExit raised inside the workflow.
        record_failure(event, exc)
        if not isinstance(exc, Exception):
            raise
        return "failed"
    return record_success(event, result)


def claim(event_id: int, now: datetime) -> WebhookEvent | None:
    """Start an attempt of a due event: one conditional UPDATE, so of two tasks for one event
    only one gets it. Returns the claimed event, or None if it was not due.

    Where the database has ``UPDATE … RETURNING`` the row comes back from that same statement
    (one of the two statements a no-op attempt costs besides the final UPDATE).
    """
    stale_before = now - attempt_deadline()
    max_attempts = webhook_settings.MAX_ATTEMPTS
    connection = connections[DEFAULT_DB_ALIAS]
    if sql.supports_returning(connection.vendor):
        adapt = connection.ops.adapt_datetimefield_value
        with connection.cursor() as cursor:
            cursor.execute(
                sql.claim(connection.vendor),
                [adapt(now), event_id, adapt(now), adapt(stale_before), max_attempts],
            )
            row = cursor.fetchone()
        return None if row is None else sql.event_from_row(row, connection)
    claimed = (
        WebhookEvent.objects.filter(pk=event_id)
        .filter(
            Q(status=EventStatus.PENDING)
            | Q(status=EventStatus.FAILED, next_attempt_at__lte=now)
            | Q(status=EventStatus.RUNNING, started_at__lt=stale_before, attempts__lt=max_attempts)
        )
        .update(
            status=EventStatus.RUNNING, started_at=now, finished_at=None, attempts=F("attempts") + 1
        )
    )
    return WebhookEvent.objects.get(pk=event_id) if claimed else None


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
    """Write the attempt's outcome, unless recovery already took the event back.

    One precompiled UPDATE (:func:`sql.finish`): building the queryset was most of a no-op
    attempt's time in the worker (bench/RESULTS.md).
    """
    for name, value in fields.items():
        setattr(event, name, value)
    connection = connections[DEFAULT_DB_ALIAS]
    values = [f.get_db_prep_save(getattr(event, f.attname), connection) for f in sql.FINISH_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(sql.finish(connection.vendor), [*values, event.pk, event.attempts])
        return bool(cursor.rowcount)


def record_success(event: WebhookEvent, result: Any) -> str:
    """Store what the workflow returned; returns ``"succeeded"``, or ``"dead"`` when the result
    cannot be stored (:func:`_why_unstorable`).

    An unstorable result ends the event ``dead`` at once, not ``failed`` with a retry: the
    workflow has finished and done its work, and running it again would repeat its effects
    only to return the same value. (Left to the final UPDATE, PostgreSQL's refusal would leave
    the event ``running`` and recovery would run the finished workflow again and again.)
    """
    problem = _why_unstorable(result)
    if problem is not None:
        message = (
            f"The workflow finished, but its result cannot be stored: {problem}. It is not run "
            "again, so that its effects are not repeated; fix what it returns, then replay the "
            "event."
        )
        _record_failed_attempt(event, error=message, summary=message, will_retry=False)
        return "dead"
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
    return "succeeded"


#: A NUL character as ``json.dumps`` writes it: ``\u0000`` after an even number of backslashes
#: (an odd number means the text held a backslash followed by the letters ``u0000``).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _why_unstorable(result: Any) -> str | None:
    """Why ``result`` cannot be stored as the event's JSON, or None if it can.

    One rule for every supported database, so a workflow that works on the embedded SQLite
    does not start failing on PostgreSQL: JSON without NaN or Infinity (``jsonb`` refuses them),
    and no string holding a NUL character or a lone surrogate (neither ``jsonb`` nor UTF-8 can).
    """
    try:
        # ensure_ascii=False keeps every character but the control ones as itself, so a lone
        # surrogate fails the encoding below and a NUL shows as its escape.
        text = json.dumps(result, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"it is not JSON ({printable(f'{type(exc).__name__}: {exc}')})"
    if _ESCAPED_NUL.search(text):
        return "a string in it holds a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a string in it holds a lone surrogate, which is not valid Unicode"
    return None


def _storable_text(text: str) -> str:
    """``text`` with what no database text column holds (NUL, lone surrogates) escaped.

    An exception's message is the workflow's (or its inputs') text: stored unescaped, a NUL
    in it would make PostgreSQL refuse the failure itself and strand the event ``running``.
    """
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def retry_delay(attempt: int) -> float:
    """``RETRY_BACKOFF`` doubled per attempt, with ±20 % jitter so retries do not stampede."""
    base = float(webhook_settings.RETRY_BACKOFF) * 2 ** (attempt - 1)
    return base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


def record_failure(event: WebhookEvent, exc: BaseException) -> None:
    """A raising workflow: ``failed`` and retried after the backoff, or ``dead`` when that was
    the last attempt."""
    _record_failed_attempt(
        event,
        error=_storable_text("".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES))),
        summary=f"{type(exc).__name__}: {exc}",
        will_retry=event.attempts < webhook_settings.MAX_ATTEMPTS,
    )


def _record_failed_attempt(
    event: WebhookEvent, *, error: str, summary: str, will_retry: bool
) -> None:
    """End the attempt ``failed``: a retry scheduled (or queued at once), or the event ``dead``.

    ``error`` (stored as the event's error) must be storable text; ``summary`` goes into the
    attempt's history entry and the log line, escaped here.
    """
    finished = timezone.now()
    summary = printable(summary, limit=500)
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


def requeue(event_id: int, status: str, now: datetime) -> bool:
    """Enqueue a ``pending`` or overdue ``failed`` event again, at most once per grace period.

    ``next_attempt_at`` is moved to ``now`` in the same conditional UPDATE, so concurrent
    recoveries (or a burst of duplicate deliveries) enqueue it once.
    """
    with transaction.atomic():
        updated = WebhookEvent.objects.filter(pk=event_id, status=status).update(
            next_attempt_at=now
        )
        if updated:
            queue.enqueue_in_transaction(event_id)
    return bool(updated)


def recover_stranded_events(dry_run: bool = False) -> dict[str, int]:
    """Put events that fell between the queue's cracks back on it; returns counts per kind.

    - ``pending`` longer than ``RECOVERY_GRACE`` since it was (last) enqueued: the enqueue was
      lost (broker down after commit, Redis task popped by a worker that died);
    - ``failed`` whose retry is overdue by the grace: its schedule was lost;
    - ``running`` past :func:`attempt_deadline`: its worker died mid-run (the Redis broker has
      no acknowledgements). Run again, or ``dead`` if that was the last attempt.

    Runs every minute as a django-q2 schedule, and as ``manage.py recover_webhook_events``.
    """
    now = timezone.now()
    overdue = now - timedelta(seconds=webhook_settings.RECOVERY_GRACE)
    stranded = {
        "pending": WebhookEvent.objects.filter(status=EventStatus.PENDING)
        .annotate(queued=Coalesce("next_attempt_at", "received_at"))
        .filter(queued__lt=overdue),
        "failed": WebhookEvent.objects.filter(
            status=EventStatus.FAILED, next_attempt_at__lt=overdue
        ),
        "running": WebhookEvent.objects.filter(
            status=EventStatus.RUNNING, started_at__lt=now - attempt_deadline()
        ),
    }
    counts = {kind: 0 for kind in ("pending", "failed", "running", "dead")}
    for kind, queryset in stranded.items():
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:RECOVERY_BATCH])
        if dry_run:
            counts[kind] = len(ids)
            continue
        for event_id in ids:
            if kind == "running":
                if outcome := _recover_lost_attempt(event_id, now):
                    counts[outcome] += 1
            elif requeue(event_id, kind, now):
                counts[kind] += 1
    if any(counts.values()):
        logger.warning("Recovered stranded webhook events: %s", counts)
    return counts


def _recover_lost_attempt(event_id: int, now: datetime) -> str | None:
    """A ``running`` event whose worker died: back to ``pending``, or ``dead`` if out of attempts."""
    event = WebhookEvent.objects.get(pk=event_id)
    out_of_attempts = event.attempts >= webhook_settings.MAX_ATTEMPTS
    entry = _attempt_entry(
        event, now, "lost", error="The worker stopped before the attempt finished."
    )
    with transaction.atomic():
        updated = WebhookEvent.objects.filter(
            pk=event_id, status=EventStatus.RUNNING, started_at=event.started_at
        ).update(
            status=EventStatus.DEAD if out_of_attempts else EventStatus.PENDING,
            finished_at=now if out_of_attempts else None,
            next_attempt_at=None if out_of_attempts else now,
            error="The worker running the last attempt stopped (killed or crashed)."
            if out_of_attempts
            else event.error,
            history=[*event.history, entry],
        )
        if updated and not out_of_attempts:
            queue.enqueue_in_transaction(event_id)
    if not updated:  # it finished (or was recovered) meanwhile
        return None
    return "dead" if out_of_attempts else "running"


def cleanup_expired_events() -> int:
    """The daily schedule: delete finished events older than ``RETENTION_DAYS``.

    The setting is the operator's deliberate choice (a system check warns when it is shorter
    than the senders' retry window), so the command's 7-day guard does not apply here.
    """
    from webhooks_app.services import cleanup_events

    return cleanup_events(days=webhook_settings.RETENTION_DAYS, force=True)
