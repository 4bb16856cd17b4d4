"""Recovery of events stranded between storage and execution (back-dated rows, then real
processes killed with SIGKILL)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from tests.conftest import envelope, queued_tasks
from tests.testapp.models import Execution
from webhooks_app import lifecycle, queue, tasks
from webhooks_app.models import EventStatus, WebhookEvent


def make_event(status: str, webhook_id: str, **fields) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source="generic", webhook_id=webhook_id, workflow_name="record", status=status, **fields
    )


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.mark.django_db(transaction=True)
def test_only_stranded_events_are_recovered():
    fresh_pending = make_event(EventStatus.PENDING, "fresh")
    old_pending = make_event(EventStatus.PENDING, "old", received_at=ago(60))
    requeued_recently = make_event(
        EventStatus.PENDING, "requeued", received_at=ago(60), next_attempt_at=ago(0.5)
    )
    overdue_retry = make_event(EventStatus.FAILED, "overdue", attempts=1, next_attempt_at=ago(60))
    future_retry = make_event(EventStatus.FAILED, "future", attempts=1, next_attempt_at=ago(-60))
    lost = make_event(
        EventStatus.RUNNING, "lost", attempts=1, started_at=ago(10), lease_expires_at=ago(1)
    )
    lost_last = make_event(
        EventStatus.RUNNING,
        "lost-last",
        attempts=settings.WEBHOOKS["MAX_ATTEMPTS"],
        started_at=ago(10),
        lease_expires_at=ago(1),
    )
    # However long it has run: its lease is live, its worker alive.
    still_running = make_event(
        EventStatus.RUNNING, "busy", attempts=1, started_at=ago(86400), lease_expires_at=ago(-5)
    )
    done = make_event(EventStatus.SUCCEEDED, "done", received_at=ago(600))

    assert tasks.recover_stranded_events(dry_run=True) == {
        "pending": 1,
        "failed": 1,
        "running": 2,
        "dead": 0,
    }
    assert queued_tasks() == 0
    counts = tasks.recover_stranded_events()
    assert counts == {"pending": 1, "failed": 1, "running": 1, "dead": 1}
    assert queued_tasks() == 3

    def status(event):
        event.refresh_from_db()
        return event.status

    assert status(lost) == EventStatus.PENDING
    assert lost.history[-1]["outcome"] == "lost" and lost.history[-1]["lease_lapsed"]
    assert status(lost_last) == EventStatus.DEAD
    assert "stopped" in lost_last.error
    for event, expected in [
        (fresh_pending, EventStatus.PENDING), (old_pending, EventStatus.PENDING),
        (requeued_recently, EventStatus.PENDING), (overdue_retry, EventStatus.FAILED),
        (future_retry, EventStatus.FAILED), (still_running, EventStatus.RUNNING), (done, EventStatus.SUCCEEDED),
    ]:  # fmt: skip
        assert status(event) == expected
    # A second pass right away finds nothing: each event is re-enqueued once per grace period.
    assert tasks.recover_stranded_events() == {"pending": 0, "failed": 0, "running": 0, "dead": 0}


@pytest.mark.django_db(transaction=True)
def test_two_recoveries_that_found_the_same_stranded_events_enqueue_each_once():
    """Every worker's heartbeat recovers, so two passes often read the same stranded ids before
    either has moved them: the second one's conditional update must find them no longer
    overdue (it re-enqueued them as well before)."""
    pending = make_event(EventStatus.PENDING, "stranded", received_at=ago(60))
    retry = make_event(EventStatus.FAILED, "overdue", attempts=1, next_attempt_at=ago(60))
    now = timezone.now()
    for event in (pending, retry):
        assert lifecycle.requeue(event.pk, event.status, now) is True
        assert lifecycle.requeue(event.pk, event.status, now) is False
    assert queued_tasks() == 2


@pytest.mark.django_db(transaction=True)
def test_recovered_events_run_once():
    make_event(EventStatus.PENDING, "stranded", received_at=ago(60))
    tasks.recover_stranded_events()
    event = WebhookEvent.objects.get(webhook_id="stranded")
    assert tasks.process_event(event.pk) == "succeeded"
    assert tasks.process_event(event.pk).startswith("skipped")
    assert Execution.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_duplicate_of_a_stranded_pending_event_requeues_it_once(post_webhook):
    body = envelope("record", "stuck")
    assert post_webhook(body).status_code == 202
    WebhookEvent.objects.filter(webhook_id="stuck").update(received_at=ago(60))
    queue.broker().purge_queue()
    assert post_webhook(body).json()["status"] == "duplicate"
    assert queued_tasks() == 1
    assert post_webhook(body).json()["status"] == "duplicate"
    assert queued_tasks() == 1  # not again within the grace period


@pytest.mark.django_db
def test_recover_command_reports_counts():
    make_event(EventStatus.PENDING, "old", received_at=ago(60))
    out = StringIO()
    call_command("recover_webhook_events", "--dry-run", stdout=out)
    assert "Would recover: 1 pending" in out.getvalue()
    call_command("recover_webhook_events", stdout=out)
    assert "Recovered: 1 pending" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_recovery_schedule_exists_and_the_scheduler_runs_it():
    from django_q.scheduler import scheduler

    schedule = Schedule.objects.get(name=queue.RECOVERY_SCHEDULE)
    assert schedule.func == "webhooks_app.tasks.recover_stranded_events"
    assert schedule.schedule_type == Schedule.MINUTES
    queue.ensure_schedules()  # idempotent
    assert Schedule.objects.filter(name=queue.RECOVERY_SCHEDULE).count() == 1
    Schedule.objects.exclude(pk=schedule.pk).update(next_run=ago(-3600))  # only this one is due
    Schedule.objects.filter(pk=schedule.pk).update(next_run=ago(1))
    scheduler(broker=queue.broker())
    assert queued_tasks() == 1


@pytest.mark.django_db(transaction=True)
def test_recovery_never_runs_a_workflow_whose_result_could_not_be_stored(post_webhook):
    """Finding 16: on PostgreSQL a NUL in the result made the final UPDATE fail, the event stayed
    ``running``, and recovery ran the finished workflow again, up to MAX_ATTEMPTS times. In
    autocommit, as in a worker."""
    assert post_webhook(envelope("unstorable", "nul-result", kind="nul")).status_code == 202
    event = WebhookEvent.objects.get(webhook_id="nul-result")
    assert tasks.process_event(event.pk) == "dead"
    # Long after the attempt, recovery finds nothing to take back.
    WebhookEvent.objects.filter(pk=event.pk).update(started_at=ago(86400))
    assert tasks.recover_stranded_events() == {"pending": 0, "failed": 0, "running": 0, "dead": 0}
    assert tasks.process_event(event.pk).startswith("skipped")
    assert WebhookEvent.objects.get(pk=event.pk).status == EventStatus.DEAD
    assert Execution.objects.filter(webhook_id="nul-result").count() == 1
