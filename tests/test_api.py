from __future__ import annotations

import base64

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from rest_framework.test import APIClient

from tests.conftest import client_with
from webhooks_app import tasks
from webhooks_app.models import EventStatus, ProcessingControl, WebhookEvent

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
        "/webhooks/{source}/", "/webhooks/health/", "/webhooks/metrics/", "/webhooks/api/events/",
        "/webhooks/api/events/{id}/", "/webhooks/api/events/{id}/replay/",
        "/webhooks/api/sources/", "/webhooks/api/sources/{name}/pause/",
        "/webhooks/api/sources/{name}/resume/", "/webhooks/api/workflows/",
        "/webhooks/api/workflows/{name}/pause/", "/webhooks/api/workflows/{name}/resume/",
        "/webhooks/api/alerts/",
        "/webhooks/api/replays/", "/webhooks/api/replays/{id}/",
        "/webhooks/api/replays/{id}/cancel/",
    }  # fmt: skip
    responses = schema["paths"]["/webhooks/{source}/"]["post"]["responses"]
    assert {"202", "200", "401", "413", "415", "422", "503"} <= set(responses)
    for kind in ("sources", "workflows"):
        listed = schema["paths"][f"/webhooks/api/{kind}/"]["get"]["responses"]["200"]
        items = listed["content"]["application/json"]["schema"]["items"]["$ref"]
        fields = schema["components"]["schemas"][items.rsplit("/", 1)[1]]["properties"]
        assert set(fields) == {"name", "paused", "waiting", "changed_at", "changed_by"}
        resume = schema["paths"][f"/webhooks/api/{kind}/{{name}}/resume/"]["post"]
        assert {"200", "403", "404"} <= set(resume["responses"])
        assert [p["name"] for p in resume["parameters"]] == ["name"]


def test_filter_values_that_no_database_can_compare_are_400(events):
    client = client_with("view_webhookevent")
    for value in ("a\x00b", "x" * 300):
        response = client.get(EVENTS, {"source": value})
        assert (response.status_code, response.json()) == (
            400,
            {
                "error": "invalid_filter",
                "detail": "source: a filter value holds no NUL character and at most 255 "
                "characters.",
            },
        )


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


SOURCES, WORKFLOWS = "/webhooks/api/sources/", "/webhooks/api/workflows/"


def _held(source: str = "github", workflow: str = "record", n: int = 1) -> list[WebhookEvent]:
    """``n`` pending events of ``source`` and ``workflow``."""
    return [
        WebhookEvent.objects.create(
            source=source, webhook_id=f"{source}-{workflow}-{i}", workflow_name=workflow
        )
        for i in range(n)
    ]


def test_sources_and_workflows_are_listed_with_their_state_and_backlog():
    _held("github", "record", 2)
    WebhookEvent.objects.create(
        source="github", webhook_id="done", workflow_name="record", status=EventStatus.SUCCEEDED
    )
    client = client_with("view_webhookevent")
    sources = client.get(SOURCES)
    assert sources.status_code == 200
    by_name = {row["name"]: row for row in sources.json()}
    assert set(by_name) == {"generic", "github", "ordered"}
    assert by_name["github"] == {
        "name": "github", "paused": False, "waiting": 2, "changed_at": None, "changed_by": "",
    }  # fmt: skip
    workflows = {row["name"]: row for row in client.get(WORKFLOWS).json()}
    assert {"record", "fail", "one_at_a_time"} <= set(workflows)
    assert workflows["record"]["waiting"] == 2 and workflows["fail"]["waiting"] == 0


def test_pause_holds_events_back_and_resume_runs_them():
    client = client_with("view_webhookevent", "change_webhookevent")
    username = User.objects.latest("pk").username
    paused = client.post(f"{SOURCES}github/pause/")
    assert paused.status_code == 200 and paused.json() == {"name": "github", "paused": True}
    row = next(r for r in client.get(SOURCES).json() if r["name"] == "github")
    assert row["paused"] is True and row["changed_by"] == username and row["changed_at"]
    (event,) = _held("github")
    assert tasks.process_event(event.pk).startswith("skipped")
    event.refresh_from_db()
    assert event.status == EventStatus.PENDING and event.attempts == 0
    resumed = client.post(f"{SOURCES}github/resume/")
    assert resumed.status_code == 200
    assert resumed.json() == {"name": "github", "paused": False, "requeued": 1}
    assert tasks.process_event(event.pk) == "succeeded"
    # Resuming what is not paused requeues nothing.
    assert client.post(f"{SOURCES}github/resume/").json()["requeued"] == 0


def test_workflow_pause_and_resume():
    client = client_with("view_webhookevent", "change_webhookevent")
    assert client.post(f"{WORKFLOWS}record/pause/").json() == {"name": "record", "paused": True}
    held, other = _held("generic", "record")[0], _held("generic", "sleep")[0]
    assert tasks.process_event(held.pk).startswith("skipped")
    assert next(r for r in client.get(WORKFLOWS).json() if r["name"] == "record")["paused"]
    assert client.post(f"{WORKFLOWS}record/resume/").json()["requeued"] == 1
    assert tasks.process_event(held.pk) == "succeeded"
    other.refresh_from_db()
    assert other.status == EventStatus.PENDING  # never touched by the workflow's resume


@pytest.mark.parametrize("step", ["pause", "resume"])
def test_unknown_names_are_404_naming_the_known_ones(step):
    client = client_with("view_webhookevent", "change_webhookevent")
    response = client.post(f"{SOURCES}nope/{step}/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "No source is named 'nope'. Known sources: generic, github, ordered."
    }
    response = client.post(f"{WORKFLOWS}no.such.workflow/{step}/")
    assert response.status_code == 404
    assert "No workflow is named 'no.such.workflow'." in response.json()["detail"]
    assert not ProcessingControl.objects.exists()


def test_pause_and_resume_need_staff_with_the_change_permission():
    viewer = client_with("view_webhookevent")
    assert viewer.get(SOURCES).status_code == 200
    for url in (f"{SOURCES}github/pause/", f"{WORKFLOWS}record/resume/", f"{SOURCES}nope/pause/"):
        assert viewer.post(url).status_code == 403
    assert client_with("change_webhookevent").get(SOURCES).status_code == 403  # no view
    not_staff = client_with("view_webhookevent", "change_webhookevent", staff=False)
    assert not_staff.post(f"{SOURCES}github/pause/").status_code == 403
    assert APIClient().get(WORKFLOWS).status_code in (401, 403)
    assert APIClient().post(f"{SOURCES}github/pause/").status_code in (401, 403)
    assert not ProcessingControl.objects.exists()
    editor = client_with("view_webhookevent", "change_webhookevent")
    assert editor.get(f"{SOURCES}github/pause/").status_code == 405


def test_pause_over_the_session_needs_its_csrf_token():
    client = Client(enforce_csrf_checks=True)
    client.force_login(editor())
    assert client.post(f"{SOURCES}github/pause/").status_code == 403
    assert not ProcessingControl.objects.exists()
    client.get("/admin/")
    token = client.cookies["csrftoken"].value
    assert client.post(f"{SOURCES}github/pause/", HTTP_X_CSRFTOKEN=token).status_code == 200
    assert ProcessingControl.objects.get(kind="source", name="github").paused
