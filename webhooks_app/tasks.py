"""What the qcluster runs: one attempt of one event's workflow, a bulk replay's batches, the
periodic recovery and the daily cleanup. The lifecycle behind them (claim, lease, outcome,
recovery) is :mod:`webhooks_app.lifecycle`.

The event row, not django-q2, owns the state machine (``pending → running → succeeded``, or
``failed`` with a scheduled retry, or ``dead``). django-q2 is configured not to retry
(``ack_failure``); every task start *claims* the event with a conditional UPDATE, so a task
that django-q2 delivers twice (ORM broker lock expiry, crash redelivery) runs the workflow once.
"""

from __future__ import annotations

import time

from django.utils import timezone

from webhooks_app import lifecycle, metrics, queue, registry, replays, sql
from webhooks_app.conf import webhook_settings
from webhooks_app.heartbeat import heartbeat
from webhooks_app.models import WebhookEvent, WebhookReplay

#: Without a django-q2 ``timeout``, how long one task goes on running the events handed to it.
FALLBACK_CHAIN_SECONDS = 15.0


def process_event(event_id: int, workflow: str = "") -> str:
    """Run one attempt of event ``event_id``, then what its end hands to this worker (the next
    event of its key, a waiting event's concurrency slot), for a quarter of django-q2's
    ``timeout`` at most: the rest is left to the queue. Returns what happened, for django-q2's
    logs. ``workflow``: the event's, where whoever queued it said (:func:`lifecycle.claim`);
    tasks queued without it run the same."""
    # Safe to repeat: a claim that did commit leaves nothing due for the second one.
    event = sql.retrying_lost_connection(
        lambda: lifecycle.claim(event_id, timezone.now(), workflow)
    )
    if event is None:
        return "skipped: not due (running, finished, waiting for a retry, paused or held back)"
    timeout = queue.task_timeout()
    chain_until = time.monotonic() + (timeout / 4 if timeout else FALLBACK_CHAIN_SECONDS)
    outcomes = []
    while event is not None:
        outcome = _attempt(event)
        outcomes.append(outcome)
        if outcome == lifecycle.TAKEN_BACK:
            break
        event = lifecycle.hand_on(event, take=time.monotonic() < chain_until)
    handed = f" (then {len(outcomes) - 1} handed on)" if len(outcomes) > 1 else ""
    return outcomes[0] + handed


def _attempt(event: WebhookEvent) -> str:
    """Run the claimed attempt's workflow and record its outcome; returns the outcome."""
    heartbeat.hold(event)
    started = time.monotonic()
    try:
        func = registry.get_workflow(event.workflow_name)
        try:
            if func is None:
                raise LookupError(f"No workflow is registered as {event.workflow_name!r}.")
            result = func(event.payload, event)
        except BaseException as exc:
            # BaseException: django-q2's timeout is a SystemExit raised inside the workflow.
            outcome = lifecycle.record_failure(event, exc)
            if not isinstance(exc, Exception):
                if outcome != lifecycle.TAKEN_BACK:
                    lifecycle.hand_on(event)  # the worker stops here: wake, do not take
                raise
            return outcome
        return lifecycle.record_success(event, result)
    finally:
        metrics.observe_attempt(event.workflow_name, time.monotonic() - started)
        heartbeat.release(event)


def run_replay(replay_id: int, after: int) -> str:
    """The job of a bulk replay (:func:`webhooks_app.replays.run_replay`): batches for a
    quarter of django-q2's ``timeout`` at most, so the runner never stops it mid-batch, then
    the rest in a new job. Returns how far it got, for django-q2's logs."""
    timeout = queue.task_timeout()
    seconds = timeout / 4 if timeout else FALLBACK_CHAIN_SECONDS
    try:
        replay = replays.run_replay(replay_id, after=after, seconds=seconds)
    except WebhookReplay.DoesNotExist:
        return f"skipped: no replay {replay_id}"
    return f"replay {replay_id}: {replay.state}, {replay.done} of {replay.count} queued"


def recover_stranded_events(dry_run: bool = False) -> dict[str, int]:
    """Runs every minute as a django-q2 schedule, and as ``manage.py recover_webhook_events``:
    see :func:`lifecycle.recover`; and the bulk replays whose job was lost
    (:func:`replays.resume_stalled`), as every worker's heartbeat does too."""
    counts = lifecycle.recover(dry_run=dry_run)
    if not dry_run:
        replays.resume_stalled()
    return counts


def cleanup_expired_events() -> int:
    """The daily schedule: delete finished events older than ``RETENTION_DAYS``.

    The setting is the operator's deliberate choice (a system check warns when it is shorter
    than the senders' retry window), so the command's 7-day guard does not apply here.
    """
    from webhooks_app.services import cleanup_events

    return cleanup_events(days=webhook_settings.RETENTION_DAYS, force=True)


def evaluate_alerts() -> int:
    """Runs every minute as a django-q2 schedule, and as ``manage.py check_webhook_alerts``:
    see :func:`webhooks_app.alerts.evaluate`. Returns how many alerts are open."""
    from webhooks_app.alerts import evaluate

    return len(evaluate())


def start_worker() -> None:
    """A qcluster worker is starting: start its heartbeat, whose first beat takes back the
    lapsed leases a killed cluster left."""
    heartbeat.start()
