"""Cleanup with back-dated rows: only finished and old events go, in batches."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule, Task

from webhooks_app import queue, services, tasks
from webhooks_app.effects import once
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.django_db


def make(status: str, age_days: float, n: int = 1) -> None:
    received = timezone.now() - timedelta(days=age_days)
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            source="generic",
            webhook_id=f"{status}-{age_days}-{i}",
            status=status,
            received_at=received,
        )
        for i in range(n)
    )


@pytest.fixture
def rows():
    for status in EventStatus.values:
        make(status, 40, n=3)  # old
        make(status, 5, n=2)  # young
    with once(WebhookEvent.objects.filter(status="succeeded").earliest("received_at"), "effect"):
        pass


def remaining(status: str, older_than_days: float = 30) -> int:
    cutoff = timezone.now() - timedelta(days=older_than_days)
    return WebhookEvent.objects.filter(status=status, received_at__lt=cutoff).count()


def test_only_old_finished_events_are_deleted(rows):
    deleted = services.cleanup_events(days=30, batch_size=2)
    assert deleted == 9  # 3 old each of succeeded, dead, ignored
    for status in ("succeeded", "dead", "ignored"):
        assert remaining(status) == 0
        assert WebhookEvent.objects.filter(status=status).count() == 2  # the young ones stay
    for status in ("pending", "running", "failed"):
        assert remaining(status) == 3  # unfinished events are never deleted
    assert services.cleanup_events(days=30) == 0  # a second run deletes nothing


def test_dry_run_deletes_nothing(rows):
    before = WebhookEvent.objects.count()
    out = StringIO()
    call_command("cleanup_webhook_events", "--days", "30", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "Would delete 9 event(s) older than 30 days."
    assert WebhookEvent.objects.count() == before


def test_command_with_status_filter_and_batches(rows):
    out = StringIO()
    call_command(
        "cleanup_webhook_events",
        "--days",
        "30",
        "--status",
        "dead",
        "--batch-size",
        "1",
        stdout=out,
    )
    assert out.getvalue().strip() == "Deleted 3 event(s) older than 30 days."
    assert remaining("dead") == 0
    assert remaining("succeeded") == 3


def test_window_under_seven_days_needs_force(rows):
    with pytest.raises(CommandError, match="younger than 7 days"):
        call_command("cleanup_webhook_events", "--days", "3", stdout=StringIO())
    out = StringIO()
    call_command("cleanup_webhook_events", "--days", "3", "--force", stdout=out)
    assert "Deleted 15 event(s)" in out.getvalue()  # 9 old + 6 young (5 days) finished ones


def test_unfinished_statuses_are_refused():
    with pytest.raises(services.CleanupRefused, match="Only finished events"):
        services.cleanup_events(days=30, statuses=["pending"])
    with pytest.raises(CommandError):
        call_command("cleanup_webhook_events", "--status", "running", stdout=StringIO())


def test_default_window_is_the_retention_setting(rows, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RETENTION_DAYS": 30}
    out = StringIO()
    call_command("cleanup_webhook_events", stdout=out)
    assert "Deleted 9 event(s) older than 30 days." in out.getvalue()


def test_old_django_q_task_rows_are_trimmed():
    now = timezone.now()
    for name, stopped in (("old", now - timedelta(days=40)), ("new", now)):
        Task.objects.create(
            id=name.ljust(32, "0"),
            name=name,
            func="x",
            started=stopped,
            stopped=stopped,
            success=True,
        )
    services.cleanup_events(days=30)
    assert list(Task.objects.values_list("name", flat=True)) == ["new"]


def test_daily_schedule_exists_and_runs_with_the_retention(rows, settings):
    schedule = Schedule.objects.get(name=queue.CLEANUP_SCHEDULE)
    assert schedule.func == "webhooks_app.tasks.cleanup_expired_events"
    assert schedule.schedule_type == Schedule.DAILY
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RETENTION_DAYS": 30}
    assert tasks.cleanup_expired_events() == 9


def test_purge_deletes_the_selected_events_with_their_effects(rows):
    selected = WebhookEvent.objects.filter(status="succeeded")
    assert services.purge_events(selected) == 5
    assert not WebhookEvent.objects.filter(status="succeeded").exists()
