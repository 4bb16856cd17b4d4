"""The sources' admin pages (contract §12): the list of database and settings sources, a new
source with its first secret, *Add secret*, *Rotate secret*, a settings source's read-only
page, and what none of them ever shows: a secret's value after it was saved."""

from __future__ import annotations

import sys
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.signals import got_request_exception
from django.test import Client, override_settings
from django.urls import reverse
from django.utils import timezone
from django.views.debug import ExceptionReporter

from tests.conftest import envelope, sign
from webhooks_app import services
from webhooks_app.models import (
    ControlKind,
    EventStatus,
    WebhookEvent,
    WebhookSource,
    WebhookSourceSecret,
)

pytestmark = pytest.mark.django_db

SECRET = "pasted-provider-secret-0123456789-abcdefgh"
OTHER = "another-pasted-secret-0123456789-ijklmnopq"
LIST = "admin:webhooks_app_webhooksource_changelist"


def page(client: Client, name: str, *args: Any) -> str:
    response = client.get(reverse(name, args=args))
    assert response.status_code == 200, response.status_code
    return response.content.decode()


class _Rows(HTMLParser):
    """The rows of the table with ``id``: each cell's text, an icon counted as its ``alt``."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id, self.depth, self.rows = table_id, 0, []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and (self.depth or found.get("id") == self.table_id):
            self.depth += 1
        elif self.depth and tag == "tr":
            self.rows.append([])
        elif self.depth and tag in ("td", "th"):
            self.cell = []
        elif self.cell is not None and tag == "img":
            self.cell.append(found.get("alt") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table" and self.depth:
            self.depth -= 1
        elif self.cell is not None and tag in ("td", "th"):
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def table(html: str, table_id: str) -> list[list[str]]:
    """The body rows of a table (the header row left out)."""
    parser = _Rows(table_id)
    parser.feed(html)
    return [row for row in parser.rows[1:] if row]


def new_source(**fields: Any) -> dict[str, str]:
    """The add form's POST for a generic source ``acme``."""
    return {
        "name": "acme", "scheme": "generic", "enabled": "on", "routes": "{}", "options": "{}",
        "secret": SECRET, "secret_label": "from the provider", **fields,
    }  # fmt: skip


def delivered(client: Client, secret: str, webhook_id: str, url: str = "/webhooks/acme/") -> int:
    body = envelope("record", webhook_id)
    return client.post(
        url, body, content_type="application/json", HTTP_X_WEBHOOK_SIGNATURE=sign(body, secret)
    ).status_code


def make_source(name: str = "acme", **fields: Any) -> WebhookSource:
    source = WebhookSource.objects.create(name=name, scheme="generic", **fields)
    source.add_secret(SECRET, label="first")
    return source


# The list


def test_the_list_shows_database_and_settings_sources_with_their_activity(admin_client):
    acme = make_source()
    make_source("quiet")
    WebhookSource.objects.create(name="off", scheme="github", enabled=False)
    WebhookSource.objects.create(name="generic", scheme="github")  # a settings source's name
    WebhookEvent.objects.create(source="acme", webhook_id="1", workflow_name="record")
    WebhookEvent.objects.create(
        source="acme", webhook_id="2", workflow_name="record", status=EventStatus.DEAD
    )
    WebhookEvent.objects.create(
        source="quiet", webhook_id="old", workflow_name="record",
        received_at=timezone.now() - timedelta(days=3),
    )  # fmt: skip
    services.pause(ControlKind.SOURCE, "acme", by="test")

    html = page(admin_client, LIST)
    # After the action checkbox: name, then scheme, state, paused, secrets, 24 h, last delivery.
    rows = {cells[1]: cells[2:] for cells in table(html, "result_list")}
    assert rows["acme"][:5] == ["generic", "served", "paused", "1", "2 (1 failed)"]
    assert rows["quiet"][1:6] == ["served", "no", "1", "none", "more than 24 h ago"]
    assert rows["off"][1:6] == ["disabled: deliveries get 404", "no", "0", "none", "never"]
    assert rows["generic"][1] == "shadowed: the settings source of this name answers"
    assert rows["acme"][-1] == "http://testserver/webhooks/acme/"
    settings_rows = {cells[0]: cells[1:] for cells in table(html, "settings-sources")}
    assert settings_rows["github"][0] == "github" and settings_rows["github"][1] == "served"
    assert settings_rows["github"][-1] == "http://testserver/webhooks/github/"
    assert reverse("admin:webhooks_app_webhooksource_settings", args=["github"]) in html
    assert str(acme.secrets.get().fingerprint) not in html  # the list counts secrets only


def test_the_list_costs_the_same_queries_for_two_sources_as_for_twenty(
    admin_client, django_assert_max_num_queries
):
    for n in range(2):
        make_source(f"s{n}")
    WebhookEvent.objects.create(source="s0", webhook_id="1", workflow_name="record")
    admin_client.get(reverse(LIST))  # sessions, content types: what the first view loads
    with django_assert_max_num_queries(40) as few:
        page(admin_client, LIST)
    for n in range(2, 20):
        make_source(f"s{n}")
        WebhookEvent.objects.create(source=f"s{n}", webhook_id="1", workflow_name="record")
    with django_assert_max_num_queries(len(few.captured_queries)):
        page(admin_client, LIST)


# A new source


def test_a_source_added_in_the_admin_verifies_deliveries_at_once(admin_client, client):
    response = admin_client.post(reverse("admin:webhooks_app_webhooksource_add"), new_source())
    assert response.status_code == 302, response.content.decode()
    source = WebhookSource.objects.get(name="acme")
    (secret,) = source.secrets.all()
    assert secret.label == "from the provider" and SECRET not in secret.ciphertext
    assert delivered(client, SECRET, "evt-1") == 202
    assert delivered(client, OTHER, "evt-2") == 401

    html = page(admin_client, "admin:webhooks_app_webhooksource_change", source.pk)
    assert SECRET not in html and secret.fingerprint in html
    assert "http://testserver/webhooks/acme/" in html
    assert "X-Webhook-Signature" in html  # the generic scheme's recipe
    assert reverse("admin:webhooks_app_webhooksource_add_secret", args=[source.pk]) in html


BAD_NEW_SOURCES = {
    "a reserved name": ({"name": "api"}, "name", "the app&#x27;s own URLs"),
    "a name not a slug": ({"name": "my source"}, "name", "slug"),
    "an unknown scheme": ({"scheme": "nope"}, "scheme", "Select a valid choice"),
    "routes not an object": ({"routes": '["record"]'}, "routes", "an object of event type"),
    "routes not JSON": ({"routes": "{push: deploy}"}, "routes", "Enter a valid JSON"),
    "an unknown option": ({"options": '{"ORDER": "x"}'}, "options", "not a source option"),
    "a short secret": ({"secret": "tiny-0x5e1"}, "secret", "shorter than"),
    "a secret with a trailing line break": ({"secret": SECRET + "\n"}, "secret", "copy-paste"),
}


@pytest.mark.parametrize("case", BAD_NEW_SOURCES.values(), ids=BAD_NEW_SOURCES)
def test_a_bad_new_source_is_refused_naming_the_field_and_nothing_is_saved(admin_client, case):
    fields, field, words = case
    response = admin_client.post(
        reverse("admin:webhooks_app_webhooksource_add"), new_source(**fields)
    )
    assert response.status_code == 200
    html = response.content.decode()
    errors = html.split(f"field-{field}")[1].split("</div>\n</div>")[0]
    assert 'class="errorlist' in errors and words in errors, errors
    assert fields.get("secret", SECRET) not in html  # a refused form does not echo the secret
    assert not WebhookSource.objects.exists() and not WebhookSourceSecret.objects.exists()


def test_a_new_source_without_a_secret_says_deliveries_get_503(admin_client, client):
    admin_client.post(
        reverse("admin:webhooks_app_webhooksource_add"), new_source(secret="", secret_label="")
    )
    source = WebhookSource.objects.get()
    html = page(admin_client, "admin:webhooks_app_webhooksource_change", source.pk)
    assert "no valid secret: deliveries get 503" in html
    assert delivered(client, SECRET, "evt-1") == 503


# Add secret, rotate secret


def test_add_secret_makes_two_verify_and_never_shows_the_value(admin_client, client):
    source = make_source()
    url = reverse("admin:webhooks_app_webhooksource_add_secret", args=[source.pk])
    form = page(admin_client, "admin:webhooks_app_webhooksource_add_secret", source.pk)
    assert 'type="password" name="value"' in form
    refused = admin_client.post(url, {"value": OTHER, "not_after": "2001-01-01 00:00"})
    assert refused.status_code == 200 and "This time has passed" in refused.content.decode()
    assert OTHER not in refused.content.decode()

    response = admin_client.post(url, {"value": OTHER, "label": "new one"}, follow=True)
    html = response.content.decode()
    (new,) = source.secrets.filter(label="new one")
    assert f"Secret new one ({new.fingerprint}) added" in html and OTHER not in html
    assert delivered(client, SECRET, "evt-1") == 202
    assert delivered(client, OTHER, "evt-2") == 202


def test_rotate_secret_shows_the_new_value_once(admin_client, client):
    source = make_source()
    url = reverse("admin:webhooks_app_webhooksource_rotate_secret", args=[source.pk])
    assert 'name="grace"' in page(
        admin_client, "admin:webhooks_app_webhooksource_rotate_secret", source.pk
    )
    response = admin_client.post(url, {"grace": "1h", "label": "rotated"})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"].split(", ")
    html = response.content.decode()
    value = html.split('id="new-secret" value="')[1].split('"')[0]
    assert len(value) >= 40 and "shown this once" in html
    assert delivered(client, value, "evt-1") == 202
    assert delivered(client, SECRET, "evt-2") == 202  # the grace: an hour more
    old = source.secrets.get(label="first")
    assert timedelta(minutes=59) < old.not_after - timezone.now() <= timedelta(hours=1)

    for shown in (
        page(admin_client, "admin:webhooks_app_webhooksource_change", source.pk),
        page(admin_client, LIST),
        page(admin_client, "admin:webhooks_app_webhooksource_rotate_secret", source.pk),
    ):
        assert value not in shown
    assert value not in "".join(str(m) for m in response.wsgi_request._messages)


def test_rotating_with_no_grace_ends_the_old_secret_now(admin_client, client):
    source = make_source()
    url = reverse("admin:webhooks_app_webhooksource_rotate_secret", args=[source.pk])
    html = admin_client.post(url, {"grace": "0"}).content.decode()
    assert "The previous secrets no longer verify" in html
    assert delivered(client, SECRET, "evt-1") == 401


def test_a_viewer_sees_sources_but_cannot_change_their_secrets(client):
    source = make_source()
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_webhooksource"))
    client.force_login(viewer)
    html = page(client, "admin:webhooks_app_webhooksource_change", source.pk)
    assert 'id="add-secret"' not in html and 'id="rotate-secret"' not in html
    for name in ("add_secret", "rotate_secret"):
        url = reverse(f"admin:webhooks_app_webhooksource_{name}", args=[source.pk])
        assert client.get(url).status_code == 403
        assert client.post(url, {"value": OTHER, "grace": "0"}).status_code == 403
    assert source.secrets.count() == 1


def test_an_error_report_of_a_secret_post_hides_the_value(admin_client):
    """A crash while the secret is handled (here: unusable encryption keys) mails Django's
    error report with the request: the posted value is starred, in the POST and the frames."""
    source = make_source()
    reports = []

    def report(*, request: Any, **kwargs: Any) -> None:
        reports.append(ExceptionReporter(request, *sys.exc_info()).get_traceback_text())

    got_request_exception.connect(report)
    admin_client.raise_request_exception = False
    try:
        with override_settings(WEBHOOKS={"ENCRYPTION_KEYS": ["too short"]}):
            for name, data in (
                ("add_secret", {"value": OTHER}),
                ("add", new_source(name="beta", secret=OTHER)),
            ):
                args = [source.pk] if name == "add_secret" else []
                url = reverse(f"admin:webhooks_app_webhooksource_{name}", args=args)
                assert admin_client.post(url, data).status_code == 500
    finally:
        got_request_exception.disconnect(report)
    assert len(reports) == 2
    for text in reports:
        assert "ImproperlyConfigured" in text and OTHER not in text


# A settings source


def test_a_settings_source_has_a_read_only_page_without_its_secrets(admin_client, settings):
    html = page(admin_client, "admin:webhooks_app_webhooksource_settings", "github")
    config = settings.WEBHOOKS["SOURCES"]["github"]
    assert "http://testserver/webhooks/github/" in html and "Payload URL" in html
    assert "read-only" in html and "<form" not in html.split('id="content-main"')[1]
    for secret in config["SECRETS"]:
        assert secret not in html
    missing = admin_client.get(reverse("admin:webhooks_app_webhooksource_settings", args=["x"]))
    assert missing.status_code == 404
