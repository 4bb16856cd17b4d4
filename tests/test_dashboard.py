from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from webhooks_app import dashboard, services
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.django_db

URL = "/admin/webhooks_app/webhookevent/dashboard/"


@pytest.fixture
def events():
    now = timezone.now()
    rows = []
    for i, status in enumerate(
        [EventStatus.SUCCEEDED] * 6 + [EventStatus.DEAD, EventStatus.FAILED, EventStatus.PENDING]
    ):
        received = now - timedelta(hours=i)
        rows.append(
            WebhookEvent(
                source="github" if i % 2 else "generic", webhook_id=f"e{i}", workflow_name="record", status=status,
                received_at=received, started_at=received + timedelta(milliseconds=50),
                finished_at=received + timedelta(milliseconds=50 + 10 * i), error="ValueError: boom" if i >= 6 else "",
            )
        )  # fmt: skip
    rows.append(
        WebhookEvent(
            source="generic",
            webhook_id="old",
            status="succeeded",
            received_at=now - timedelta(days=3),
        )
    )
    WebhookEvent.objects.bulk_create(rows)


def test_snapshot_numbers(events):
    snap = dashboard.snapshot()
    assert snap["counts"]["succeeded"] == 6
    assert snap["counts"]["dead"] == 1 and snap["counts"]["failed"] == 1
    assert snap["total"] == 9  # the 3-day-old one is outside the 24 h window
    assert snap["failure_rate"] == pytest.approx(2 / 8)
    assert snap["latency"]["sample"] == 6
    assert snap["latency"]["processing_p50"] == pytest.approx(30, abs=10.1)
    assert sum(bar["total"] for bar in snap["hourly"]["bars"]) == 9
    assert sum(bar["total"] for bar in snap["daily"]["bars"]) == 10
    assert [e.webhook_id for e in snap["failures"]] == ["e6", "e7"]
    assert {row["source"]: row["total"] for row in snap["by_source"]} == {"generic": 5, "github": 4}


def test_dashboard_renders_with_chart_and_failures(
    admin_client, events, django_assert_max_num_queries
):
    # 16: the database sources' stamp and rows, for the sources without a secret (E032).
    with django_assert_max_num_queries(16):
        response = admin_client.get(URL)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="chart-24h"' in html and "<rect" in html
    assert 'id="recent-failures"' in html and "ValueError: boom" in html
    assert 'http-equiv="refresh"' in html
    assert "cdn" not in html.lower()


def test_dashboard_is_linked_from_index_and_event_list(admin_client):
    assert "/admin/webhooks_app/dashboard/" in admin_client.get("/admin/").content.decode()
    assert admin_client.get("/admin/webhooks_app/dashboard/")["Location"] == URL
    changelist = admin_client.get(
        reverse("admin:webhooks_app_webhookevent_changelist")
    ).content.decode()
    assert URL in changelist


def test_empty_dashboard_renders(admin_client):
    assert admin_client.get(URL).status_code == 200


def test_permissions(client, events):
    assert client.get(URL).status_code == 302  # anonymous: to the login page
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(URL).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    assert client.get(URL).status_code == 200
    dead = WebhookEvent.objects.get(webhook_id="e6")
    replay = reverse("admin:webhooks_app_webhookevent_replay", args=[dead.pk])
    assert client.post(replay).status_code == 403  # no change permission
    assert "Replay" not in client.get(URL).content.decode().split('id="recent-failures"')[1]


def test_replay_button_needs_post_and_requeues(admin_client, events):
    dead = WebhookEvent.objects.get(webhook_id="e6")
    url = reverse("admin:webhooks_app_webhookevent_replay", args=[dead.pk])
    assert admin_client.get(url).status_code == 405
    response = admin_client.post(url, {"next": URL})
    assert response.status_code == 302 and response["Location"] == URL
    dead.refresh_from_db()
    assert dead.status == EventStatus.PENDING


def test_replay_button_needs_a_csrf_token(events):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.create_superuser("root", password="pw"))
    dead = WebhookEvent.objects.get(webhook_id="e6")
    response = client.post(reverse("admin:webhooks_app_webhookevent_replay", args=[dead.pk]))
    assert response.status_code == 403
    dead.refresh_from_db()
    assert dead.status == EventStatus.DEAD


@pytest.mark.parametrize(
    "next_url",
    ["https://evil.example/", "//evil.example", "/\\evil.example", "http://testserver.evil/"],
)
def test_replay_button_never_redirects_off_site(admin_client, events, next_url):
    dead = WebhookEvent.objects.get(webhook_id="e6")
    url = reverse("admin:webhooks_app_webhookevent_replay", args=[dead.pk])
    response = admin_client.post(url, {"next": next_url})
    assert response.status_code == 302 and response["Location"] == URL  # the dashboard instead
    dead.refresh_from_db()
    assert dead.status == EventStatus.PENDING  # the replay itself is done


def test_replay_button_keeps_a_local_next_with_its_query(admin_client, events):
    dead = WebhookEvent.objects.get(webhook_id="e6")
    url = reverse("admin:webhooks_app_webhookevent_replay", args=[dead.pk])
    response = admin_client.post(url, {"next": f"{URL}?refresh=1"})
    assert response["Location"] == f"{URL}?refresh=1"


def test_latest_failures_show_the_exception_not_the_traceback(admin_client):
    WebhookEvent.objects.create(
        source="generic", webhook_id="tb", workflow_name="record", status=EventStatus.DEAD,
        error="Traceback (most recent call last):\n  File \"w.py\", line 3, in run\n"
              "KeyError: 'customer'\n",
        history=[{"attempt": 1, "outcome": "failed", "error": "KeyError: 'customer'"}],
    )  # fmt: skip
    WebhookEvent.objects.create(
        source="generic", webhook_id="hand-made", status=EventStatus.FAILED,
        error="Traceback (most recent call last):\n  File \"w.py\"\nValueError: no history\n\n",
    )  # fmt: skip
    failures = admin_client.get(URL).content.decode().split('id="recent-failures"')[1]
    errors = re.findall(r'<td class="wh-error" title="[^"]*">(.*?)</td>', failures)
    assert errors == ["ValueError: no history", "KeyError: &#x27;customer&#x27;"]
    assert "Traceback" not in failures


def test_charts_have_count_and_time_axes(admin_client, events):
    html = admin_client.get(URL).content.decode()
    hourly = html.split('id="chart-24h"')[1].split("</figure>")[0]
    counts = re.findall(
        r'<text x="28" y="[\d.]+" dy="0.35em" text-anchor="end">(\d+)</text>', hourly
    )
    assert counts == ["0", "1"]  # one event per hour at most: the axis ends on 1
    hours = re.findall(r'text-anchor="middle">(\d\d:\d\d)</text>', hourly)
    assert 8 <= len(hours) <= 9 and all(int(h[:2]) % 3 == 0 and h.endswith(":00") for h in hours)
    daily = html.split('id="chart-7d"')[1].split("</figure>")[0]
    assert len(re.findall(r'text-anchor="middle">\w{3} \d+ \w{3}</text>', daily)) == 8


@pytest.mark.parametrize(
    ("peak", "ticks"),
    [(0, [0, 1]), (1, [0, 1]), (4, [0, 1, 2, 3, 4]), (7, [0, 2, 4, 6, 8]),
     (9, [0, 5, 10]), (64, [0, 20, 40, 60, 80]), (1234, [0, 500, 1000, 1500])],
)  # fmt: skip
def test_count_axis_ends_on_a_round_number_above_the_peak(peak, ticks):
    assert dashboard.count_ticks(peak) == ticks


def test_breakdown_headers_are_words(admin_client, events):
    html = admin_client.get(URL).content.decode()
    assert "workflow_name" not in html.split('class="wh-tables"')[1]
    assert "<th>Workflow</th>" in html and "<th>Source</th>" in html


def test_times_and_latencies_in_the_users_time_zone(admin_client, events):
    """Latencies in human units (a 64 s p95 is not ``64257`` ms), failure times in the
    current zone to the second, UTC in the title."""
    from zoneinfo import ZoneInfo

    from django.test import override_settings

    slow = timezone.now() - timedelta(minutes=5)
    WebhookEvent.objects.create(
        source="generic", webhook_id="slow", workflow_name="record", status="succeeded",
        received_at=slow, started_at=slow, finished_at=slow + timedelta(milliseconds=64257),
    )  # fmt: skip
    with override_settings(TIME_ZONE="America/New_York"):
        html = admin_client.get(URL).content.decode()
    assert '<div class="n">30 ms / 1.1 min</div><div class="l">processing p50 / p95</div>' in html
    dead = WebhookEvent.objects.get(webhook_id="e6").received_at
    shown = dead.astimezone(ZoneInfo("America/New_York")).strftime("%Y-%m-%d %H:%M:%S")
    in_utc = dead.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%d %H:%M:%S")
    assert f'title="{in_utc} UTC">{shown}</time>' in html.split('id="recent-failures"')[1]
    assert "(America/New_York), refreshes every 30 s" in html


def test_a_source_without_secret_is_an_error_at_the_top(admin_client):
    """Every delivery to it is refused with 503: the dashboard says so before any number."""
    from django.test import override_settings
    from django.utils.html import escape

    from webhooks_app.checks import message

    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SECRETS": []}}}):
        html = admin_client.get(URL).content.decode()
    error = message(
        "E003", source="generic", env="WEBHOOK_SECRET_GENERIC or WEBHOOK_SECRET_DEFAULT"
    )
    block = html.split('id="missing-secrets"')[1].split("</ul>")[0]
    assert f'<li class="error">{escape(error.msg)} {escape(error.hint)}' in block
    assert html.index('id="missing-secrets"') < html.index('id="status-counts"')
    assert 'id="missing-secrets"' not in admin_client.get(URL).content.decode()


def test_dashboard_says_what_is_paused(admin_client):
    assert 'id="paused-controls"' not in admin_client.get(URL).content.decode()
    services.pause("source", "github")
    services.pause("workflow", "record")
    html = admin_client.get(URL).content.decode()
    banner = html.split('id="paused-controls"')[1].split("</ul>")[0]
    assert "Paused: source &lsquo;github&rsquo;, workflow &lsquo;record&rsquo;." in banner
