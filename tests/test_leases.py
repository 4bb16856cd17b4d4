"""Leases (contract §6) with real qcluster processes: an attempt whose worker is gone is taken
back and run again; one whose worker is alive (past django-q2's timeout, or orphaned by its
cluster's main process) is never taken over, so one event's workflow never runs twice at once.

The test settings lease an attempt for 3 s (``LEASE_SECONDS``), renewed every second.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings

from tests.conftest import envelope
from tests.processes import (
    Cluster,
    deliver,
    running,
    stop_all,
    wait_for_workers,
    wait_until,
)
from tests.testapp.models import Span
from tests.testapp.spans import overlapping
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.process

LEASE = settings.WEBHOOKS["LEASE_SECONDS"]


def event(webhook_id: str) -> WebhookEvent:
    return WebhookEvent.objects.get(webhook_id=webhook_id)


def spans(webhook_id: str) -> list[Span]:
    return list(Span.objects.filter(webhook_id=webhook_id).order_by("started_at"))


def outcomes(webhook_id: str) -> list[str]:
    return [entry["outcome"] for entry in event(webhook_id).history]


def started(webhook_id: str) -> None:
    wait_until(lambda: Span.objects.filter(webhook_id=webhook_id).exists(), timeout=20)


def finished(webhook_id: str, timeout: float = 30) -> str:
    """Wait until the event is succeeded or dead; returns which."""
    done = (EventStatus.SUCCEEDED, EventStatus.DEAD)
    wait_until(lambda: event(webhook_id).status in done, timeout=timeout)
    return event(webhook_id).status


def test_kill_9_of_every_qcluster_then_a_restart_runs_the_attempt_again(server):
    """Every process of the cluster dies mid-attempt (with Redis its task dies too): the
    restarted cluster's workers find the lapsed lease and run the event again."""
    first = Cluster()
    try:
        assert deliver(server, envelope("span", "killed", seconds=2))[0] == 202
        started("killed")
    finally:
        first.kill()
    assert event("killed").status == EventStatus.RUNNING

    with running(Cluster()):
        # The contract's bound; with a 3 s lease it takes about lease + the 2 s sleep.
        assert finished("killed", timeout=60) == EventStatus.SUCCEEDED
    lost = event("killed").history[0]
    assert outcomes("killed") == ["lost", "succeeded"]
    assert lost["lease_lapsed"] is True and lost["attempt"] == 1
    killed, again = spans("killed")
    assert killed.ended_at is None and (killed.attempt, again.attempt) == (1, 2)


def test_an_attempt_that_swallows_the_timeout_is_never_taken_over(server, cluster):
    """The workflow catches django-q2's timeout (a SIGALRM at ``timeout`` s) and runs on: its
    worker is alive and renews its lease, so the cluster's other worker, whose heartbeat takes
    back lapsed leases every second, must not start it again meanwhile.

    It runs 2 s past the timeout but stops before django-q2's guard kills the worker (at
    ``timeout`` + 3 s): a killed worker would be a lost attempt, legitimately run again.
    """
    timeout = settings.Q_CLUSTER["timeout"]
    seconds = timeout + 2
    assert seconds > LEASE
    assert deliver(server, envelope("swallow_timeout", "stubborn", seconds=seconds))[0] == 202
    status = finished("stubborn")
    records = spans("stubborn")
    assert not overlapping(records), records
    assert status == EventStatus.SUCCEEDED
    assert len(records) == 1, records
    assert records[0].ended_at - records[0].started_at >= timedelta(seconds=seconds)
    assert outcomes("stubborn") == ["succeeded"]


def test_an_orphaned_worker_keeps_its_attempt_while_another_cluster_runs(server):
    """SIGKILL only the main ``qcluster`` process of the node running the attempt: its sentinel
    and workers run on, orphaned. The other node sees a live lease (the orphan renews it) and
    must not run the event too, though the attempt outlasts the lease (and the heartbeat that
    would take a lapsed one back); it stays under django-q2's timeout, which would end it.

    Both nodes are up before the delivery, so the other one is surely watching the whole time
    the orphan runs (a node started after the kill might come up only as the attempt ends).
    """
    seconds = settings.Q_CLUSTER["timeout"] - 0.5
    assert seconds > LEASE + 1
    nodes = Cluster(), Cluster()
    try:
        wait_for_workers(*nodes)
        assert deliver(server, envelope("span", "orphaned", seconds=seconds))[0] == 202
        started("orphaned")
        (pid,) = {record.pid for record in spans("orphaned")}
        (orphaned,) = [node for node in nodes if node.owns(pid)]
        orphaned.kill_main()
        status = finished("orphaned")
        records = spans("orphaned")
        assert not overlapping(records), records
        assert status == EventStatus.SUCCEEDED
        assert len(records) == 1, records
    finally:
        stop_all(*nodes)  # the orphaned group too
    assert outcomes("orphaned") == ["succeeded"]
