from __future__ import annotations

import json
import time

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import load_vectors
from tests.scheme_cases import SchemeContract, SignedRequest, TimestampedSchemeContract
from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.slack import SlackScheme

SCHEME = SlackScheme()
VECTOR = load_vectors("slack")[0]


def vector_request(body: str, timestamp: str, signature: str) -> InboundRequest:
    return InboundRequest(
        body=body.encode(),
        headers={"x-slack-signature": signature, "x-slack-request-timestamp": timestamp},
    )


def test_published_vector_verifies_with_a_frozen_clock():
    request = vector_request(
        VECTOR["body"], VECTOR["timestamp"], VECTOR["expected_header_X-Slack-Signature"]
    )
    SCHEME.verify(request, [VECTOR["signing_secret"]], now=int(VECTOR["timestamp"]), tolerance=300)
    signed = SCHEME.sign(
        VECTOR["body"].encode(), VECTOR["signing_secret"], timestamp=int(VECTOR["timestamp"])
    )
    assert signed["X-Slack-Signature"] == VECTOR["expected_header_X-Slack-Signature"]


@pytest.mark.parametrize("part", ["body", "timestamp", "signature"])
def test_one_changed_byte_is_refused(part):
    values = {
        "body": VECTOR["body"],
        "timestamp": VECTOR["timestamp"],
        "signature": VECTOR["expected_header_X-Slack-Signature"],
    }
    value = values[part]
    values[part] = value[:-1] + ("0" if value[-1] != "0" else "1")
    with pytest.raises(InvalidSignature):
        SCHEME.verify(
            vector_request(**values),
            [VECTOR["signing_secret"]],
            now=int(VECTOR["timestamp"]),
            tolerance=300,
        )


def test_missing_signature():
    with pytest.raises(MissingSignature):
        SCHEME.verify(InboundRequest(body=b"{}", headers={}), ["s"], now=0, tolerance=300)


class TestSlackScheme(TimestampedSchemeContract):
    source = "slack"
    scheme_name = "slack"
    routed_event = "app_mention"
    unrouted_event = "reaction_added"
    timestamp_header = "x-slack-request-timestamp"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps(
            {
                "type": "event_callback",
                "event_id": webhook_id,
                "event": {"type": event_type, "text": "hi"},
            }
        ).encode()
        return SignedRequest(body, SCHEME.sign(body, secret, timestamp=timestamp))


class TestSlackSlashCommands(SchemeContract):
    """Form-encoded bodies: the command is the event type, ``trigger_id`` the delivery id."""

    source = "slack"
    scheme_name = "slack"
    routed_event = "/deploy"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = f"command=%2F{event_type.lstrip('/')}&text=prod&trigger_id={webhook_id}".encode()
        return SignedRequest(
            body,
            SCHEME.sign(body, secret, timestamp=timestamp or int(time.time())),
            "application/x-www-form-urlencoded",
        )


def slack_source():
    return override_settings(
        WEBHOOKS={"SOURCES": {"slack": {"SCHEME": "slack", "SECRETS": [settings.SECRET_A]}}}
    )


def post_signed(client, body: bytes):
    headers = {
        f"HTTP_{k.upper().replace('-', '_')}": v
        for k, v in SCHEME.sign(body, settings.SECRET_A).items()
    }
    return client.generic(
        "POST", "/webhooks/slack/", body, CONTENT_TYPE="application/json", **headers
    )


@pytest.mark.django_db
def test_url_verification_is_answered_and_not_stored(client):
    body = json.dumps(
        {
            "type": "url_verification",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "token": "x",
        }
    ).encode()
    headers = {
        f"HTTP_{k.upper().replace('-', '_')}": v
        for k, v in SCHEME.sign(body, settings.SECRET_A).items()
    }
    from django.test import override_settings

    with override_settings(
        WEBHOOKS={"SOURCES": {"slack": {"SCHEME": "slack", "SECRETS": [settings.SECRET_A]}}}
    ):
        response = client.generic(
            "POST", "/webhooks/slack/", body, CONTENT_TYPE="application/json", **headers
        )
        assert response.status_code == 200
        assert response.json() == {
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
        }
        unsigned = client.generic("POST", "/webhooks/slack/", body, CONTENT_TYPE="application/json")
        assert unsigned.status_code == 401
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("body", [b'{"type": "a", "type": "b"}', b"\xff\xfe"])
def test_signed_bad_json_is_400(client, body):
    from django.test import override_settings

    headers = {
        f"HTTP_{k.upper().replace('-', '_')}": v
        for k, v in SCHEME.sign(body, settings.SECRET_A).items()
    }
    with override_settings(
        WEBHOOKS={"SOURCES": {"slack": {"SCHEME": "slack", "SECRETS": [settings.SECRET_A]}}}
    ):
        response = client.generic(
            "POST", "/webhooks/slack/", body, CONTENT_TYPE="application/json", **headers
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"
