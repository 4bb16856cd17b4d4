"""What the qcluster runs: one attempt of one event's workflow, the periodic recovery and the
daily cleanup. The lifecycle behind them (claim, lease, outcome, recovery) is
:mod:`webhooks_app.lifecycle`.

The event row, not django-q2, owns the state machine (``pending → running → succeeded``, or
``failed`` with a scheduled retry, or ``dead``). django-q2 is configured not to retry
(``ack_failure``); every task start *claims* the event with a conditional UPDATE, so a task
that django-q2 delivers twice (ORM broker lock expiry, crash redelivery) runs the workflow once.
"""

from __future__ import annotations

from django.utils import timezone

from webhooks_app import lifecycle, registry, sql
from webhooks_app.conf import webhook_settings
from webhooks_app.heartbeat import heartbeat


def process_event(event_id: int) -> str:
    """Run one attempt of event ``event_id``; returns what happened (for django-q2's logs)."""
    # Safe to repeat: a claim that did commit leaves nothing due for the second one.
    event = sql.retrying_lost_connection(lambda: lifecycle.claim(event_id, timezone.now()))
    if event is None:
        return "skipped: not due (running, finished, waiting for a retry, paused or held back)"
    heartbeat.hold(event)
    try:
        func = registry.get_workflow(event.workflow_name)
        try:
            if func is None:
                raise LookupError(f"No workflow is registered as {event.workflow_name!r}.")
            result = func(event.payload, event)
        except BaseException as exc:
            # BaseException: django-q2's timeout is a SystemExit raised inside the workflow.
            lifecycle.record_failure(event, exc)
            if not isinstance(exc, Exception):
                raise
            return "failed"
        return lifecycle.record_success(event, result)
    finally:
        heartbeat.release(event)


def recover_stranded_events(dry_run: bool = False) -> dict[str, int]:
    """Runs every minute as a django-q2 schedule, and as ``manage.py recover_webhook_events``:
    see :func:`lifecycle.recover`."""
    return lifecycle.recover(dry_run=dry_run)


def cleanup_expired_events() -> int:
    """The daily schedule: delete finished events older than ``RETENTION_DAYS``.

    The setting is the operator's deliberate choice (a system check warns when it is shorter
    than the senders' retry window), so the command's 7-day guard does not apply here.
    """
    from webhooks_app.services import cleanup_events

    return cleanup_events(days=webhook_settings.RETENTION_DAYS, force=True)


def start_worker() -> None:
    """A qcluster worker is starting: start its heartbeat, whose first beat takes back the
    lapsed leases a killed cluster left."""
    heartbeat.start()
