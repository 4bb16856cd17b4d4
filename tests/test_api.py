from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.django_db

EVENTS = "/webhooks/api/events/"
SCHEMA = "/webhooks/api/schema/"


@pytest.fixture
def events():
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            source="github" if i % 2 else "generic", webhook_id=f"e{i}",
            workflow_name="record" if i % 3 else "fail",
            status=EventStatus.DEAD if i % 4 == 0 else EventStatus.SUCCEEDED,
        )
        for i in range(12)
    )  # fmt: skip


def client_with(*perms: str, staff: bool = True) -> APIClient:
    user = User.objects.create_user(f"u{User.objects.count()}", password="pw", is_staff=staff)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_list_filters_and_cursor_pagination(events):
    client = client_with("view_webhookevent")
    page = client.get(EVENTS, {"page_size": 5}).json()
    assert len(page["results"]) == 5 and page["next"] and "count" not in page
    seen = [e["webhook_id"] for e in page["results"]]
    while page["next"]:
        page = client.get(page["next"]).json()
        seen += [e["webhook_id"] for e in page["results"]]
    assert sorted(seen) == sorted(f"e{i}" for i in range(12))
    dead = client.get(EVENTS, {"status": "dead"}).json()["results"]
    assert {e["webhook_id"] for e in dead} == {"e0", "e4", "e8"}
    github_fail = client.get(EVENTS, {"source": "github", "workflow": "fail"}).json()["results"]
    assert {e["webhook_id"] for e in github_fail} == {"e3", "e9"}


def test_detail(events):
    event = WebhookEvent.objects.get(webhook_id="e4")
    body = client_with("view_webhookevent").get(f"{EVENTS}{event.pk}/").json()
    assert body["webhook_id"] == "e4" and body["status"] == "dead" and "payload" in body


def test_replay_needs_post_and_change_permission(events):
    event = WebhookEvent.objects.get(webhook_id="e4")
    url = f"{EVENTS}{event.pk}/replay/"
    assert client_with("view_webhookevent").post(url).status_code == 403
    editor = client_with("view_webhookevent", "change_webhookevent")
    assert editor.get(url).status_code == 405
    response = editor.post(url)
    assert response.status_code == 200 and response.json() == {"replayed": 1}
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING


def test_anonymous_and_unprivileged_users_are_refused(events):
    assert APIClient().get(EVENTS).status_code in (401, 403)
    assert client_with().get(EVENTS).status_code == 403  # staff without the view permission
    assert client_with("view_webhookevent", staff=False).get(EVENTS).status_code == 403


def test_schema_documents_the_api_and_the_receiving_endpoints():
    response = client_with("view_webhookevent").get(SCHEMA, {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) == {
        "/webhooks/{source}/", "/webhooks/health/", "/webhooks/api/events/",
        "/webhooks/api/events/{id}/", "/webhooks/api/events/{id}/replay/",
    }  # fmt: skip
    responses = schema["paths"]["/webhooks/{source}/"]["post"]["responses"]
    assert {"202", "200", "401", "413", "415", "422", "503"} <= set(responses)


def test_filter_values_that_no_database_can_compare_are_400(events):
    client = client_with("view_webhookevent")
    for value in ("a\x00b", "x" * 300):
        response = client.get(EVENTS, {"source": value})
        assert response.status_code == 400, response.content


def test_schema_is_for_staff_who_may_read_the_api():
    assert APIClient().get(SCHEMA, {"format": "json"}).status_code == 403
    assert client_with().get(SCHEMA, {"format": "json"}).status_code == 403


def editor() -> User:
    user = User.objects.create_user("editor", password="editor-pw", is_staff=True)
    for codename in ("view_webhookevent", "change_webhookevent"):
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


BASIC = "Basic " + base64.b64encode(b"editor:editor-pw").decode()


def test_replay_with_basic_credentials_and_no_csrf_token_is_refused(events):
    """Browsers resend Basic credentials by themselves: a forged cross-site form would carry
    them, and DRF's BasicAuthentication checks no CSRF token. The staff API ignores them."""
    editor()
    event = WebhookEvent.objects.get(webhook_id="e4")
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{EVENTS}{event.pk}/replay/", HTTP_AUTHORIZATION=BASIC)
    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert client.get(EVENTS, HTTP_AUTHORIZATION=BASIC).status_code == 403
    event.refresh_from_db()
    assert event.status == EventStatus.DEAD


def test_replay_over_the_session_needs_its_csrf_token(events):
    event = WebhookEvent.objects.get(webhook_id="e4")
    url = f"{EVENTS}{event.pk}/replay/"
    client = Client(enforce_csrf_checks=True)
    client.force_login(editor())
    refused = client.post(url)
    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    event.refresh_from_db()
    assert event.status == EventStatus.DEAD
    client.get("/admin/")  # any page with a form sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(url, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 200 and response.json() == {"replayed": 1}
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING


def test_other_authentication_only_when_the_project_configures_it(events, settings):
    editor()
    settings.WEBHOOKS = {
        **settings.WEBHOOKS,
        "API_AUTHENTICATION_CLASSES": ["rest_framework.authentication.BasicAuthentication"],
    }
    event = WebhookEvent.objects.get(webhook_id="e4")
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{EVENTS}{event.pk}/replay/", HTTP_AUTHORIZATION=BASIC)
    assert response.status_code == 200 and response.json() == {"replayed": 1}
