"""Prometheus metrics (contract §11, issue 14): who may scrape ``/webhooks/metrics/``, the
families read from the database, the counts of deliveries and attempts, and their exactness
across a node's real processes (two gunicorn workers, a qcluster, uvicorn) through
prometheus_client's multiprocess mode."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import envelope, queued_tasks, sign
from tests.processes import (
    Cluster,
    Server,
    UvicornServer,
    deliver,
    running,
    subprocess_env,
    wait_until,
)
from tests.settings_metrics import METRICS_TOKEN
from webhooks_app import metrics, testing
from webhooks_app.checks import check_metrics, message
from webhooks_app.exceptions import InvalidSignature, UnknownSource
from webhooks_app.models import EventStatus, WebhookEvent

URL = "/webhooks/metrics/"
WITH_TOKEN = {**settings.WEBHOOKS, "METRICS_TOKEN": METRICS_TOKEN}
BEARER = {"Authorization": f"Bearer {METRICS_TOKEN}"}
#: Every family the contract names, as the parser names them (a counter without ``_total``).
FAMILIES = {
    "webhooks_events",
    "webhooks_queue_depth",
    "webhooks_oldest_pending_seconds",
    "webhooks_received",
    "webhooks_attempt_seconds",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def _fresh_metrics() -> None:
    """No count of an earlier test in this process, and no event counts cached by one."""
    metrics.reset()
    cache.delete(metrics.state_cache_key())


def parse(text: str) -> tuple[set[str], Samples]:
    families = list(text_string_to_metric_families(text))
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return {family.name for family in families}, samples


def labelled(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples called ``name``, by the values of ``labels``."""
    return {
        tuple(dict(key)[label] for label in labels): value
        for (sample, key), value in samples.items()
        if sample == name
    }


def received(samples: Samples) -> Counter[tuple[str, str]]:
    return Counter(
        {
            key: int(value)
            for key, value in labelled(
                samples, "webhooks_received_total", "source", "outcome"
            ).items()
        }
    )


def scrape(client: Client, **headers: str) -> Samples:
    response = client.get(URL, headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.content.decode())[1]


def staff(django_user_model: Any, *perms: str, is_staff: bool = True) -> Client:
    user = django_user_model.objects.create_user("op", password="unused", is_staff=is_staff)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


# Who may scrape


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {METRICS_TOKEN}"}],
    ids=["anonymous", "wrong-token", "not-bearer"],
)
def test_a_scrape_without_credentials_is_401_with_no_data(client, db, headers):
    with override_settings(WEBHOOKS=WITH_TOKEN):
        response = client.get(URL, headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="webhooks_app"'
    assert b"webhooks_" not in response.content


def test_no_token_is_accepted_while_none_is_set(client, db):
    """``METRICS_TOKEN`` is empty by default: an empty bearer must not match it."""
    for authorization in ("Bearer ", "Bearer", "Bearer  "):
        response = client.get(URL, headers={"Authorization": authorization})
        assert response.status_code == 401, authorization
        assert b"webhooks_" not in response.content


@pytest.mark.parametrize(
    ("perms", "is_staff"),
    [((), True), (("view_webhookevent",), False)],
    ids=["staff-without-permission", "permission-without-staff"],
)
def test_a_session_that_may_not_view_events_is_403_with_no_data(
    db, django_user_model, perms, is_staff
):
    response = staff(django_user_model, *perms, is_staff=is_staff).get(URL)
    assert response.status_code == 403
    assert b"webhooks_" not in response.content


def test_the_token_and_a_staff_session_may_scrape(client, db, django_user_model):
    with override_settings(WEBHOOKS=WITH_TOKEN):
        response = client.get(URL, headers=BEARER)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    metrics.observe_attempt("record", 0.2)  # so that the histogram has a sample to show
    testing.deliver(client, "generic", {"workflow_name": "record"})
    session = staff(django_user_model, "view_webhookevent").get(URL)
    assert session.status_code == 200
    families, _ = parse(session.content.decode())
    assert families >= FAMILIES


def test_a_scraper_that_accepts_only_text_plain_gets_the_exposition(admin_client):
    """Prometheus sends an Accept header DRF has no renderer for: never a 406."""
    for accept in ("text/plain;version=0.0.4", "application/openmetrics-text;version=1.0.0"):
        response = admin_client.get(URL, headers={"Accept": accept})
        assert response.status_code == 200, accept
        assert response["Content-Type"].startswith("text/plain; version=0.0.4")


# What the database and the broker say


def stored(source: str, workflow: str, status: str, **fields: Any) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source=source,
        webhook_id=f"{source}-{WebhookEvent.objects.count()}",
        workflow_name=workflow,
        status=status,
        **fields,
    )


def test_the_event_gauges_are_the_database_counts(
    admin_client, post_webhook, django_capture_on_commit_callbacks
):
    now = timezone.now()
    for _ in range(2):
        stored("generic", "record", EventStatus.SUCCEEDED)
    stored("generic", "record", EventStatus.DEAD)
    stored("generic", "record", EventStatus.PENDING, received_at=now - timedelta(seconds=600))
    # Received an hour ago but replayed a minute ago: it has waited a minute.
    stored(
        "generic",
        "record",
        EventStatus.PENDING,
        received_at=now - timedelta(hours=1),
        next_attempt_at=now - timedelta(seconds=60),
    )
    stored("github", "", EventStatus.IGNORED)
    stored("stripe", "charge", EventStatus.FAILED)
    with django_capture_on_commit_callbacks(execute=True):  # where the broker enqueues
        assert post_webhook(envelope("record", "evt-queued")).status_code == 202

    samples = scrape(admin_client)

    zero = dict.fromkeys(EventStatus.values, 0.0)
    expected = {
        ("generic", "record"): {**zero, "succeeded": 2, "dead": 1, "pending": 3},
        ("github", ""): {**zero, "ignored": 1},
        ("stripe", "charge"): {**zero, "failed": 1},
    }
    assert labelled(samples, "webhooks_events", "source", "workflow", "status") == {
        (source, workflow, status): count
        for (source, workflow), by_status in expected.items()
        for status, count in by_status.items()
    }
    oldest = samples[("webhooks_oldest_pending_seconds", frozenset())]
    assert 600 <= oldest < 600 + 30
    assert samples[("webhooks_queue_depth", frozenset())] == queued_tasks() == 1


def test_with_nothing_pending_the_oldest_pending_is_zero(admin_client):
    stored("generic", "record", EventStatus.SUCCEEDED)
    samples = scrape(admin_client)
    assert samples[("webhooks_oldest_pending_seconds", frozenset())] == 0


def test_concurrent_scrapers_share_one_count_for_a_while(admin_client):
    """Within ``STATE_SECONDS`` a scrape reads the counts from the cache: not one query on
    the events table, whatever its size."""
    stored("generic", "record", EventStatus.SUCCEEDED)
    first = scrape(admin_client)
    stored("generic", "record", EventStatus.SUCCEEDED)
    with CaptureQueriesContext(connection) as queries:
        second = scrape(admin_client)
    table = WebhookEvent._meta.db_table
    assert not [query for query in queries.captured_queries if table in query["sql"]]
    assert second == first
    cache.delete(metrics.state_cache_key())  # as when STATE_SECONDS have passed
    third = scrape(admin_client)
    succeeded = [
        labelled(samples, "webhooks_events", "status")[("succeeded",)] for samples in (first, third)
    ]
    assert succeeded == [1, 2]


# What happened: deliveries by outcome, attempts by workflow


def test_every_outcome_is_counted_by_source(client, post_webhook, admin_client):
    expected: Counter[tuple[str, str]] = Counter()

    def expect(response: Any, status: int, source: str, outcome: str) -> None:
        assert response.status_code == status, response.content
        expected[(source, outcome)] += 1

    for i in range(3):
        expect(post_webhook(envelope("record", f"evt-{i}")), 202, "generic", "accepted")
    for _ in range(2):
        expect(post_webhook(envelope("record", "evt-0")), 200, "generic", "duplicate")
    ignored = testing.deliver(client, "github", {"zen": "hi"}, event_type="issues")
    expect(ignored, 200, "github", "ignored")
    for _ in range(4):
        bad = post_webhook(envelope("record", "evt-x"), signature="sha256=" + "0" * 64)
        expect(bad, 401, "generic", "invalid_signature")
    missing = post_webhook(envelope("record", "evt-x"), signature=None)
    expect(missing, 401, "generic", "missing_signature")
    for name in ("nope", "invented"):  # names from the URL: one label for all of them
        expect(post_webhook(envelope(), url=f"/webhooks/{name}/"), 404, "(other)", "unknown_source")
    expect(post_webhook(envelope("no_such_workflow")), 422, "generic", "unknown_workflow")
    expect(post_webhook(b'{"workflow_name": '), 400, "generic", "invalid_json")
    plain = post_webhook(envelope(), content_type="text/plain")
    expect(plain, 415, "generic", "unsupported_media_type")
    expect(client.get("/webhooks/generic/"), 405, "generic", "method_not_allowed")
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "MAX_BODY_BYTES": 10}):
        expect(post_webhook(envelope()), 413, "generic", "payload_too_large")

    assert received(scrape(admin_client)) == expected


def test_handshakes_are_counted(client, admin_client):
    sources = {
        "slack": {"SCHEME": "slack", "SECRETS": ["slack-secret-0123456789abcdef"]},
        "whatsapp": {"SCHEME": "whatsapp", "SECRETS": ["app-secret"], "VERIFY_TOKEN": "vt-1"},
    }
    challenge = {"type": "url_verification", "token": "t", "challenge": "c-123"}
    query = {"hub.mode": "subscribe", "hub.challenge": "42"}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": sources}):
        assert testing.deliver(client, "slack", challenge).json() == {"challenge": "c-123"}
        meta = client.get("/webhooks/whatsapp/", {**query, "hub.verify_token": "vt-1"})
        assert meta.content == b"42"
        refused = client.get("/webhooks/whatsapp/", {**query, "hub.verify_token": "wrong"})
        assert refused.status_code == 403
    assert received(scrape(admin_client)) == {
        ("slack", "handshake"): 1,
        ("whatsapp", "handshake"): 1,
        ("whatsapp", refused.json()["error"]): 1,
    }


def test_a_refusal_is_counted_without_a_query(
    post_webhook, admin_client, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = post_webhook(envelope(), signature="sha256=" + "0" * 64)
    assert response.status_code == 401
    assert received(scrape(admin_client)) == {("generic", "invalid_signature"): 1}


def test_invented_source_names_are_bounded(admin_client):
    """The ASGI body limit refuses an oversized body to any source name the URL invents."""
    for i in range(metrics.MAX_REFUSED_SOURCES + 50):
        metrics.count_refusal(f"invented-{i}", InvalidSignature())
    metrics.count_refusal("invented-0", InvalidSignature())  # one already counted
    metrics.count_refusal("never-configured", UnknownSource())
    counts = received(scrape(admin_client))
    assert len(counts) == metrics.MAX_REFUSED_SOURCES + 2
    assert counts[("invented-0", "invalid_signature")] == 2
    assert counts[("(other)", "invalid_signature")] == 50
    assert counts[("(other)", "unknown_source")] == 1


def attempt_counts(samples: Samples) -> dict[str, float]:
    return {
        workflow: value
        for (workflow,), value in labelled(
            samples, "webhooks_attempt_seconds_count", "workflow"
        ).items()
    }


def assert_histogram_consistent(samples: Samples, workflow: str) -> None:
    buckets = sorted(
        (float(le), value)
        for (le, w), value in labelled(
            samples, "webhooks_attempt_seconds_bucket", "le", "workflow"
        ).items()
        if w == workflow
    )
    counts = [value for _, value in buckets]
    assert counts == sorted(counts)  # cumulative
    assert buckets[-1] == (float("inf"), attempt_counts(samples)[workflow])
    sum_key = ("webhooks_attempt_seconds_sum", frozenset({"workflow": workflow}.items()))
    assert samples[sum_key] > 0


def test_each_attempt_is_observed_under_its_workflow(post_webhook, admin_client):
    for i in range(2):
        post_webhook(envelope("record", f"evt-{i}"))
    post_webhook(envelope("fail", "evt-fail"))
    for _ in range(settings.WEBHOOKS["MAX_ATTEMPTS"]):  # RETRY_BACKOFF 0: each call retries
        testing.run_events()
    assert WebhookEvent.objects.get(webhook_id="evt-fail").status == EventStatus.DEAD
    samples = scrape(admin_client)
    assert attempt_counts(samples) == {"record": 2, "fail": settings.WEBHOOKS["MAX_ATTEMPTS"]}
    assert_histogram_consistent(samples, "record")
    assert_histogram_consistent(samples, "fail")


# The multiprocess directory's system check


def test_an_unusable_multiprocess_directory_is_a_warning(monkeypatch, tmp_path):
    monkeypatch.delenv(metrics.MULTIPROC_ENV, raising=False)
    assert check_metrics() == []
    monkeypatch.setenv(metrics.MULTIPROC_ENV, str(tmp_path))
    assert check_metrics() == []
    for path in (tmp_path / "missing", tmp_path / "a-file", ""):
        if path and path.name == "a-file":
            path.write_text("")
        monkeypatch.setenv(metrics.MULTIPROC_ENV, str(path))
        assert check_metrics() == [message("W009", path=str(path), problem="it is not a directory")]


def test_the_unusable_directory_message():
    assert message("W009", path="/run/m", problem="it is not a directory").msg == (
        "PROMETHEUS_MULTIPROC_DIR is '/run/m', but it is not a directory: no delivery or "
        "attempt is counted for /webhooks/metrics/."
    )


# Real processes: one node's gunicorn workers, its qcluster, uvicorn


def node_env(directory: Path) -> dict[str, str]:
    """A node's processes: the token, and one multiprocess directory for all of them."""
    return subprocess_env(
        DJANGO_SETTINGS_MODULE="tests.settings_metrics", PROMETHEUS_MULTIPROC_DIR=str(directory)
    )


def scrape_server(server: Server) -> Samples:
    status, body, headers = server.request("GET", URL, headers=BEARER)
    assert status == 200, body
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert isinstance(body, str)
    return parse(body)[1]


def half_sent(port: int, body: bytes) -> socket.socket:
    """A signed delivery whose body stops halfway: the worker that took it waits in the view,
    so the requests sent meanwhile are answered by the other worker."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        "POST /webhooks/generic/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nX-Webhook-Signature: {sign(body)}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:10])
    return sock


def finish(sock: socket.socket, body: bytes) -> int:
    """Send the rest of :func:`half_sent`'s body; the answer's status."""
    with sock:
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def counting_pids(directory: Path, kind: str = "counter") -> set[int]:
    """The processes whose files of ``kind`` are in the multiprocess directory."""
    return {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob(f"{kind}_*.db")}


@pytest.mark.process
def test_counts_are_exact_across_two_gunicorn_workers(transactional_db, tmp_path):
    server = Server(workers=2, env=node_env(tmp_path))
    expected: Counter[tuple[str, str]] = Counter()

    def expect(status: int, wanted: int, source: str, outcome: str) -> None:
        assert status == wanted
        expected[(source, outcome)] += 1

    def post(path: str, body: bytes, **headers: str) -> int:
        return server.request("POST", path, body, {"Content-Type": "application/json", **headers})[
            0
        ]

    with running(server):
        stalled_body = envelope("record", "evt-stalled")
        stalled = half_sent(server.port, stalled_body)
        time.sleep(0.5)  # a worker has taken it and waits for the rest
        for i in range(5):
            expect(deliver(server, envelope("record", f"evt-{i}"))[0], 202, "generic", "accepted")
        expect(finish(stalled, stalled_body), 202, "generic", "accepted")
        for _ in range(3):
            expect(deliver(server, envelope("record", "evt-1"))[0], 200, "generic", "duplicate")
        for i in range(2):
            body, headers = testing.signed_request(
                "github", {"zen": "hi", "n": i}, event_type="issues"
            )
            expect(post("/webhooks/github/", body, **headers), 200, "github", "ignored")
        for _ in range(4):
            wrong = post("/webhooks/generic/", envelope(), **{"X-Webhook-Signature": "sha256=00"})
            expect(wrong, 401, "generic", "invalid_signature")
        for _ in range(2):
            expect(post("/webhooks/generic/", envelope()), 401, "generic", "missing_signature")
        for name in ("nope", "invented"):
            expect(deliver(server, envelope(), source=name)[0], 404, "(other)", "unknown_source")
        expect(deliver(server, envelope("no_such_workflow"))[0], 422, "generic", "unknown_workflow")
        expect(deliver(server, b'{"workflow_name": ')[0], 400, "generic", "invalid_json")
        plain = server.request("POST", "/webhooks/generic/", b"x", {"Content-Type": "text/plain"})
        expect(plain[0], 415, "generic", "unsupported_media_type")
        method = server.request("GET", "/webhooks/generic/")[0]
        expect(method, 405, "generic", "method_not_allowed")

        pids = counting_pids(tmp_path)
        assert len(pids) == 2 and all(os.getpgid(pid) == server.popen.pid for pid in pids)
        for _ in range(3):  # whichever worker answers the scrape adds up both
            assert received(scrape_server(server)) == expected
        anonymous = server.request("GET", URL)
        assert anonymous[0] == 401 and "webhooks_" not in str(anonymous[1])


@pytest.mark.process
def test_the_histogram_counts_the_attempts_a_real_qcluster_ran(transactional_db, tmp_path):
    env = node_env(tmp_path)
    server, cluster = Server(workers=2, env=env), Cluster(env=env)
    attempts = settings.WEBHOOKS["MAX_ATTEMPTS"]
    with running(server, cluster):
        for i in range(4):
            assert deliver(server, envelope("record", f"evt-{i}"))[0] == 202
        assert deliver(server, envelope("fail", "evt-fail"))[0] == 202
        wait_until(
            lambda: attempt_counts(scrape_server(server)) == {"record": 4, "fail": attempts},
            timeout=60,
            interval=0.5,
        )
        assert WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED).count() == 4
        assert WebhookEvent.objects.get(webhook_id="evt-fail").status == EventStatus.DEAD
        cache.delete(metrics.state_cache_key())  # counts from now, not from a wait's scrape
        samples = scrape_server(server)
        assert_histogram_consistent(samples, "record")
        events = labelled(samples, "webhooks_events", "workflow", "status")
        assert (events[("record", "succeeded")], events[("fail", "dead")]) == (4, 1)
        # Observed in the cluster's workers, scraped through the web server.
        observers = counting_pids(tmp_path, "histogram")
        assert observers and all(os.getpgid(pid) == cluster.popen.pid for pid in observers)


@pytest.mark.process
def test_uvicorn_counts_its_body_limit_refusals_too(transactional_db, tmp_path):
    server = UvicornServer(workers=1, env=node_env(tmp_path))
    with running(server):
        assert deliver(server, envelope("record", "evt-1"))[0] == 202
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(
                b"POST /webhooks/generic/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n"
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 413")
        assert received(scrape_server(server)) == {
            ("generic", "accepted"): 1,
            ("generic", "payload_too_large"): 1,
        }


@pytest.mark.process
def test_a_missing_multiprocess_directory_never_costs_a_delivery(transactional_db, tmp_path):
    """Counting fails (W009), the delivery does not: it is stored and answered 202, and each
    process says so once in its log, not once per delivery."""
    server = Server(workers=2, env=node_env(tmp_path / "missing"))
    with running(server):
        for i in range(6):
            assert deliver(server, envelope("record", f"evt-{i}"))[0] == 202
            assert deliver(server, envelope("record", "evt-x"), source="nope")[0] == 404
        assert WebhookEvent.objects.count() == 6
    lines = server.output().count("Metrics are not counted")
    assert 1 <= lines <= 2
