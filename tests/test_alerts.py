"""Alerts (contract §11): each kind opens and closes once, against a real local HTTP receiver
and Django's locmem outbox; failing and hanging URLs; two evaluations at once; the signature,
checked by the app's own Standard Webhooks scheme; the schedule, the command, the API, the
dashboard and the admin. Back-dated rows stand in for the passing of time."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from typing import Any

import django
import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.test import APIClient

from tests.conftest import ago, client_with, queued_tasks
from webhooks_app import alerts, queue, signals, tasks
from webhooks_app.exceptions import InvalidSignature
from webhooks_app.models import EventStatus, WebhookAlert, WebhookEvent
from webhooks_app.schemes.base import InboundRequest
from webhooks_app.schemes.standard import StandardWebhooksScheme

pytestmark = pytest.mark.django_db(transaction=True)  # notifications follow the commit

ADMINS = [("Ops", "ops@example.com")] if django.VERSION < (6,) else ["ops@example.com"]
ALERTS_API = "/webhooks/api/alerts/"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Sink:
    """A real HTTP receiver on a local port (``http.server`` in a thread): records every POST,
    then answers each path with the status the test set (200 by default), after the delay the
    test set (none by default)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with sink._lock:
                    sink.received.append(Received(self.path, headers, body))
                time.sleep(sink.delay.get(self.path, 0))
                self.send_response(sink.status.get(self.path, 200))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out has hung up on a late answer

        self.server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[Any]:
        with self._lock:
            return [request.json for request in self.received if request.path == path]

    def states(self, path: str) -> list[str]:
        return [body["state"] for body in self.bodies(path)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    receiver = Sink()
    yield receiver
    receiver.close()


@pytest.fixture
def notified() -> Iterator[list[tuple[str, str]]]:
    """``(signal, rule)`` for every alert signal sent, from any thread."""
    sent: list[tuple[str, str]] = []

    def raised(sender: Any, alert: WebhookAlert, **kwargs: Any) -> None:
        sent.append(("raised", alert.rule))

    def resolved(sender: Any, alert: WebhookAlert, **kwargs: Any) -> None:
        sent.append(("resolved", alert.rule))

    signals.alert_raised.connect(raised)
    signals.alert_resolved.connect(resolved)
    yield sent
    signals.alert_raised.disconnect(raised)
    signals.alert_resolved.disconnect(resolved)


def configure(settings: Any, rules: list[dict[str, Any]], urls: list[str], **extra: Any) -> None:
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALERTS": rules, "ALERT_URLS": urls, **extra}


def make_events(count: int, status: str, **fields: Any) -> None:
    start = WebhookEvent.objects.count()
    fields = {"source": "generic", "workflow_name": "record", **fields}
    WebhookEvent.objects.bulk_create(
        WebhookEvent(webhook_id=f"e{start + n}", status=status, **fields) for n in range(count)
    )


# Each kind: its rule, what makes it hold, what makes it stop holding (and, for silence, the
# delivery that makes it not hold to begin with).


def _failure_rate_holds() -> None:
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    make_events(1, EventStatus.SUCCEEDED, finished_at=ago(10))


@dataclass(frozen=True)
class Case:
    rule: dict[str, Any]
    hold: Callable[[], None]
    release: Callable[[], None]
    start: Callable[[], None] = lambda: None


CASES = {
    "failure_rate": Case(
        {"NAME": "failing", "WHEN": "failure_rate", "ABOVE": 0.5, "WINDOW": 300, "MIN_EVENTS": 4},
        hold=_failure_rate_holds,  # 3 of 4
        release=lambda: make_events(4, EventStatus.SUCCEEDED, finished_at=ago(5)),  # 3 of 8
    ),
    "dead_events": Case(
        {"NAME": "dying", "WHEN": "dead_events", "ABOVE": 2, "WINDOW": 300},
        hold=lambda: make_events(3, EventStatus.DEAD, finished_at=ago(10)),
        # Their deaths leave the window.
        release=lambda: WebhookEvent.objects.update(finished_at=ago(301)),
    ),
    "oldest_pending": Case(
        {"NAME": "stuck", "WHEN": "oldest_pending", "ABOVE": 60},
        hold=lambda: make_events(1, EventStatus.PENDING, received_at=ago(61)),
        release=lambda: WebhookEvent.objects.update(status=EventStatus.SUCCEEDED),
    ),
    "silence": Case(
        {"NAME": "quiet", "WHEN": "silence", "SOURCE": "generic", "WINDOW": 3600},
        start=lambda: make_events(1, EventStatus.SUCCEEDED),
        hold=lambda: WebhookEvent.objects.update(received_at=ago(3601)),
        release=lambda: make_events(1, EventStatus.SUCCEEDED),
    ),
}


@pytest.mark.parametrize("kind", CASES)
def test_each_kind_opens_and_closes_exactly_once(kind, settings, sink, notified, mailoutbox):
    case = CASES[kind]
    name = case.rule["NAME"]
    settings.ADMINS = ADMINS
    configure(settings, [case.rule], [sink.url("/a"), sink.url("/b")], ALERT_EMAIL=True)
    case.start()
    assert alerts.evaluate() == []
    case.hold()
    for _ in range(3):
        assert [alert.rule for alert in alerts.evaluate()] == [name]
    case.release()
    for _ in range(3):
        assert alerts.evaluate() == []

    for path in ("/a", "/b"):
        assert sink.states(path) == ["raised", "resolved"]
    assert notified == [("raised", name), ("resolved", name)]
    assert [mail.subject.split(": ")[0] for mail in mailoutbox] == [
        f"{settings.EMAIL_SUBJECT_PREFIX}Alert raised",
        f"{settings.EMAIL_SUBJECT_PREFIX}Alert resolved",
    ]
    assert all(name in mail.subject and mail.to == ["ops@example.com"] for mail in mailoutbox)
    [alert] = WebhookAlert.objects.all()
    assert alert.rule == name and alert.resolved_at is not None and alert.undelivered == []
    raised, resolved = sink.bodies("/a")
    assert raised["alert"]["id"] == resolved["alert"]["id"] == alert.pk
    assert raised["rule"] == case.rule


def test_what_is_posted(settings, sink):
    rule = CASES["dead_events"].rule
    configure(settings, [rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    [alert] = alerts.evaluate()
    [request] = sink.received
    assert request.headers["content-type"] == "application/json"
    assert "webhook-signature" not in request.headers  # no ALERT_SIGNING_SECRET
    assert request.json == {
        "text": "Alert raised: dying: 3 events turned dead in the last 5.0 min (alert above 2)",
        "alert": {
            "id": alert.pk,
            "rule": "dying",
            "raised_at": alert.raised_at.isoformat(),
            "resolved_at": None,
        },
        "state": "raised",
        "value": 3.0,
        "rule": rule,
    }


def test_a_rule_that_went_on_holding_notifies_nothing_in_between(settings, sink, notified):
    """Its value follows the measurement while it stays open."""
    configure(settings, [CASES["dead_events"].rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    alerts.evaluate()
    make_events(2, EventStatus.DEAD, finished_at=ago(5))
    [alert] = alerts.evaluate()
    assert alert.value == 5 and len(sink.received) == 1 and len(notified) == 1


def test_too_few_finished_attempts_do_not_judge_a_failure_rate(settings, sink):
    configure(settings, [CASES["failure_rate"].rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))  # all failed, but 3 < MIN_EVENTS
    make_events(5, EventStatus.DEAD, finished_at=ago(301))  # outside the window
    make_events(5, EventStatus.PENDING)  # no finished attempt
    assert alerts.evaluate() == []
    make_events(1, EventStatus.FAILED, finished_at=ago(1))  # a failure waiting for its retry
    assert [alert.value for alert in alerts.evaluate()] == [1.0]


def test_scope_narrows_a_rule_to_its_source_and_workflow(settings, sink):
    rule = {**CASES["dead_events"].rule, "SOURCE": "github", "WORKFLOW": "record"}
    configure(settings, [rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))  # generic
    assert alerts.evaluate() == []
    WebhookEvent.objects.update(source="github", workflow_name="fail")
    assert alerts.evaluate() == []
    WebhookEvent.objects.update(workflow_name="record")
    assert [alert.rule for alert in alerts.evaluate()] == ["dying"]


def test_a_source_that_never_delivered_is_silent(settings, sink):
    configure(settings, [CASES["silence"].rule], [sink.url("/a")])
    make_events(1, EventStatus.SUCCEEDED, source="github")  # another source speaks
    [alert] = alerts.evaluate()
    assert alert.value is None
    assert sink.bodies("/a")[0]["text"] == (
        "Alert raised: quiet: no delivery from 'generic' yet (alert after 1.0 h of silence)"
    )


def test_an_alert_whose_rule_is_removed_is_resolved(settings, sink, notified):
    configure(settings, [CASES["dead_events"].rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    alerts.evaluate()
    configure(settings, [], [sink.url("/a")])
    assert alerts.evaluate() == []
    assert sink.states("/a") == ["raised", "resolved"]
    assert sink.bodies("/a")[1]["text"] == "Alert resolved: dying: its rule is no longer configured"
    assert notified == [("raised", "dying"), ("resolved", "dying")]


def test_a_failing_url_is_retried_at_the_next_evaluation_and_the_others_get_theirs(settings, sink):
    configure(settings, [CASES["dead_events"].rule], [sink.url("/down"), sink.url("/up")])
    sink.status["/down"] = 500
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    [alert] = alerts.evaluate()
    assert sink.states("/up") == ["raised"]
    assert sink.states("/down") == ["raised"]  # tried, refused
    assert [(e["url"], e["state"]) for e in WebhookAlert.objects.get().undelivered] == [
        (sink.url("/down"), "raised")
    ]
    # Resolved while /down is still down: its two notifications wait, in order.
    WebhookEvent.objects.update(finished_at=ago(301))
    alerts.evaluate()
    assert sink.states("/up") == ["raised", "resolved"]
    assert sink.states("/down") == ["raised", "raised"]  # its first failure stops its queue
    sink.status["/down"] = 200
    alerts.evaluate()
    assert sink.states("/down") == ["raised", "raised", "raised", "resolved"]
    alerts.evaluate()
    assert len(sink.bodies("/down")) == 4 and sink.states("/up") == ["raised", "resolved"]
    assert WebhookAlert.objects.get().undelivered == []
    ids = {request.json["alert"]["id"] for request in sink.received}
    assert ids == {alert.pk}


def test_hanging_urls_delay_no_other_beyond_the_timeout(settings, sink, monkeypatch):
    """Two URLs that do not answer in time cost one timeout, not two, and the answering URL has
    its notification at once."""
    monkeypatch.setattr(alerts, "POST_TIMEOUT", 1.0)
    sink.delay["/slow-1"] = sink.delay["/slow-2"] = 3
    urls = [sink.url("/slow-1"), sink.url("/slow-2"), sink.url("/fast")]
    configure(settings, [CASES["dead_events"].rule], urls)
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    started = time.monotonic()
    alerts.evaluate()
    assert time.monotonic() - started < 1.8
    assert sink.states("/fast") == ["raised"]
    waiting = {entry["url"] for entry in WebhookAlert.objects.get().undelivered}
    assert waiting == {sink.url("/slow-1"), sink.url("/slow-2")}


def test_a_redirect_is_a_failure(settings, sink):
    """urllib would follow it as a GET without the body."""
    configure(settings, [CASES["dead_events"].rule], [sink.url("/moved")])
    sink.status["/moved"] = 302
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    alerts.evaluate()
    assert len(WebhookAlert.objects.get().undelivered) == 1


def evaluate_at_once(count: int = 2) -> None:
    """``count`` evaluations in threads of their own (each with its own database connection),
    released together."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            alerts.evaluate()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_evaluations_notify_once(settings, sink, notified, mailoutbox):
    settings.ADMINS = ADMINS
    urls = [sink.url("/a"), sink.url("/flaky")]
    configure(settings, [CASES["dead_events"].rule], urls, ALERT_EMAIL=True)
    sink.status["/flaky"] = 500
    rounds = 3
    for _ in range(rounds):
        make_events(3, EventStatus.DEAD, finished_at=ago(10))
        evaluate_at_once()
        WebhookEvent.objects.update(finished_at=ago(301))
        evaluate_at_once()
    assert sink.states("/a") == ["raised", "resolved"] * rounds
    assert notified == [("raised", "dying"), ("resolved", "dying")] * rounds
    assert len(mailoutbox) == 2 * rounds
    assert WebhookAlert.objects.filter(resolved_at__isnull=False).count() == rounds
    # The retries of the URL that failed are each taken by one of two evaluations, which may
    # share them out, so the sink sees them in either's order: each once, none twice.
    tried = len(sink.bodies("/flaky"))
    sink.status["/flaky"] = 200
    evaluate_at_once()
    taken = [(body["alert"]["id"], body["state"]) for body in sink.bodies("/flaky")[tried:]]
    assert len(taken) == len(set(taken)) == 2 * rounds
    assert sorted(state for _, state in taken) == ["raised"] * rounds + ["resolved"] * rounds
    assert not WebhookAlert.objects.exclude(undelivered=[]).exists()


def test_the_signature_verifies_with_the_standard_scheme(settings, sink):
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    configure(settings, [CASES["dead_events"].rule], [sink.url("/a")], ALERT_SIGNING_SECRET=secret)
    sink.status["/a"] = 503
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    [alert] = alerts.evaluate()
    sink.status["/a"] = 200
    alerts.evaluate()  # the retry: signed afresh, under the same id
    scheme = StandardWebhooksScheme()
    first, retry = (
        InboundRequest(body=request.body, headers=request.headers) for request in sink.received
    )
    for request in (first, retry):
        scheme.verify(request, [secret], now=time.time(), tolerance=300)
        delivery = scheme.parse(request)
        assert delivery.webhook_id == f"alert_{alert.pk}_raised"
        assert delivery.payload["state"] == "raised"
    other = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(InvalidSignature):
        scheme.verify(first, [other], now=time.time(), tolerance=300)


def test_the_minutely_schedule_exists_and_the_scheduler_runs_it():
    from django_q.scheduler import scheduler

    schedule = Schedule.objects.get(name=queue.ALERTS_SCHEDULE)
    assert schedule.func == "webhooks_app.tasks.evaluate_alerts"
    assert (schedule.schedule_type, schedule.minutes) == (Schedule.MINUTES, 1)
    queue.ensure_schedules()  # idempotent
    assert Schedule.objects.filter(name=queue.ALERTS_SCHEDULE).count() == 1
    Schedule.objects.exclude(pk=schedule.pk).update(next_run=ago(-3600))  # only this one is due
    Schedule.objects.filter(pk=schedule.pk).update(next_run=ago(1))
    scheduler(broker=queue.broker())
    assert queued_tasks() == 1


def test_the_scheduled_task_evaluates(settings, sink):
    configure(settings, [CASES["dead_events"].rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    assert tasks.evaluate_alerts() == 1
    assert sink.states("/a") == ["raised"]


def test_the_command_evaluates_and_prints_the_open_alerts(settings, sink):
    configure(settings, [CASES["dead_events"].rule, CASES["oldest_pending"].rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    out = StringIO()
    call_command("check_webhook_alerts", stdout=out)
    [alert] = WebhookAlert.objects.all()
    assert out.getvalue() == (
        f"dying: open since {alert.raised_at.isoformat(timespec='seconds')}: 3 events turned "
        "dead in the last 5.0 min (alert above 2)\n1 open alert(s).\n"
    )
    assert sink.states("/a") == ["raised"]
    WebhookEvent.objects.update(finished_at=ago(301))
    out = StringIO()
    call_command("check_webhook_alerts", stdout=out)
    assert out.getvalue() == "0 open alert(s).\n"


def test_the_api_lists_the_open_alerts(settings, sink):
    configure(settings, [CASES["dead_events"].rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    [alert] = alerts.evaluate()
    WebhookAlert.objects.create(rule="dying", resolved_at=timezone.now(), raised_at=ago(3600))
    response = client_with("view_webhookevent").get(ALERTS_API)
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": alert.pk,
            "rule": "dying",
            "definition": CASES["dead_events"].rule,
            "value": 3.0,
            "raised_at": alert.raised_at.isoformat().replace("+00:00", "Z"),
            "description": "3 events turned dead in the last 5.0 min (alert above 2)",
        }
    ]
    assert APIClient().get(ALERTS_API).status_code in (401, 403)
    assert client_with().get(ALERTS_API).status_code == 403


def test_the_dashboard_and_the_admin_show_alerts(settings, sink):
    configure(settings, [CASES["dead_events"].rule], [sink.url("/a")])
    make_events(3, EventStatus.DEAD, finished_at=ago(10))
    [alert] = alerts.evaluate()
    client = Client()
    client.force_login(User.objects.create_superuser("admin", "a@example.com", "pw"))
    page = client.get("/admin/webhooks_app/webhookevent/dashboard/").content.decode()
    assert 'id="open-alerts"' in page and "Alert &lsquo;dying&rsquo; open since" in page
    assert "3 events turned dead in the last 5.0 min" in page
    history = client.get("/admin/webhooks_app/webhookalert/")
    assert history.status_code == 200 and "dying" in history.content.decode()
    detail = client.get(f"/admin/webhooks_app/webhookalert/{alert.pk}/change/")
    assert detail.status_code == 200 and "dead_events" in detail.content.decode()
    # Read-only: nothing to add, change or delete.
    assert client.get("/admin/webhooks_app/webhookalert/add/").status_code == 403
    assert client.post(f"/admin/webhooks_app/webhookalert/{alert.pk}/delete/").status_code == 403
    assert b'name="_save"' not in detail.content
