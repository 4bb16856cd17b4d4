"""Real processes: gunicorn (2 workers) receiving, qcluster running, on the configured database
and broker (SQLite + ORM by default; PostgreSQL + Redis with DATABASE_URL / REDIS_URL)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from tests.conftest import envelope, sign
from tests.processes import wait_until
from tests.testapp.models import Execution
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.process


def post_signed(server, body: bytes):
    return server.request(
        "POST",
        "/webhooks/generic/",
        body,
        {"Content-Type": "application/json", "X-Webhook-Signature": sign(body)},
    )


def event_status(webhook_id: str) -> str | None:
    return (
        WebhookEvent.objects.filter(webhook_id=webhook_id).values_list("status", flat=True).first()
    )


def test_forty_concurrent_duplicates_store_and_run_once(server, cluster):
    body = envelope("record", "same-id-everywhere", n=1)
    barrier = threading.Barrier(40)
    results: list[tuple[int, object]] = []
    lock = threading.Lock()

    def deliver() -> None:
        barrier.wait()
        status, answer, _ = post_signed(server, body)
        with lock:
            results.append((status, answer))

    threads = [threading.Thread(target=deliver) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    statuses = Counter(status for status, _ in results)
    assert statuses == {202: 1, 200: 39}, results
    assert all(answer["status"] == "duplicate" for status, answer in results if status == 200)
    assert WebhookEvent.objects.filter(webhook_id="same-id-everywhere").count() == 1
    wait_until(lambda: event_status("same-id-everywhere") == EventStatus.SUCCEEDED, timeout=30)
    # Give a wrongly duplicated task time to run, then count the workflow's executions.
    post_signed(server, envelope("record", "marker"))
    wait_until(lambda: event_status("marker") == EventStatus.SUCCEEDED, timeout=30)
    assert Execution.objects.filter(webhook_id="same-id-everywhere").count() == 1


def test_accepted_event_succeeds_within_seconds(server, cluster):
    status, answer, _ = post_signed(server, envelope("record", "e2e-ok", hello="world"))
    assert status == 202, answer
    wait_until(lambda: event_status("e2e-ok") == EventStatus.SUCCEEDED, timeout=20)
    event = WebhookEvent.objects.get(webhook_id="e2e-ok")
    assert event.result == {"echo": {"hello": "world"}}
    assert event.attempts == 1
    assert event.started_at and event.finished_at and event.finished_at >= event.started_at
    assert [entry["outcome"] for entry in event.history] == ["succeeded"]


def test_failing_workflow_is_dead_after_max_attempts(server, cluster, settings):
    max_attempts = settings.WEBHOOKS["MAX_ATTEMPTS"]
    status, answer, _ = post_signed(server, envelope("fail", "e2e-poison"))
    assert status == 202, answer
    wait_until(lambda: event_status("e2e-poison") == EventStatus.DEAD, timeout=30)
    event = WebhookEvent.objects.get(webhook_id="e2e-poison")
    assert event.attempts == max_attempts
    assert [entry["outcome"] for entry in event.history] == ["failed"] * max_attempts
    assert "ValueError: boom on attempt" in event.error
    assert Execution.objects.filter(webhook_id="e2e-poison").count() == max_attempts
