from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from webhooks_app import services, tasks
from webhooks_app.models import EventStatus, ProcessingControl, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_event():
    return WebhookEvent.objects.create(
        source="generic", webhook_id="dead-1", workflow_name="record", status=EventStatus.DEAD,
        attempts=3, payload={"x": "<script>alert(1)</script>"}, headers={"user-agent": "t"},
        error="Traceback ...\nValueError: boom",
    )  # fmt: skip


def test_changelist_and_detail_render_escaped(admin_client, dead_event):
    assert (
        admin_client.get(reverse("admin:webhooks_app_webhookevent_changelist")).status_code == 200
    )
    response = admin_client.get(
        reverse("admin:webhooks_app_webhookevent_change", args=[dead_event.pk])
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html


def test_replay_action_is_wired_and_requeues(admin_client, dead_event):
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    response = admin_client.post(url, {"action": "replay", "_selected_action": [dead_event.pk]})
    assert response.status_code == 302
    dead_event.refresh_from_db()
    assert dead_event.status == EventStatus.PENDING


def test_staff_without_change_permission_cannot_replay(client, dead_event):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    client.force_login(user)
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    assert client.get(url).status_code == 200
    client.post(url, {"action": "replay", "_selected_action": [dead_event.pk]})
    dead_event.refresh_from_db()
    assert dead_event.status == EventStatus.DEAD


def test_purge_goes_through_the_confirmation_page(admin_client, dead_event):
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    confirm = admin_client.post(url, {"action": "purge", "_selected_action": [dead_event.pk]})
    assert confirm.status_code == 200
    assert "Are you sure you want to purge 1 webhook event?" in confirm.content.decode()
    assert WebhookEvent.objects.filter(pk=dead_event.pk).exists()
    done = admin_client.post(
        url, {"action": "purge", "_selected_action": [dead_event.pk], "post": "yes"}
    )
    assert done.status_code == 302
    assert not WebhookEvent.objects.filter(pk=dead_event.pk).exists()


def test_actions_are_wired_with_their_labels(admin_client, rf):
    from django.contrib.admin.sites import site

    request = rf.get("/")
    request.user = User.objects.get(username="admin")
    actions = site._registry[WebhookEvent].get_actions(request)
    assert set(actions) == {"replay", "purge"}  # Django's delete_selected is replaced by purge


def test_staff_without_delete_permission_cannot_purge(client, dead_event):
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    client.force_login(user)
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    client.post(url, {"action": "purge", "_selected_action": [dead_event.pk], "post": "yes"})
    assert WebhookEvent.objects.filter(pk=dead_event.pk).exists()


def test_anonymous_is_sent_to_login(client):
    response = client.get(reverse("admin:webhooks_app_webhookevent_changelist"))
    assert response.status_code == 302
    assert "/login/" in response["Location"]


def test_changelist_counts_are_capped_and_queries_bounded(
    admin_client, django_assert_max_num_queries, monkeypatch
):
    from webhooks_app.admin import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "CAP", 5)
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            source="generic", webhook_id=f"n{i}", workflow_name="record", status="succeeded"
        )
        for i in range(20)
    )
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    with django_assert_max_num_queries(12):
        response = admin_client.get(url)
    assert response.context["cl"].result_count == 6  # CAP + 1: "more than five"
    with django_assert_max_num_queries(12):
        assert admin_client.get(url + "?status__exact=succeeded&source=generic").status_code == 200


def _listed(response) -> list[str]:
    return [event.webhook_id for event in response.context["cl"].result_list]


def test_source_and_workflow_filters_offer_what_the_table_holds(admin_client, monkeypatch):
    from webhooks_app.admin import IndexedValuesFilter

    for source, workflow, webhook_id in [
        ("stripe", "charge", "a"), ("github", "deploy", "b"), ("stripe", "", "c"),
        ("retired-source", "charge", "d"),
    ]:  # fmt: skip
        WebhookEvent.objects.create(source=source, webhook_id=webhook_id, workflow_name=workflow)
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    response = admin_client.get(url)
    choices = {
        spec.title: [choice["display"] for choice in spec.choices(response.context["cl"])]
        for spec in response.context["cl"].filter_specs
    }
    assert choices["source"] == ["All", "github", "retired-source", "stripe"]
    assert choices["workflow"] == ["All", "charge", "deploy"]  # "" (ignored events) left out
    assert sorted(_listed(admin_client.get(url + "?source=stripe"))) == ["a", "c"]
    assert _listed(admin_client.get(url + "?workflow_name=deploy&source=github")) == ["b"]
    monkeypatch.setattr(IndexedValuesFilter, "MAX_CHOICES", 2)
    response = admin_client.get(url)
    source_filter = next(s for s in response.context["cl"].filter_specs if s.title == "source")
    assert [c["display"] for c in source_filter.choices(response.context["cl"])] == [
        "All", "github", "retired-source",
    ]  # fmt: skip


def test_search_is_by_exact_webhook_id(admin_client, dead_event):
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    assert _listed(admin_client.get(url, {"q": "dead-1"})) == ["dead-1"]
    assert _listed(admin_client.get(url, {"q": "dead"})) == []
    assert _listed(admin_client.get(url, {"q": "DEAD-1"})) == []


def test_date_filter_narrows_by_received_time(admin_client, dead_event):
    from datetime import timedelta

    from django.utils import timezone

    WebhookEvent.objects.create(
        source="generic", webhook_id="old", received_at=timezone.now() - timedelta(days=30)
    )
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    response = admin_client.get(url)
    date_filter = next(s for s in response.context["cl"].filter_specs if s.title == "received at")
    past_week = next(c for c in date_filter.choices(response.context["cl"]) if "7" in c["display"])
    assert _listed(admin_client.get(url + past_week["query_string"])) == ["dead-1"]


def test_purge_of_all_matching_reads_only_keys_in_batches(admin_client):
    """*Select all N matching*, then *Purge*: a batch of keys per transaction, never every row
    with its payload in one (1001 events: two batches of the default 1000)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    WebhookEvent.objects.bulk_create(
        WebhookEvent(source="generic", webhook_id=f"p{i}", status=EventStatus.DEAD,
                     payload={"big": "x" * 100})
        for i in range(1001)
    )  # fmt: skip
    WebhookEvent.objects.create(source="generic", webhook_id="kept", status="succeeded")
    url = reverse("admin:webhooks_app_webhookevent_changelist") + "?status__exact=dead"
    one_on_the_page = WebhookEvent.objects.filter(status=EventStatus.DEAD).first().pk
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post(
            url,
            {"action": "purge", "select_across": "1", "_selected_action": [one_on_the_page],
             "post": "yes"},
        )  # fmt: skip
    assert response.status_code == 302
    assert list(WebhookEvent.objects.values_list("webhook_id", flat=True)) == ["kept"]
    # One transaction per batch (a savepoint inside the test's own transaction).
    assert len([q for q in queries if q["sql"].startswith("SAVEPOINT")]) == 2
    assert not [q["sql"] for q in queries if "payload" in q["sql"]]


def _detail(client, event) -> str:
    response = client.get(reverse("admin:webhooks_app_webhookevent_change", args=[event.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_event_page_replays_with_post_csrf_and_returns_to_itself(admin_client, dead_event):
    """The *Replay* button at the top of a dead event's page: a POST form with a CSRF token
    to the replay URL, which requeues the event and comes back to the page."""
    page = reverse("admin:webhooks_app_webhookevent_change", args=[dead_event.pk])
    replay = reverse("admin:webhooks_app_webhookevent_replay", args=[dead_event.pk])
    summary = (
        _detail(admin_client, dead_event).split('id="event-summary"')[1].split("</section>")[0]
    )
    assert f'<form method="post" action="{replay}"' in summary
    assert 'name="csrfmiddlewaretoken"' in summary and 'value="Replay"' in summary
    response = admin_client.post(replay, {"next": page})
    assert response.status_code == 302 and response["Location"] == page
    dead_event.refresh_from_db()
    assert dead_event.status == EventStatus.PENDING


def test_replay_is_offered_only_where_it_would_run(client, admin_client, dead_event):
    """Not to staff without the change permission, not for a running or an ignored event."""
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    client.force_login(viewer)
    assert 'id="event-summary"' in _detail(client, dead_event)
    assert 'value="Replay"' not in _detail(client, dead_event)
    WebhookEvent.objects.filter(pk=dead_event.pk).update(status=EventStatus.RUNNING)
    assert 'value="Replay"' not in _detail(admin_client, dead_event)
    replay = reverse("admin:webhooks_app_webhookevent_replay", args=[dead_event.pk])
    response = admin_client.post(replay, follow=True)  # a forged form: said, and not done
    assert "Not queued: the event is running or has no workflow." in response.content.decode()
    dead_event.refresh_from_db()
    assert dead_event.status == EventStatus.RUNNING
    ignored = WebhookEvent.objects.create(
        source="generic", webhook_id="ign", status=EventStatus.IGNORED, workflow_name=""
    )
    html = _detail(admin_client, ignored)
    assert 'value="Replay"' not in html
    assert "Nothing to run: no workflow is routed for this event type." in html


def test_event_page_has_no_delete_and_its_delete_url_is_refused(admin_client, dead_event):
    """A read-only audit log: no *Delete* button, and its URL refused even to a superuser
    (a forged POST included); purging stays possible from the list."""
    assert "deletelink" not in _detail(admin_client, dead_event)
    delete_url = reverse("admin:webhooks_app_webhookevent_delete", args=[dead_event.pk])
    assert admin_client.get(delete_url).status_code == 403
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert WebhookEvent.objects.filter(pk=dead_event.pk).exists()
    changelist = reverse("admin:webhooks_app_webhookevent_changelist")
    admin_client.post(
        changelist, {"action": "purge", "_selected_action": [dead_event.pk], "post": "yes"}
    )
    assert not WebhookEvent.objects.filter(pk=dead_event.pk).exists()


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "workflows.py", line 28, in fail\n'
    "    raise ValueError(f'<b>boom</b> on attempt {n}')\n"
    "ValueError: <b>boom</b> on attempt 3\n"
)


def _timed_event(**fields):
    """An event with known times (UTC) and three attempts of known durations."""
    from datetime import UTC, datetime, timedelta

    received = datetime(2026, 1, 15, 14, 30, 5, 123000, tzinfo=UTC)
    history = [
        {"attempt": 1, "started_at": "2026-01-15T14:30:06.200000+00:00", "duration_ms": 1400.2,
         "outcome": "failed", "error": "ValueError: <b>boom</b> on attempt 1"},
        {"attempt": 2, "started_at": "2026-07-01T12:00:00+00:00", "duration_ms": 1_068_000,
         "outcome": "lost", "error": "The worker stopped before the attempt finished."},
        {"attempt": 3, "started_at": "2026-07-01T12:20:00+00:00", "duration_ms": 2.0,
         "outcome": "failed", "error": "ValueError: <b>boom</b> on attempt 3"},
    ]  # fmt: skip
    defaults = {
        "source": "generic", "webhook_id": "timed", "workflow_name": "record", "attempts": 3,
        "status": EventStatus.DEAD, "received_at": received, "history": history, "error": TRACEBACK,
        "started_at": datetime(2026, 7, 1, 12, 20, tzinfo=UTC),
        "finished_at": datetime(2026, 7, 1, 12, 20, tzinfo=UTC) + timedelta(microseconds=2005),
    }  # fmt: skip
    return WebhookEvent.objects.create(**{**defaults, **fields})


def test_timeline_is_a_table_with_the_traceback_one_click_away(admin_client):
    html = _detail(admin_client, _timed_event())
    assert '"duration_ms"' not in html  # no raw JSON
    table = html.split('id="attempts-timeline"')[1].split("</table>")[0]
    assert re.findall("<th>(.*?)</th>", table) == [
        "Attempt", "Started", "Duration", "Outcome", "Error",
    ]  # fmt: skip
    rows = table.split("<tbody>")[1].split("<tr")[1:]
    assert [row.count("<td") for row in rows] == [5, 5, 5, 1]  # three attempts, one traceback
    assert "ValueError: &lt;b&gt;boom&lt;/b&gt; on attempt 3</td>" in rows[2]
    assert rows[3].startswith(' class="wh-traceback"><td colspan="5"><details>')
    assert "<summary>Full error of attempt 3</summary><pre>Traceback (most recent" in rows[3]
    assert "ValueError: &lt;b&gt;boom&lt;/b&gt; on attempt 3\n</pre></details>" in rows[3]
    assert html.count("<details>") == 1  # only the last failure's traceback is kept
    assert "<b>boom" not in html  # escaped everywhere


def test_times_and_durations_in_the_users_time_zone(admin_client):
    """One time zone (the current one), to the second, UTC in the title, and human durations:
    the list, the page's fields, its summary and its timeline (stored in UTC) agree."""
    from django.test import override_settings

    event = _timed_event()
    received = (
        '<time datetime="2026-01-15T14:30:05+00:00" title="2026-01-15 14:30:05 UTC">'
        "2026-01-15 09:30:05</time>"
    )
    with override_settings(TIME_ZONE="America/New_York"):
        html = _detail(admin_client, event)
        listed = admin_client.get(reverse("admin:webhooks_app_webhookevent_changelist"))
    assert html.count(received) == 2  # the summary and the "received at" field
    # Summer time (UTC-4) for the July attempts, winter time (UTC-5) for January.
    assert (
        '<time datetime="2026-07-01T12:00:00+00:00" title="2026-07-01 12:00:00 UTC">'
        "2026-07-01 08:00:00</time>"
    ) in html
    assert re.findall('<td class="wh-duration">(.*?)</td>', html) == ["1.4 s", "17.8 min", "2 ms"]
    assert "Dead after 3 attempt(s): no attempts left. Fix the cause, then replay it." in html
    assert "ValueError: &lt;b&gt;boom&lt;/b&gt; on attempt 3</p>" in html  # the last error line
    row = listed.content.decode().split('id="result_list"')[1]
    assert received in row and '<td class="field-last_duration">2 ms</td>' in row


def test_summary_says_when_the_next_attempt_runs(admin_client):
    from datetime import timedelta

    from django.utils import timezone

    event = _timed_event(
        status=EventStatus.FAILED,
        attempts=2,
        next_attempt_at=timezone.now() + timedelta(seconds=90),
    )
    assert "Attempt 3 of 3 at " in _detail(admin_client, event)
    assert " (in 1.5 min)." in _detail(admin_client, event)
    succeeded = _timed_event(webhook_id="ok", status=EventStatus.SUCCEEDED, error="", attempts=4)
    html = _detail(admin_client, succeeded)
    assert "Succeeded on attempt 4 at " in html and ", in 2 ms." in html
    assert 'class="wh-summary-error"' not in html


def test_purge_confirmation_is_styled_as_a_destructive_one(admin_client, dead_event):
    url = reverse("admin:webhooks_app_webhookevent_changelist")
    html = admin_client.post(url, {"action": "purge", "_selected_action": [dead_event.pk]})
    assert "delete-confirmation" in html.content.decode().split("<body")[1].split(">")[0]


CONTROLS = "/admin/webhooks_app/webhookevent/controls/"
STEER = "/admin/webhooks_app/webhookevent/controls/steer/"


def _staff(*codenames: str) -> User:
    user = User.objects.create_user(f"staff{User.objects.count()}", password="pw", is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def _control_rows(html: str, kind: str) -> dict[str, str]:
    """The controls page's rows of one table, by name: the row's HTML."""
    table = html.split(f'id="controls-{kind}"')[1].split("</table>")[0]
    rows = table.split("<tbody>")[1].split("<tr")[1:]
    return {re.search(r'">([^<]+)</a></td>', row)[1]: row for row in rows}


def test_controls_page_lists_every_source_and_workflow(admin_client, dead_event):
    assert reverse("admin:webhooks_app_controls") == CONTROLS
    WebhookEvent.objects.create(source="github", webhook_id="p1", workflow_name="record")
    WebhookEvent.objects.create(
        source="github", webhook_id="f1", workflow_name="record", status=EventStatus.FAILED
    )
    services.pause("source", "github", by="alice")
    html = admin_client.get(CONTROLS).content.decode()
    sources = _control_rows(html, "source")
    assert list(sources) == ["generic", "github", "ordered"]
    github = sources["github"]
    assert "Paused" in github and '<td class="wh-control-waiting">2</td>' in github
    assert " by alice" in github and "<time " in github
    assert 'value="Resume"' in github and 'name="csrfmiddlewaretoken"' in github
    assert "?source=github" in github  # its events, one click away
    assert "Running" in sources["generic"] and 'value="Pause"' in sources["generic"]
    assert "never" in sources["generic"]
    workflows = _control_rows(html, "workflow")
    assert {"record", "fail", "one_at_a_time"} <= set(workflows)
    assert '<td class="wh-control-waiting">2</td>' in workflows["record"]
    assert "?workflow_name=record" in workflows["record"]


def test_controls_page_is_linked_from_the_dashboard_and_the_event_list(admin_client):
    dashboard = admin_client.get(reverse("admin:webhooks_app_dashboard")).content.decode()
    assert f'href="{CONTROLS}"' in dashboard
    changelist = admin_client.get(reverse("admin:webhooks_app_webhookevent_changelist"))
    assert f'href="{CONTROLS}"' in changelist.content.decode()


def test_pause_and_resume_from_the_controls_page(admin_client):
    done = admin_client.post(
        STEER, {"kind": "workflow", "name": "record", "step": "pause"}, follow=True
    )
    assert done.redirect_chain == [(CONTROLS, 302)]
    assert "Paused workflow &#x27;record&#x27;." in done.content.decode()
    control = ProcessingControl.objects.get(kind="workflow", name="record")
    assert control.paused and control.changed_by == "admin"
    held = WebhookEvent.objects.create(source="generic", webhook_id="h", workflow_name="record")
    assert tasks.process_event(held.pk).startswith("skipped")
    assert 'value="Resume"' in _control_rows(done.content.decode(), "workflow")["record"]
    done = admin_client.post(
        STEER, {"kind": "workflow", "name": "record", "step": "resume"}, follow=True
    )
    assert (
        "Resumed workflow &#x27;record&#x27;: 1 waiting event put back on the queue."
        in done.content.decode()
    )
    assert tasks.process_event(held.pk) == "succeeded"


def test_steering_an_unknown_name_says_so_and_changes_nothing(admin_client):
    done = admin_client.post(
        STEER, {"kind": "source", "name": "nope", "step": "pause"}, follow=True
    )
    assert (
        "No source is named &#x27;nope&#x27;. Known sources: generic, github, ordered."
        in done.content.decode()
    )
    assert not ProcessingControl.objects.exists()
    for form in ({"kind": "queue", "name": "x", "step": "pause"},
                 {"kind": "source", "name": "github", "step": "delete"}, {}):  # fmt: skip
        assert admin_client.post(STEER, form).status_code == 400
    assert not ProcessingControl.objects.exists()


def test_steering_needs_post_csrf_and_the_change_permission(client):
    pause = {"kind": "source", "name": "github", "step": "pause"}
    assert client.get(CONTROLS).status_code == 302  # anonymous: to the login page
    client.force_login(_staff())
    assert client.get(CONTROLS).status_code == 403  # no view permission
    client.force_login(_staff("view_webhookevent"))
    html = client.get(CONTROLS).content.decode()
    assert "github" in html and 'value="Pause"' not in html  # seen, not offered
    assert client.post(STEER, pause).status_code == 403
    client.force_login(_staff("view_webhookevent", "change_webhookevent"))
    assert 'value="Pause"' in client.get(CONTROLS).content.decode()
    assert client.get(STEER).status_code == 405
    assert not ProcessingControl.objects.exists()
    from django.test import Client

    csrf_checked = Client(enforce_csrf_checks=True)
    csrf_checked.force_login(User.objects.create_superuser("root", password="pw"))
    assert csrf_checked.post(STEER, pause).status_code == 403
    assert not ProcessingControl.objects.exists()


def _ordered(webhook_id: str, **fields) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source="ordered", webhook_id=webhook_id, workflow_name="record", order_key="c1", **fields
    )


def test_event_page_says_what_holds_a_waiting_event_back(admin_client):
    from datetime import timedelta

    from django.utils import timezone

    first = _ordered(
        "first", status=EventStatus.FAILED, attempts=1,
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )  # fmt: skip
    second = _ordered("second")
    assert tasks.process_event(second.pk).startswith("skipped")  # the claim marks it
    summary = _detail(admin_client, second).split('id="event-summary"')[1].split("</section>")[0]
    first_url = reverse("admin:webhooks_app_webhookevent_change", args=[first.pk])
    assert (
        f'<strong>Waiting:</strong> held by <a href="{first_url}">event {first.pk}</a> '
        "(key &#x27;c1&#x27;).</p>"
    ) in summary
    assert "it starts by itself once nothing holds it back" in summary
    assert "check that a qcluster runs" not in summary
    services.pause("source", "ordered")
    assert "<strong>Waiting:</strong> paused: source &#x27;ordered&#x27;." in _detail(
        admin_client, second
    )
    services.resume("source", "ordered")
    WebhookEvent.objects.filter(pk=first.pk).update(status=EventStatus.DEAD)
    assert "<strong>Waiting:</strong>" not in _detail(admin_client, second)  # nothing holds it


def test_a_workflow_at_its_concurrency_limit_is_said_on_the_page_and_in_the_list(admin_client):
    from datetime import timedelta

    from django.utils import timezone

    WebhookEvent.objects.create(
        source="generic", webhook_id="busy", workflow_name="one_at_a_time",
        status=EventStatus.RUNNING, attempts=1, started_at=timezone.now(),
        lease_expires_at=timezone.now() + timedelta(minutes=1),
    )  # fmt: skip
    waiting = WebhookEvent.objects.create(
        source="generic", webhook_id="next", workflow_name="one_at_a_time"
    )
    assert tasks.process_event(waiting.pk).startswith("skipped")
    assert (
        "<strong>Waiting:</strong> waiting for the concurrency limit of "
        "&#x27;one_at_a_time&#x27; (1 running).</p>"
    ) in _detail(admin_client, waiting)
    listed = admin_client.get(reverse("admin:webhooks_app_webhookevent_changelist"))
    assert (
        '<small class="wh-waiting" title="Its page says what it waits for">· concurrency limit'
        in (listed.content.decode())
    )


def test_event_list_shows_what_holds_events_back_without_a_query_per_row(
    admin_client, django_assert_max_num_queries
):
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    _ordered(
        "first", status=EventStatus.FAILED, attempts=1,
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )  # fmt: skip
    second = _ordered("second")
    tasks.process_event(second.pk)  # refused: the claim marks it waiting for its key
    WebhookEvent.objects.create(source="github", webhook_id="gh", workflow_name="record")
    WebhookEvent.objects.create(source="generic", webhook_id="plain", workflow_name="record")
    WebhookEvent.objects.create(
        source="generic", webhook_id="wf", workflow_name="fail", status=EventStatus.FAILED
    )
    WebhookEvent.objects.create(
        source="github", webhook_id="gh-done", workflow_name="record", status=EventStatus.SUCCEEDED
    )
    services.pause("source", "github")
    services.pause("workflow", "fail")
    url = reverse("admin:webhooks_app_webhookevent_changelist")

    def statuses() -> dict[str, str]:
        rows = admin_client.get(url).content.decode().split("<tbody>")[1]
        cells = re.findall(
            r'class="wh-id" title="([^"]+)">.*?<td class="field-coloured_status">(.*?)</td>',
            rows,
        )
        return {webhook_id: re.sub("<[^>]+>", "", cell) for webhook_id, cell in cells}

    assert statuses() == {
        "first": "Failed (will retry)", "second": "Pending · held by its key",
        "gh": "Pending · paused", "plain": "Pending", "wf": "Failed (will retry) · paused",
        "gh-done": "Succeeded",
    }  # fmt: skip
    with CaptureQueriesContext(connection) as few:
        admin_client.get(url)
    WebhookEvent.objects.bulk_create(
        WebhookEvent(source="github", webhook_id=f"more{i}", workflow_name="record")
        for i in range(30)
    )
    with django_assert_max_num_queries(len(few)):
        assert list(statuses().values()).count("Pending · paused") == 31


def test_a_lapsed_lease_reads_as_taken_over(admin_client):
    history = [
        {"attempt": 1, "started_at": "2026-01-15T14:30:06+00:00", "duration_ms": 3100.0,
         "outcome": "lost", "lease_lapsed": True, "error": "Its worker stopped renewing the lease."},
        {"attempt": 2, "started_at": "2026-01-15T14:30:10+00:00", "duration_ms": 20.0,
         "outcome": "succeeded"},
    ]  # fmt: skip
    event = WebhookEvent.objects.create(
        source="generic", webhook_id="lapsed", workflow_name="record", attempts=2,
        status=EventStatus.SUCCEEDED, history=history,
    )  # fmt: skip
    outcomes = re.findall(r'<td class="wh-outcome">(.*?)</td>', _detail(admin_client, event))
    assert outcomes == ["lease lapsed: taken over", "succeeded"]
