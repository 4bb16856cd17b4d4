from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from webhooks_app.models import WebhookEvent


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
    with pytest.raises(CommandError, match="Could not reach"):
        call_command(
            "send_test_webhook", "record", "--url", "http://127.0.0.1:9/x/", stdout=StringIO()
        )


def test_send_test_webhook_refuses_provider_sources():
    with pytest.raises(CommandError, match="uses the 'github' scheme"):
        call_command("send_test_webhook", "record", "--source", "github", stdout=StringIO())
