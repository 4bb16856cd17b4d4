from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from webhooks_app.models import EventStatus, WebhookEvent

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
