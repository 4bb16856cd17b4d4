from __future__ import annotations

import getpass
import json
import uuid
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import include, path

from tests.conftest import envelope, sign
from tests.processes import Server, manage_py, running, subprocess_env
from tests.settings_providers import SOURCE_OF_SCHEME
from tests.settings_providers import WEBHOOKS as PROVIDER_WEBHOOKS
from webhooks_app import tasks
from webhooks_app.management.commands import send_test_webhook
from webhooks_app.models import ProcessingControl, WebhookEvent

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


def test_send_test_webhook_names_no_workflow_for_a_provider_source():
    with pytest.raises(CommandError) as refused:
        send("record", "--source", "github")
    assert str(refused.value) == (
        "Source 'github' uses the 'github' scheme, whose ROUTES choose the workflow: leave "
        "WORKFLOW out to send its provider's sample payload (--event-type picks which)."
    )


@pytest.mark.process
def test_send_test_webhook_sends_every_providers_sample_to_a_real_server(
    transactional_db, monkeypatch
):
    """``--source S`` for every built-in scheme, to this project's path on a real gunicorn
    serving the same sources; each run is a new delivery (here: two of Stripe's)."""
    server = Server(env=subprocess_env(DJANGO_SETTINGS_MODULE="tests.settings_providers"))
    base = f"http://127.0.0.1:{server.port}"
    monkeypatch.setattr(send_test_webhook, "DEFAULT_BASE_URL", base)
    sources = [*sorted({*SOURCE_OF_SCHEME.values(), "gitlab_signed"}), "stripe"]
    with running(server), override_settings(WEBHOOKS=PROVIDER_WEBHOOKS):
        for source in sources:
            out = send("--source", source)
            assert out.startswith(f"POST {base}/webhooks/{source}/ -> 202\n"), out
            assert json.loads(out.split("\n", 1)[1])["status"] == "accepted"
    stored = WebhookEvent.objects.order_by("pk").values_list("source", flat=True)
    assert list(stored) == sources


@pytest.mark.process
def test_send_test_webhook_picks_the_sample_and_the_id(server):
    url = f"http://127.0.0.1:{server.port}/webhooks/github/"
    send("--source", "github", "--event-type", "push", "--id", "cmd-push-1", "--url", url)
    event = WebhookEvent.objects.get(source="github")
    assert (event.webhook_id, event.event_type, event.workflow_name) == (
        "cmd-push-1",
        "push",
        "record",
    )
    assert event.payload["ref"] == "refs/heads/main"


@pytest.mark.django_db  # a name no settings source has may be a database source
def test_send_test_webhook_names_the_known_sources_and_event_types():
    with pytest.raises(CommandError) as refused:
        send("--source", "nope")
    assert str(refused.value) == (
        "No webhook source 'nope' is configured. Known sources: generic, github, ordered."
    )
    with pytest.raises(CommandError) as refused:
        send("--source", "github", "--event-type", "issues")
    assert str(refused.value) == (
        "The 'github' scheme has no sample of event type 'issues'. Known event types: push."
    )


def test_send_test_webhook_keeps_envelope_options_to_the_envelope():
    with pytest.raises(CommandError) as refused:
        send("--source", "github", "--inputs", "{}")
    assert str(refused.value) == "--inputs goes with WORKFLOW: a sample payload has its own."
    with pytest.raises(CommandError) as refused:
        send("record", "--event-type", "push")
    assert str(refused.value) == (
        "--event-type picks a sample payload; with WORKFLOW the envelope's event type is the "
        "workflow."
    )


def steer(command: str, *args: str) -> str:
    """Run pause_webhooks or resume_webhooks; its output."""
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_pause_and_resume_a_source():
    assert steer("pause_webhooks", "--source", "github") == "Paused source 'github'.\n"
    control = ProcessingControl.objects.get(kind="source", name="github")
    assert control.paused
    assert control.changed_by in ("manage.py", f"{getpass.getuser()} (manage.py)")
    held = [
        WebhookEvent.objects.create(source="github", webhook_id=f"h{i}", workflow_name="record")
        for i in range(2)
    ]
    assert all(tasks.process_event(event.pk).startswith("skipped") for event in held)
    assert steer("resume_webhooks", "--source", "github") == (
        "Resumed source 'github': 2 waiting events put back on the queue.\n"
    )
    assert not ProcessingControl.objects.get(kind="source", name="github").paused
    assert [tasks.process_event(event.pk) for event in held] == ["succeeded", "succeeded"]


@pytest.mark.django_db
def test_pause_and_resume_a_workflow():
    assert steer("pause_webhooks", "--workflow", "record") == "Paused workflow 'record'.\n"
    WebhookEvent.objects.create(source="generic", webhook_id="w1", workflow_name="record")
    assert steer("resume_webhooks", "--workflow", "record") == (
        "Resumed workflow 'record': 1 waiting event put back on the queue.\n"
    )


@pytest.mark.django_db
@pytest.mark.parametrize("command", ["pause_webhooks", "resume_webhooks"])
def test_unknown_names_are_errors_naming_the_known_ones(command):
    with pytest.raises(CommandError) as refused:
        steer(command, "--source", "nope")
    assert (
        str(refused.value) == "No source is named 'nope'. Known sources: generic, github, ordered."
    )
    with pytest.raises(
        CommandError, match=r"^No workflow is named 'nope'\. Known workflows: .*record"
    ):
        steer(command, "--workflow", "nope")
    assert not ProcessingControl.objects.exists()


@pytest.mark.parametrize("command", ["pause_webhooks", "resume_webhooks"])
def test_exactly_one_of_source_and_workflow(command):
    with pytest.raises(CommandError, match="one of the arguments --source --workflow is required"):
        steer(command)
    with pytest.raises(CommandError, match="not allowed with argument"):
        steer(command, "--source", "github", "--workflow", "record")


@pytest.mark.django_db(transaction=True)
def test_exit_status_and_output_from_the_command_line():
    env = subprocess_env()
    done = manage_py(env, "pause_webhooks", "--source", "github")
    assert (done.returncode, done.stdout) == (0, "Paused source 'github'.\n"), done.stderr
    assert ProcessingControl.objects.get(kind="source", name="github").paused
    unknown = manage_py(env, "resume_webhooks", "--workflow", "nope")
    assert unknown.returncode == 1
    assert "CommandError: No workflow is named 'nope'. Known workflows: " in unknown.stderr
    assert manage_py(env, "resume_webhooks").returncode == 2  # argparse: a usage error
    done = manage_py(env, "resume_webhooks", "--source", "github")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Resumed source 'github': 0 waiting events put back on the queue.\n"
    assert not ProcessingControl.objects.get(kind="source", name="github").paused
