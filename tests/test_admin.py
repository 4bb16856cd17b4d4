from __future__ import annotations

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
