"""Real processes: gunicorn (2 workers) receiving, qcluster running, on the configured database
and broker (SQLite + ORM by default; PostgreSQL + Redis with DATABASE_URL / REDIS_URL)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.conf import settings

from tests.conftest import envelope, sign
from tests.processes import wait_until
from tests.testapp.models import Execution
from webhooks_app import services
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

    # Dead stays dead: a later event drains through the same cluster, the poison does not run.
    post_signed(server, envelope("record", "after-poison"))
    wait_until(lambda: event_status("after-poison") == EventStatus.SUCCEEDED, timeout=30)
    assert Execution.objects.filter(webhook_id="e2e-poison").count() == max_attempts

    # Replay runs it exactly once more (and, failing again, it is dead again).
    assert services.replay_events(WebhookEvent.objects.filter(webhook_id="e2e-poison")) == 1
    wait_until(
        lambda: WebhookEvent.objects.filter(
            webhook_id="e2e-poison", status=EventStatus.DEAD, attempts=max_attempts + 1
        ).exists(),
        timeout=30,
    )
    post_signed(server, envelope("record", "after-replay"))
    wait_until(lambda: event_status("after-replay") == EventStatus.SUCCEEDED, timeout=30)
    assert Execution.objects.filter(webhook_id="e2e-poison").count() == max_attempts + 1


def test_github_push_runs_once_and_a_redelivery_is_a_duplicate(server, cluster):
    from webhooks_app.schemes.github import GitHubScheme

    body = b'{"ref": "refs/heads/main", "after": "0123abc"}'
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        **GitHubScheme().sign(
            body, settings.SECRET_A, webhook_id="72d3162e-cc78-11e3-81ab-4c9367dc0958"
        ),
    }
    status, answer, _ = server.request("POST", "/webhooks/github/", body, headers)
    assert status == 202, answer
    delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    wait_until(lambda: event_status(delivery) == EventStatus.SUCCEEDED, timeout=20)
    event = WebhookEvent.objects.get(webhook_id=delivery)
    assert (event.source, event.event_type, event.workflow_name) == ("github", "push", "record")
    assert event.headers["x-github-event"] == "push"
    assert "x-hub-signature-256" not in event.headers

    # "Redeliver" in GitHub's UI: the same X-GitHub-Delivery, later.
    status, answer, _ = server.request("POST", "/webhooks/github/", body, headers)
    assert status == 200 and answer["status"] == "duplicate", answer
    assert answer["event_status"] == "succeeded"
    assert Execution.objects.filter(webhook_id=delivery).count() == 1


def test_a_workflow_over_the_timeout_is_a_failed_attempt_and_retried(server, cluster):
    """django-q2 interrupts it at Q_CLUSTER['timeout'] (5 s in the test settings)."""
    max_attempts = settings.WEBHOOKS["MAX_ATTEMPTS"]
    status, answer, _ = post_signed(server, envelope("sleep", "too-slow", seconds=30))
    assert status == 202, answer
    wait_until(lambda: event_status("too-slow") == EventStatus.DEAD, timeout=60, interval=0.5)
    event = WebhookEvent.objects.get(webhook_id="too-slow")
    assert event.attempts == max_attempts
    assert [entry["outcome"] for entry in event.history] == ["failed"] * max_attempts
    assert "exceeded maximum timeout" in event.error
    assert all(4 <= entry["duration_ms"] / 1000 < 10 for entry in event.history)


def test_health_sees_the_running_cluster(server, cluster, staff_session):
    def clusters():
        # Cluster details are for staff; anonymous callers learn up/down only.
        status, body, _ = server.request("GET", "/webhooks/health/", headers=staff_session)
        assert status == 200 and body["database"] == "ok"
        # A starting cluster reports itself before its workers are up.
        return [c for c in body["queue"]["clusters"] if c["workers"] == 2]

    assert wait_until(clusters, timeout=20, interval=0.5)
