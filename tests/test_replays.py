"""Bulk replay by filter (contract §10): the service, its background job, the command and the
API. Every selection test checks the same three numbers: the dry run's count, what the replay
queued, and the events that then ran again (their workflows record each run)."""

from __future__ import annotations

import itertools
import re
import threading
from collections import Counter
from datetime import UTC, timedelta
from html import escape, unescape
from io import StringIO
from typing import Any
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connections, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import client_with, queued_tasks
from tests.processes import wait_until
from tests.testapp.models import Execution
from webhooks_app import queue, replays, tasks
from webhooks_app.conf import webhook_settings
from webhooks_app.models import EventStatus, WebhookEvent, WebhookReplay
from webhooks_app.testing import run_events

REPLAYS = "/webhooks/api/replays/"

SOURCES = ("generic", "github")
WORKFLOWS = ("record", "fail")
STATUSES = (EventStatus.DEAD, EventStatus.FAILED, EventStatus.SUCCEEDED, EventStatus.RUNNING)
EVENT_TYPES = ("push", "")
HOURS_AGO = (0.5, 5, 72)


def make_events(specs: list[dict[str, Any]]) -> None:
    now = timezone.now()
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            webhook_id=spec["id"],
            source=spec["source"],
            workflow_name=spec["workflow"],
            status=spec["status"],
            event_type=spec["event_type"],
            received_at=now - timedelta(hours=spec["hours_ago"]),
            # A failed event not due for hours: only a replay runs it now.
            next_attempt_at=now + timedelta(hours=5) if spec["status"] == "failed" else None,
            attempts=3,
        )
        for spec in specs
    )


@pytest.fixture
def grid(db: None) -> list[dict[str, Any]]:
    """One event of every combination, plus ignored ones (no workflow: nothing to replay)."""
    specs = [
        {"source": s, "workflow": w, "status": st, "event_type": t, "hours_ago": h}
        for s, w, st, t, h in itertools.product(
            SOURCES, WORKFLOWS, STATUSES, EVENT_TYPES, HOURS_AGO
        )
    ]
    specs += [
        {
            "source": s,
            "workflow": "",
            "status": EventStatus.IGNORED,
            "event_type": "push",
            "hours_ago": 1,
        }
        for s in SOURCES
    ]
    for i, spec in enumerate(specs):
        spec["id"] = f"g{i}"
    make_events(specs)
    return specs


def iso_hours_ago(hours: float) -> str:
    return (timezone.now() - timedelta(hours=hours)).isoformat()


CASES = [
    ({}, lambda e: e["status"] == "dead"),
    ({"source": "github"}, lambda e: e["status"] == "dead" and e["source"] == "github"),
    ({"workflow": "fail"}, lambda e: e["status"] == "dead" and e["workflow"] == "fail"),
    ({"status": ["failed", "succeeded"]}, lambda e: e["status"] in ("failed", "succeeded")),
    ({"status": "ignored"}, lambda e: False),  # no workflow: a replay of 0
    ({"event_type": "push"}, lambda e: e["status"] == "dead" and e["event_type"] == "push"),
    ({"since": "6h"}, lambda e: e["status"] == "dead" and e["hours_ago"] < 6),
    ({"until": "1h"}, lambda e: e["status"] == "dead" and e["hours_ago"] > 1),
    (
        {"since": "2d", "until": iso_hours_ago(1)},
        lambda e: e["status"] == "dead" and 1 < e["hours_ago"] < 48,
    ),
    (
        {"source": "github", "workflow": "record", "status": ["dead", "failed"],
         "event_type": "push", "since": "1d"},
        lambda e: e["source"] == "github" and e["workflow"] == "record"
        and e["status"] in ("dead", "failed") and e["event_type"] == "push"
        and e["hours_ago"] < 24,
    ),
]  # fmt: skip


@pytest.mark.parametrize(("filters", "selects"), CASES)
def test_each_filter_alone_and_combined_selects_exactly_the_right_events(grid, filters, selects):
    expected = {spec["id"] for spec in grid if selects(spec)}
    assert replays.count_matching(filters) == len(expected)

    replay = replays.start_replay(filters, by="test")
    replay = replays.run_replay(replay.pk, batch_size=7)  # several batches

    assert (replay.state, replay.count, replay.done) == ("finished", len(expected), len(expected))
    queued = WebhookEvent.objects.filter(status=EventStatus.PENDING)
    assert set(queued.values_list("webhook_id", flat=True)) == expected
    assert {event.webhook_id for event in run_events()} == expected
    ran = Counter(Execution.objects.values_list("webhook_id", flat=True))
    assert ran == dict.fromkeys(expected, 1)
    assert WebhookEvent.objects.filter(status=EventStatus.RUNNING).count() == len(
        [spec for spec in grid if spec["status"] == "running"]
    )  # never touched


def test_filters_are_normalised_with_times_resolved_once(db):
    now = timezone.now()
    raw = {"since": "30m", "until": "2099-01-15", "status": "dead", "source": None}
    filters = replays.parse_filters(raw, now)
    assert filters == {
        "status": ["dead"],
        "since": (now - timedelta(minutes=30)).astimezone(UTC).isoformat(),
        "until": "2099-01-15T00:00:00+00:00",  # midnight in TIME_ZONE (UTC here)
    }
    with timezone.override("Europe/Paris"):
        assert replays.parse_filters({"since": "2099-01-15T10:00"})["since"] == (
            "2099-01-15T09:00:00+00:00"
        )
    assert replays.parse_filters(filters) == filters  # stored, then read back by the job


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"status": ["dead", "exploded"]}, "status: unknown status 'exploded'"),
        ({"status": ["running"]}, "status: running events are never replayed"),
        ({"status": []}, "status: expected one status or a list of them"),
        ({"status": [1]}, "status: unknown status 1"),
        ({"since": "yesterday"}, "since: 'yesterday' is neither an ISO 8601 time"),
        ({"until": "2026-13-40"}, "until: '2026-13-40' is neither an ISO 8601 time"),
        ({"since": "999999999d"}, "since: '999999999d' reaches back before the year 1"),
        ({"since": 6}, "since: expected a string, got 6"),
        ({"until": "9999-12-31T23:00:00-05:00"}, "until: '9999-12-31T23:00:00-05:00' is out of"),
        ({"since": "1h", "until": "2h"}, "until ("),
        ({"source": ["a"]}, "source: expected a non-empty string, got ['a']"),
        ({"workflow": ""}, "workflow: expected a non-empty string"),
        ({"event_type": "a\x00b"}, "event_type: at most 255 characters of text, without NUL"),
        ({"source": "\ud800"}, "source: at most 255 characters of text, without NUL"),
        ({"statuses": ["dead"]}, "Unknown filter 'statuses'; the filters are source, workflow"),
    ],
)
def test_bad_filters_are_one_clear_error_naming_the_filter(db, filters, message):
    with pytest.raises(replays.InvalidFilter) as raised:
        replays.count_matching(filters)
    assert str(raised.value).startswith(message)
    assert not WebhookReplay.objects.exists()


def test_a_replay_of_nothing_is_finished_at_once(db):
    replay = replays.start_replay({"workflow": "nothing-has-this"})
    assert (replay.state, replay.count, replay.done) == ("finished", 0, 0)
    assert replay.finished_at is not None


def dead_events(n: int, workflow: str = "record") -> list[int]:
    make_events(
        [
            {"id": f"d{i}", "source": "generic", "workflow": workflow, "status": "dead",
             "event_type": "", "hours_ago": 1}
            for i in range(n)
        ]
    )  # fmt: skip
    return list(WebhookEvent.objects.order_by("pk").values_list("pk", flat=True))


def test_an_event_running_when_its_batch_comes_is_skipped(db):
    ids = dead_events(5)
    replay = replays.start_replay({}, background=False)
    WebhookEvent.objects.filter(pk=ids[2]).update(status=EventStatus.RUNNING)
    replay = replays.run_replay(replay.pk)
    assert (replay.state, replay.count, replay.done) == ("finished", 5, 4)
    assert WebhookEvent.objects.get(pk=ids[2]).status == EventStatus.RUNNING


def test_the_selection_is_fixed_when_the_replay_is_created(db):
    dead_events(3)
    replay = replays.start_replay({}, background=False)
    make_events([{"id": "late", "source": "generic", "workflow": "record", "status": "dead",
                  "event_type": "", "hours_ago": 0}])  # fmt: skip
    assert replays.run_replay(replay.pk).done == 3
    assert WebhookEvent.objects.get(webhook_id="late").status == EventStatus.DEAD


def test_cancel_stops_a_running_replay_between_batches(db):
    dead_events(30)
    replay = replays.start_replay({}, background=False)
    seen: list[int] = []

    def cancel_after_first_batch(progress: WebhookReplay) -> None:
        seen.append(progress.done)
        replays.cancel_replay(progress.pk)

    replay = replays.run_replay(replay.pk, batch_size=10, progress=cancel_after_first_batch)
    assert seen == [10]
    assert (replay.state, replay.done) == ("cancelled", 10)
    assert WebhookEvent.objects.filter(status=EventStatus.PENDING).count() == 10
    # A job delivered after the cancel queues nothing, and a cancel is final.
    assert replays.run_replay(replay.pk).done == 10
    assert replays.cancel_replay(replay.pk).state == "cancelled"
    assert WebhookEvent.objects.filter(status=EventStatus.DEAD).count() == 20


@pytest.mark.django_db(transaction=True)
def test_a_job_delivered_twice_queues_each_event_once():
    dead_events(300)
    replay = replays.start_replay({}, background=False)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run() -> None:
        try:
            start.wait()
            replays.run_replay(replay.pk, after=0, batch_size=10)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    replay.refresh_from_db()
    assert (replay.state, replay.done) == ("finished", 300)
    assert queued_tasks() == 300  # one task per event, none twice
    # A third delivery, after the end, queues nothing either.
    assert replays.run_replay(replay.pk).done == 300
    assert queued_tasks() == 300


@pytest.mark.django_db(transaction=True)
def test_the_job_continues_in_a_new_task_and_a_stale_one_exits():
    dead_events(25)
    replay = replays.start_replay({}, background=False)
    # Out of time after the first batch: the rest goes to a new job, queued after the batch.
    replay = replays.run_replay(replay.pk, after=0, seconds=0, batch_size=10)
    assert (replay.state, replay.done) == ("running", 10)
    assert queued_tasks() == 10 + 1
    # A job queued with an older cursor (the recovery's re-enqueue of a live replay) exits.
    assert replays.run_replay(replay.pk, after=0).done == 10
    # The job's entry point carries on from the cursor and finishes.
    assert (
        tasks.run_replay(replay.pk, replay.cursor)
        == f"replay {replay.pk}: finished, 25 of 25 queued"
    )
    assert tasks.run_replay(10**9, 0) == f"skipped: no replay {10**9}"


@pytest.mark.django_db(transaction=True)
def test_recovery_puts_the_job_of_a_stalled_replay_back_on_the_queue_once():
    dead_events(3)
    replay = replays.start_replay({}, background=False)  # as if its job had been lost
    finished = replays.start_replay({"workflow": "none"}, background=False)
    assert finished.state == "finished"
    tasks.recover_stranded_events()
    assert queued_tasks() == 0  # within the grace: its job may still be on its way
    later = timezone.now() + timedelta(seconds=webhook_settings.RECOVERY_GRACE + 1)
    WebhookReplay.objects.update(updated_at=timezone.now() - timedelta(hours=1))
    assert replays.resume_stalled(later) == 1
    assert replays.resume_stalled(later) == 0  # moved on by the first: enqueued once
    assert queued_tasks() == 1
    if queue.uses_orm_broker():
        # The ORM broker's task row holds the job, so running the queue in process is fair.
        assert tasks.run_replay(replay.pk, 0).endswith("finished, 3 of 3 queued")


@pytest.mark.skipif(
    webhook_settings.TASK_RUNNER != "django_tasks", reason="the django_tasks leg (make test-tasks)"
)
@pytest.mark.django_db(transaction=True)
def test_on_django_tasks_the_job_is_a_task_row_of_the_replays_transaction():
    from django_tasks_db.models import DBTaskResult

    dead_events(2)
    with transaction.atomic():
        replay = replays.start_replay({})
        row = DBTaskResult.objects.get(task_path="webhooks_app.queue.django_tasks.run_replay")
        assert row.args_kwargs["args"] == [replay.pk, 0]
        transaction.set_rollback(True)
    assert not DBTaskResult.objects.exists()


# -- the command -----------------------------------------------------------------------------


def test_command_dry_run_counts_and_queues_nothing(grid):
    out = StringIO()
    call_command(
        "replay_webhook_events", "--source", "github", "--status", "dead", "failed",
        "--since", "6h", "--dry-run", stdout=out,
    )  # fmt: skip
    expected = [
        s for s in grid
        if s["source"] == "github" and s["status"] in ("dead", "failed") and s["hours_ago"] < 6
    ]  # fmt: skip
    printed = out.getvalue()
    assert printed.startswith(
        f"{len(expected)} events match (status dead, failed; source github; received since 20"
    )
    assert printed.endswith(").\n") and printed.count("\n") == 1
    assert not WebhookEvent.objects.filter(status=EventStatus.PENDING).exists()
    assert not WebhookReplay.objects.exists()


def test_command_queues_in_batches_in_its_own_process_and_says_how_many(db):
    dead_events(2500)
    out = StringIO()
    call_command("replay_webhook_events", "--workflow", "record", stdout=out)
    lines = out.getvalue().splitlines()
    replay = WebhookReplay.objects.get()
    assert lines == [
        "2500 events match (status dead; workflow record).",
        "  1000 of 2500 queued",
        "  2000 of 2500 queued",
        "  2500 of 2500 queued",
        f"Queued 2500 events to run again (replay {replay.pk}, finished).",
    ]
    assert replay.created_by.endswith("(manage.py)")
    assert WebhookEvent.objects.filter(status=EventStatus.PENDING).count() == 2500


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "running"], "status: running events are never replayed"),
        (["--status", "nope"], "status: unknown status 'nope'"),
        (["--since", "last tuesday"], "since: 'last tuesday' is neither an ISO 8601 time"),
        (["--since", "1h", "--until", "2h"], "until ("),
    ],
)
def test_command_bad_filters_exit_1_with_the_message(db, args, message):
    with pytest.raises(CommandError) as raised:
        call_command("replay_webhook_events", *args, stdout=StringIO())
    assert str(raised.value).startswith(message)
    assert raised.value.returncode == 1
    assert not WebhookReplay.objects.exists()


# -- the API ---------------------------------------------------------------------------------


def test_api_dry_run_then_replay_then_progress(grid):
    client = client_with("view_webhookevent", "change_webhookevent")
    filters = {"status": ["dead"], "workflow": "record", "since": "6h"}
    expected = {
        s["id"]
        for s in grid
        if s["status"] == "dead" and s["workflow"] == "record" and s["hours_ago"] < 6
    }
    dry = client.post(REPLAYS, {**filters, "dry_run": True}, format="json")
    assert (dry.status_code, dry.json()) == (200, {"count": len(expected)})
    assert not WebhookReplay.objects.exists()

    started = client.post(REPLAYS, filters, format="json")
    assert started.status_code == 202
    body = started.json()
    assert (body["count"], body["state"], body["done"]) == (len(expected), "running", 0)
    assert started["Location"] == f"{REPLAYS}{body['id']}/"
    assert body["filters"]["since"] and body["filters"]["workflow"] == "record"

    replays.run_replay(body["id"])  # what the queued job does
    progress = client.get(f"{REPLAYS}{body['id']}/").json()
    assert {k: progress[k] for k in ("id", "state", "count", "done")} == {
        "id": body["id"], "state": "finished", "count": len(expected), "done": len(expected),
    }  # fmt: skip
    assert {e.webhook_id for e in run_events()} == expected


def test_api_cancel(db):
    dead_events(3)
    client = client_with("view_webhookevent", "change_webhookevent")
    replay_id = client.post(REPLAYS, {}, format="json").json()["id"]
    cancelled = client.post(f"{REPLAYS}{replay_id}/cancel/")
    assert cancelled.status_code == 200
    assert (cancelled.json()["state"], cancelled.json()["done"]) == ("cancelled", 0)
    assert replays.run_replay(replay_id).done == 0
    assert client.post(f"{REPLAYS}999999/cancel/").status_code == 404
    assert client.get(f"{REPLAYS}999999/").status_code == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"status": ["running"]}, "status: running events are never replayed"),
        ({"status": "bogus"}, "status: unknown status 'bogus'"),
        ({"since": "soon"}, "since: 'soon' is neither an ISO 8601 time"),
        ({"since": "1h", "until": "2h"}, "until ("),
        ({"source": 42}, "source: expected a non-empty string, got 42"),
        ({"dry_run": "yes"}, "dry_run: expected true or false, got 'yes'"),
        ({"colour": "red"}, "Unknown filter 'colour'"),
        (["dead"], "The body must be a JSON object of filters."),
        ("not json", "The body is not valid JSON"),
    ],
)
def test_api_bad_input_is_400_invalid_filter(db, body, detail):
    client = client_with("view_webhookevent", "change_webhookevent")
    if body == "not json":
        response = client.generic("POST", REPLAYS, "{nope", content_type="application/json")
    else:
        response = client.post(REPLAYS, body, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"error", "detail"}
    assert response.json()["error"] == "invalid_filter"
    assert response.json()["detail"].startswith(detail)
    assert not WebhookReplay.objects.exists()


def test_api_permissions(db):
    dead_events(1)
    viewer = client_with("view_webhookevent")
    assert viewer.post(REPLAYS, {"dry_run": True}, format="json").status_code == 403
    replay = replays.start_replay({})
    assert viewer.get(f"{REPLAYS}{replay.pk}/").status_code == 200
    assert viewer.post(f"{REPLAYS}{replay.pk}/cancel/").status_code == 403
    assert client_with().get(f"{REPLAYS}{replay.pk}/").status_code == 403
    assert APIClient().get(f"{REPLAYS}{replay.pk}/").status_code in (401, 403)
    assert APIClient().post(REPLAYS, {}, format="json").status_code in (401, 403)
    assert WebhookReplay.objects.count() == 1


# -- in the background, on a real worker -----------------------------------------------------


@pytest.mark.process
def test_a_replay_through_the_api_runs_in_the_background_on_a_real_worker(cluster):
    dead_events(40)
    make_events([{"id": "other", "source": "github", "workflow": "record", "status": "dead",
                  "event_type": "", "hours_ago": 1}])  # fmt: skip
    client = client_with("view_webhookevent", "change_webhookevent")
    started = client.post(REPLAYS, {"source": "generic"}, format="json")
    assert started.status_code == 202 and started.json()["count"] == 40
    url = f"{REPLAYS}{started.json()['id']}/"
    wait_until(lambda: client.get(url).json()["state"] == "finished", 60)
    assert client.get(url).json()["done"] == 40
    wait_until(lambda: WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED).count() == 40, 60)
    assert Counter(Execution.objects.values_list("webhook_id", flat=True)) == {
        f"d{i}": 1 for i in range(40)
    }
    assert WebhookEvent.objects.get(webhook_id="other").status == EventStatus.DEAD


# -- the admin -------------------------------------------------------------------------------

CHANGELIST = "/admin/webhooks_app/webhookevent/"
MATCHING = "/admin/webhooks_app/webhookevent/replay-matching/"


def offered(client: Any, query: str) -> str | None:
    """The changelist's *Replay all … matching* link: its text and target, or None."""
    html = client.get(f"{CHANGELIST}?{query}").content.decode()
    link = re.search(r'<a href="([^"]+)" id="replay-matching">([^<]+)</a>', html)
    return None if link is None else f"{link[2]} -> {unescape(link[1])}"


def test_admin_filtered_list_offers_replay_all_matching_with_its_filters(admin_client, grid):
    dead_github = sum(1 for s in grid if s["status"] == "dead" and s["source"] == "github")
    query = "source=github&status__exact=dead&o=1"
    assert offered(admin_client, query) == (
        f"Replay all {dead_github} matching -> {MATCHING}?{query}"
    )
    assert offered(admin_client, "") is None  # only a filtered list
    assert offered(admin_client, "o=-2") is None
    assert offered(admin_client, "q=g1") == f"Replay all matching… -> {MATCHING}?q=g1"


def test_admin_replay_goes_through_the_confirmation_page(admin_client, grid):
    week = timezone.now() - timedelta(days=7)
    query = urlencode({"workflow_name": "record", "received_at__gte": str(week)})
    expected = {
        s["id"] for s in grid if s["workflow"] == "record" and s["status"] != "running"
    }  # no status filter: every status the list shows, running ones excepted
    page = admin_client.get(f"{MATCHING}?{query}").content.decode()
    assert f'<strong id="replay-count">{len(expected)}</strong>' in page
    assert "Running events are left alone" in page
    assert not WebhookReplay.objects.exists()  # asking is not doing

    response = admin_client.post(f"{MATCHING}?{query}")
    replay = WebhookReplay.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/webhooks_app/webhookreplay/{replay.pk}/change/"
    assert (replay.count, replay.state, replay.created_by) == (len(expected), "running", "admin")
    assert replay.filters["workflow"] == "record" and "since" in replay.filters

    page = admin_client.get(response["Location"]).content.decode()
    assert f"0 of {len(expected)} queued (0 %)" in page
    assert 'http-equiv="refresh"' in page and "Cancel replay" in page
    replays.run_replay(replay.pk)  # the background job
    page = admin_client.get(response["Location"]).content.decode()
    assert f"{len(expected)} of {len(expected)} queued (100 %)" in page
    assert 'http-equiv="refresh"' not in page and "Cancel replay" not in page
    assert {e.webhook_id for e in run_events()} == expected


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("q=g1", "the list is narrowed by a search ('g1')"),
        ("attempts__gte=2", "the list is filtered by attempts__gte"),
        ("status__exact=running", "status: running events are never replayed"),
        (
            "status__exact=dead&status__in=dead,failed",
            "the list is filtered by status more than once",
        ),
    ],
)
def test_admin_refuses_a_list_a_replay_cannot_express(admin_client, grid, query, reason):
    page = admin_client.get(f"{MATCHING}?{query}").content.decode()
    assert "This list cannot be replayed in bulk: " + escape(reason) in page
    assert "Yes, replay" not in page
    admin_client.post(f"{MATCHING}?{query}")
    assert not WebhookReplay.objects.exists()


def test_admin_cancel_and_permissions(client, admin_client, grid):
    replay = replays.start_replay({"workflow": "record"})
    cancel = f"/admin/webhooks_app/webhookreplay/{replay.pk}/cancel/"
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    client.force_login(viewer)
    assert client.get(f"/admin/webhooks_app/webhookreplay/{replay.pk}/change/").status_code == 200
    assert client.post(cancel).status_code == 403
    assert client.get(f"{MATCHING}?status__exact=dead").status_code == 403
    assert offered(client, "status__exact=dead") is None
    assert admin_client.get(cancel).status_code == 405
    assert admin_client.post(cancel).status_code == 302
    replay.refresh_from_db()
    assert replay.state == "cancelled"
    listed = admin_client.get("/admin/webhooks_app/webhookreplay/").content.decode()
    assert "0 of " in listed and "status dead; workflow record" in listed
