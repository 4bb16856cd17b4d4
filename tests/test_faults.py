"""Faults at receipt, with real processes: the database or the broker unreachable.

"Unreachable" is a server pointed at an address where nothing listens, so the shared
PostgreSQL and Redis of the test run are never stopped; the processes and the refusals are real.
Outages of real servers under load (PostgreSQL stopped, Redis killed, a full disk, a slow or cut
link) are ``python -m bench.soak --faults``, on servers it owns (bench/servers.py); CI runs its
smoke.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from tests.conftest import envelope, queued_tasks, sign
from tests.processes import REPO, Cluster, Server, free_port, subprocess_env, wait_until
from tests.testapp.models import Execution
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.process

REAL_REDIS = "redis://127.0.0.1:6379/0"


def post_signed(server: Server, body: bytes):
    return server.request(
        "POST", "/webhooks/generic/", body,
        {"Content-Type": "application/json", "X-Webhook-Signature": sign(body)},
    )  # fmt: skip


def unreachable_database_env() -> dict[str, str]:
    if connection.vendor == "sqlite":
        return subprocess_env(WEBHOOKS_TEST_SUBPROCESS_DB=str(Path("/nonexistent-dir/db.sqlite3")))
    return subprocess_env(WEBHOOKS_TEST_DB_PORT=str(free_port()))


def test_database_down_is_a_fast_503_then_the_retry_is_accepted_once(server, cluster):
    body = envelope("record", "db-down-1")
    down = Server(workers=1, env=unreachable_database_env())
    try:
        started = time.monotonic()
        status, answer, headers = post_signed(down, body)
        elapsed = time.monotonic() - started
    finally:
        down.stop()
    assert status == 503, answer
    assert answer["error"] == "unavailable"
    assert int(headers["Retry-After"]) > 0
    assert elapsed < 5
    assert not WebhookEvent.objects.exists()
    assert queued_tasks() == 0
    health = Server(workers=1, env=unreachable_database_env())
    try:
        assert health.request("GET", "/webhooks/health/")[0] == 503
    finally:
        health.stop()

    # The database is back: the sender's retry of the same delivery is accepted and runs once.
    status, answer, _ = post_signed(server, body)
    assert status == 202, answer
    wait_until(
        lambda: WebhookEvent.objects.get(webhook_id="db-down-1").status == EventStatus.SUCCEEDED, 30
    )
    assert Execution.objects.filter(webhook_id="db-down-1").count() == 1


def test_redis_down_at_receipt_is_stored_then_recovered_and_run_once(transactional_db):
    """Redis broker deployment: 2xx only because the row committed; after Redis is back,
    recovery enqueues it and it runs exactly once (a sender retry meanwhile changes nothing)."""
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    web = Server(workers=1, env=subprocess_env(REDIS_URL=dead_redis))
    try:
        body = envelope("record", "redis-down-1")
        status, answer, _ = post_signed(web, body)
        assert status == 202, answer  # the row committed; the enqueue after commit failed
        assert WebhookEvent.objects.get(webhook_id="redis-down-1").status == EventStatus.PENDING
        assert post_signed(web, body)[0] == 200  # the sender's retry: a duplicate
        # Deliveries are still stored, so the load balancer keeps the node: 200, queue down.
        assert web.request("GET", "/webhooks/health/")[:2] == (
            200,
            {"database": "ok", "queue": {"status": "unavailable"}},
        )
    finally:
        web.stop()
    assert "stays pending until recovery" in web.output()

    redis_env = subprocess_env(REDIS_URL=REAL_REDIS, WEBHOOKS_TEST_QUEUE=f"faults-{free_port()}")
    WebhookEvent.objects.filter(webhook_id="redis-down-1").update(
        received_at=WebhookEvent.objects.get(webhook_id="redis-down-1").received_at.replace(
            year=2000
        )
    )  # older than the grace period, as it would be a minute later
    # Before any cluster runs: a running worker's heartbeat would recover it first.
    recovered = subprocess.run(
        [sys.executable, "manage.py", "recover_webhook_events"],
        cwd=REPO, env=redis_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "Recovered: 1 pending" in recovered.stdout, recovered.stderr
    cluster = Cluster(env=redis_env)
    try:
        wait_until(
            lambda: (
                WebhookEvent.objects.get(webhook_id="redis-down-1").status == EventStatus.SUCCEEDED
            ),
            30,
        )
    finally:
        cluster.stop()
    assert Execution.objects.filter(webhook_id="redis-down-1").count() == 1
