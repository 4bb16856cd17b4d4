from __future__ import annotations

import json
import uuid
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import include, path

from tests.conftest import envelope, sign
from webhooks_app.management.commands import send_test_webhook
from webhooks_app.models import WebhookEvent

#: A host project that mounts the app elsewhere than the test settings' server does.
urlpatterns = [path("hooks/", include("webhooks_app.urls"))]


@pytest.mark.process
def test_send_test_webhook_signs_and_is_accepted_by_a_real_server(server):
    out = StringIO()
    url = f"http://127.0.0.1:{server.port}/webhooks/generic/"
    call_command(
        "send_test_webhook",
        "record",
        "--inputs",
        '{"user_id": 42}',
        "--id",
        "cmd-1",
        "--url",
        url,
        stdout=out,
    )
    assert "-> 202" in out.getvalue()
    event = WebhookEvent.objects.get(webhook_id="cmd-1")
    assert event.payload == {"user_id": 42}
    # Sending the same id again is reported as a duplicate, not an error.
    out = StringIO()
    call_command("send_test_webhook", "record", "--id", "cmd-1", "--url", url, stdout=out)
    assert "-> 200" in out.getvalue() and "duplicate" in out.getvalue()


@pytest.mark.process
def test_send_test_webhook_fails_loudly_on_refusal(server):
    url = f"http://127.0.0.1:{server.port}/webhooks/generic/"
    with pytest.raises(CommandError, match="422"):
        call_command("send_test_webhook", "no_such_workflow", "--url", url, stdout=StringIO())


def test_send_test_webhook_needs_a_secret():
    with (
        override_settings(WEBHOOKS={"SOURCES": {"generic": {}}}),
        pytest.raises(CommandError, match="no secret"),
    ):
        call_command("send_test_webhook", "record", stdout=StringIO())


def test_send_test_webhook_rejects_bad_inputs():
    with pytest.raises(CommandError, match="not JSON"):
        call_command("send_test_webhook", "record", "--inputs", "{", stdout=StringIO())


def test_send_test_webhook_reports_an_unreachable_server():
    with pytest.raises(CommandError) as refused:
        call_command(
            "send_test_webhook", "record", "--url", "http://127.0.0.1:9/x/", stdout=StringIO()
        )
    assert str(refused.value).startswith("Could not reach http://127.0.0.1:9/x/: ")
    assert str(refused.value).endswith(
        "Is the server running there? Pass --url with the address it listens on."
    )


def send(*args: str) -> str:
    """Run send_test_webhook; its output."""
    out = StringIO()
    call_command("send_test_webhook", *args, stdout=out)
    return out.getvalue()


@pytest.mark.process
def test_send_test_webhook_finds_this_projects_url_and_names_it(server, monkeypatch):
    """Without --url: this project's path for the source (reverse()), on runserver's default
    address (here the test server's); a project mounting the app elsewhere is followed there."""
    base = f"http://127.0.0.1:{server.port}"
    monkeypatch.setattr(send_test_webhook, "DEFAULT_BASE_URL", base)
    assert send("record", "--id", "default-url-1").startswith(
        f"POST {base}/webhooks/generic/ -> 202\n"
    )
    assert WebhookEvent.objects.filter(webhook_id="default-url-1").exists()
    # The server answering is not this project's (it mounts the app at webhooks/, not hooks/).
    with override_settings(ROOT_URLCONF=__name__), pytest.raises(CommandError) as refused:
        send("record", "--id", "default-url-2")
    assert str(refused.value) == (
        f"The server at {base}/hooks/generic/ refused the webhook (404): that server has no such "
        "webhook URL: it is not this project's server, or mounts webhooks_app.urls elsewhere. "
        "Pass --url with your server's webhook URL."
    )


@pytest.mark.process
def test_send_test_webhook_goes_to_the_sources_public_url(server):
    """PUBLIC_URL is the URL the source's senders use: the command sends there too."""
    public_url = f"http://127.0.0.1:{server.port}/webhooks/generic/"
    generic = {"SCHEME": "generic", "SECRETS": [settings.SECRET_A], "PUBLIC_URL": public_url}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {"generic": generic}}):
        assert send("record", "--id", "public-url-1").startswith(f"POST {public_url} -> 202\n")


@pytest.mark.process
def test_send_test_webhook_hints_at_another_server_on_401(server):
    """The issue's case: run from another project, it reached a server with another secret."""
    url = f"http://127.0.0.1:{server.port}/webhooks/generic/"
    other_project = {
        "generic": {"SCHEME": "generic", "SECRETS": ["another-projects-secret-0123456789"]}
    }
    out = StringIO()
    with (
        override_settings(WEBHOOKS={"SOURCES": other_project}),
        pytest.raises(CommandError) as refused,
    ):
        call_command("send_test_webhook", "record", "--url", url, stdout=out)
    assert out.getvalue().startswith(f"POST {url} -> 401\n")
    assert json.loads(out.getvalue().split("\n", 1)[1])["error"] == "invalid_signature"
    assert str(refused.value) == (
        f"The server at {url} refused the webhook (401): the signature did not verify there: "
        "that server has another secret for this source, or it is not this project's server. "
        "Pass --url with your server's webhook URL."
    )


def test_send_test_webhook_without_the_apps_urls_asks_for_url():
    with (
        override_settings(ROOT_URLCONF="django.contrib.auth.urls"),
        pytest.raises(CommandError) as refused,
    ):
        send("record")
    assert str(refused.value) == (
        "webhooks_app.urls is not in this project's URLconf (ROOT_URLCONF), so its webhook URL "
        "is unknown: include it, or pass --url."
    )


@pytest.mark.process
def test_server_assigned_and_command_ids_have_one_format(server):
    """Both are canonical UUID text (8-4-4-4-12), so an id reads the same wherever it came from."""
    url = f"http://127.0.0.1:{server.port}/webhooks/generic/"
    answer = json.loads(send("record", "--url", url).split("\n", 1)[1])
    body = envelope(webhook_id=None, n=1)
    status, assigned, _ = server.request(
        "POST",
        "/webhooks/generic/",
        body,
        {"Content-Type": "application/json", "X-Webhook-Signature": sign(body)},
    )
    assert status == 202
    for webhook_id in (answer["webhook_id"], assigned["webhook_id"]):
        assert str(uuid.UUID(webhook_id)) == webhook_id


def test_send_test_webhook_refuses_provider_sources():
    with pytest.raises(CommandError, match="uses the 'github' scheme"):
        call_command("send_test_webhook", "record", "--source", "github", stdout=StringIO())
