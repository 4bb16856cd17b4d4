"""The Django Tasks runner on django-tasks-db's database backend (contract §14), on the
``make test-tasks`` leg (tests/settings_tasks.py): a task is a row of the event's transaction,
a delay is a row's ``run_after``, cleanup trims the rows, and the real ``db_worker`` runs the
heartbeat. What is the same on every runner (end to end, crashes, ordering, pause, limits) is
the rest of the suite's, which that leg runs as well.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import get_commands
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from tests.conftest import envelope
from tests.processes import deliver, manage_py, subprocess_env, wait_until
from tests.testapp.models import Span
from webhooks_app import checks, queue, services, tasks
from webhooks_app.conf import webhook_settings
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.skipif(
    webhook_settings.TASK_RUNNER != "django_tasks",
    reason="runs on the django_tasks leg: make test-tasks (tests.settings_tasks)",
)

PROCESS_EVENT = "webhooks_app.queue.django_tasks.process_event"


def task_rows() -> list[tuple[list[Any], str, Any]]:
    """Every task row: its arguments, status and ``run_after`` (None: as soon as possible)."""
    from django_tasks_db.models import DBTaskResult, get_date_max

    return [
        (
            row.args_kwargs["args"],
            row.status,
            None if row.run_after == get_date_max() else row.run_after,
        )
        for row in DBTaskResult.objects.filter(task_path=PROCESS_EVENT).order_by("enqueued_at")
    ]


def make_event(workflow: str = "record", **fields: Any) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source="generic", webhook_id=fields.pop("webhook_id", "evt"), workflow_name=workflow,
        **fields,
    )  # fmt: skip


def test_the_configuration_is_clean_and_db_worker_is_the_apps():
    assert checks.check_queue() == []
    assert get_commands()["db_worker"] == "webhooks_app"


@pytest.mark.django_db(transaction=True)
def test_the_task_row_commits_and_rolls_back_with_its_event():
    with transaction.atomic():
        event = make_event()
        queue.enqueue_in_transaction(event.pk)
        assert task_rows() == [([event.pk], "READY", None)]  # written inside the transaction
        transaction.set_rollback(True)
    assert task_rows() == []
    assert queue.uses_orm_broker() is True


@pytest.mark.django_db(transaction=True)
def test_a_delivery_leaves_one_task_row_for_its_event(post_webhook):
    assert post_webhook(envelope("record", "delivered")).status_code == 202
    event = WebhookEvent.objects.get(webhook_id="delivered")
    assert task_rows() == [([event.pk, "record"], "READY", None)]  # its id, and its workflow
    assert queue.queue_info() == {
        "runner": "django_tasks",
        "broker": "DatabaseBackend",
        "queued": 1,
    }


@pytest.mark.django_db(transaction=True)
def test_health_shows_the_runner_and_its_queue(admin_client):
    queue.enqueue(make_event().pk)
    body = admin_client.get("/webhooks/health/").json()
    assert body["queue"] == {
        "status": "ok",
        "runner": "django_tasks",
        "broker": "DatabaseBackend",
        "queued": 1,
    }


@pytest.mark.django_db(transaction=True)
def test_a_retry_and_a_rate_wake_are_rows_deferred_to_their_time():
    """Kept by the database, not by this process's timer, and not due before their time."""
    event = make_event("fail")
    with override_settings(WEBHOOKS={**webhook_settings.user_settings, "RETRY_BACKOFF": 60}):
        assert tasks.process_event(event.pk) == "failed"
    event.refresh_from_db()
    assert task_rows() == [([event.pk], "READY", event.next_attempt_at)]

    wake = timezone.now() + timedelta(seconds=30)
    queue.enqueue_at(wake, event.pk)
    assert task_rows()[1:] == [([event.pk], "READY", wake)]
    assert not queue._timer._due
    assert queue.broker().queue_size() == 0  # neither is due yet


@pytest.mark.django_db(transaction=True)
def test_a_deferred_retry_runs_on_the_real_worker_when_due_and_not_before():
    event = make_event("span", payload={"fail_attempts": 1})
    with override_settings(WEBHOOKS={**webhook_settings.user_settings, "RETRY_BACKOFF": 2}):
        assert tasks.process_event(event.pk) == "failed"
    event.refresh_from_db()
    env = subprocess_env()
    batch = ["db_worker", "--batch", "--no-reload", "--no-startup-delay"]

    assert manage_py(env, *batch).returncode == 0  # runs what is due: nothing yet
    assert WebhookEvent.objects.get(pk=event.pk).attempts == 1
    time.sleep(max(0.0, (event.next_attempt_at - timezone.now()).total_seconds()) + 0.1)
    done = manage_py(env, *batch)
    assert done.returncode == 0, done.stdout + done.stderr
    event.refresh_from_db()
    assert (event.status, event.attempts) == (EventStatus.SUCCEEDED, 2)
    assert [status for _, status, _ in task_rows()] == ["SUCCESSFUL"]


@pytest.mark.django_db(transaction=True)
def test_cleanup_trims_the_task_rows_of_the_window():
    """Finished rows and the running ones a killed worker left go; tasks still waiting stay."""
    from django_tasks_db.models import DBTaskResult

    statuses = ("SUCCESSFUL", "FAILED", "RUNNING", "READY")
    for status in statuses:
        queue.enqueue(make_event(webhook_id=f"old-{status}").pk)
    old = timezone.now() - timedelta(days=31)
    for row, status in zip(DBTaskResult.objects.all(), statuses, strict=True):
        DBTaskResult.objects.filter(pk=row.pk).update(status=status, enqueued_at=old)
    queue.enqueue(make_event(webhook_id="recent").pk)
    DBTaskResult.objects.filter(enqueued_at__gt=old).update(status="SUCCESSFUL")

    services.cleanup_events(days=30)
    left = {
        (status, at == old)
        for status, at in DBTaskResult.objects.values_list("status", "enqueued_at")
    }
    assert left == {("READY", True), ("SUCCESSFUL", False)}


@pytest.mark.process
def test_the_db_worker_renews_the_lease_of_the_attempt_it_runs(server, cluster):
    """Its heartbeat (started by webhooks_app's db_worker) keeps an attempt that outlasts its
    lease live, and no worker takes it over."""
    lease = webhook_settings.LEASE_SECONDS
    assert deliver(server, envelope("span", "long", seconds=lease * 2 + 1))[0] == 202
    wait_until(lambda: Span.objects.filter(webhook_id="long").exists(), timeout=20)
    started = Span.objects.get(webhook_id="long").started_at
    time.sleep(max(0.0, (started + timedelta(seconds=lease + 1) - timezone.now()).total_seconds()))
    event = WebhookEvent.objects.get(webhook_id="long")
    assert (event.status, event.attempts) == (EventStatus.RUNNING, 1)
    assert event.lease_expires_at > timezone.now()
    wait_until(
        lambda: WebhookEvent.objects.get(webhook_id="long").status == EventStatus.SUCCEEDED,
        timeout=30,
    )
    assert Span.objects.filter(webhook_id="long").count() == 1


@pytest.mark.django_db
def test_the_dashboard_shows_the_runner_and_no_django_q2_clusters(admin_client):
    """db_worker processes publish no cluster state: a "0 clusters seen" card would read as an
    outage."""
    page = admin_client.get("/admin/webhooks_app/webhookevent/dashboard/").content.decode()
    assert "queued (django_tasks: DatabaseBackend)" in page
    assert "clusters seen" not in page
