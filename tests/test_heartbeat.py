"""The heartbeat of a worker process (``webhooks_app.heartbeat``): one beat, run in the test's
own process. That a real worker renews its lease while it runs, and that a killed one's attempt
is taken back, is in test_leases.py with real qcluster processes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import queued_tasks
from webhooks_app.heartbeat import Heartbeat
from webhooks_app.models import EventStatus, WebhookEvent


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


@pytest.mark.django_db(transaction=True)
def test_a_beat_puts_back_on_the_queue_what_the_queue_lost():
    """A Redis restarted empty loses every queued task, leaving the events ``pending``: a beat
    re-enqueues those overdue by RECOVERY_GRACE, and a lapsed lease's event, within seconds
    instead of at the recovery schedule's next minute."""
    lost_task = WebhookEvent.objects.create(
        source="generic", webhook_id="lost-task", workflow_name="record", received_at=ago(60)
    )
    lost_worker = WebhookEvent.objects.create(
        source="generic", webhook_id="lost-worker", workflow_name="record",
        status=EventStatus.RUNNING, attempts=1, started_at=ago(10), lease_expires_at=ago(1),
    )  # fmt: skip
    fresh = WebhookEvent.objects.create(
        source="generic", webhook_id="fresh", workflow_name="record"
    )
    Heartbeat().beat()
    assert queued_tasks() == 2
    for event in (lost_task, lost_worker, fresh):
        event.refresh_from_db()
    assert lost_task.next_attempt_at is not None
    assert lost_worker.status == EventStatus.PENDING
    assert fresh.next_attempt_at is None
    Heartbeat().beat()  # the next beat (or another worker's) finds nothing more to do
    assert queued_tasks() == 2
