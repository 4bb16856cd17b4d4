from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidSignature
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.whatsapp import WhatsAppScheme

SCHEME = WhatsAppScheme()
VECTORS = load_vectors("meta")


def body_of(vector: dict) -> bytes:
    return (vector.get("body") or vector["body_raw_bytes_as_sent"]).encode()


@pytest.mark.parametrize("vector", VECTORS)
def test_published_vectors_verify_over_the_bytes_as_sent(vector):
    request = InboundRequest(
        body=body_of(vector),
        headers={"x-hub-signature-256": vector["expected_X-Hub-Signature-256"]},
    )
    SCHEME.verify(request, [vector["app_secret"]], now=0, tolerance=0)


def test_re_serialised_unicode_is_refused():
    vector = VECTORS[1]
    decoded = json.dumps(json.loads(body_of(vector)), ensure_ascii=False).encode()
    with pytest.raises(InvalidSignature):
        SCHEME.verify(
            InboundRequest(
                body=decoded,
                headers={"x-hub-signature-256": vector["expected_X-Hub-Signature-256"]},
            ),
            [vector["app_secret"]],
            now=0,
            tolerance=0,
        )


@pytest.mark.parametrize("vector", VECTORS)
@pytest.mark.parametrize("part", ["body", "signature"])
def test_one_changed_byte_is_refused(vector, part):
    body, signature = body_of(vector), vector["expected_X-Hub-Signature-256"]
    if part == "body":
        body = body[:-1] + b" "
    else:
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    with pytest.raises(InvalidSignature):
        SCHEME.verify(
            InboundRequest(body=body, headers={"x-hub-signature-256": signature}),
            [vector["app_secret"]],
            now=0,
            tolerance=0,
        )


def message(event_type: str, message_id: str) -> dict:
    value = {
        "messaging_product": "whatsapp",
        "messages": [{"id": message_id, "type": "text", "text": {"body": "hi"}}],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": event_type, "value": value}]}],
    }


class TestWhatsAppScheme(RoutedSchemeContract):
    source = "whatsapp"
    scheme_name = "whatsapp"
    routed_event = "messages"
    unrouted_event = "account_update"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps(message(event_type, f"wamid.{webhook_id}")).encode()
        return SignedRequest(body, SCHEME.sign(body, secret))


def test_status_updates_of_one_message_are_distinct_deliveries():
    status = {
        "entry": [
            {
                "changes": [
                    {
                        "field": "messages",
                        "value": {"statuses": [{"id": "wamid.X", "status": "read"}]},
                    }
                ]
            }
        ]
    }
    delivery = SCHEME.parse(InboundRequest(body=json.dumps(status).encode(), headers={}))
    assert (delivery.webhook_id, delivery.event_type) == ("wamid.X:read", "messages")
    bare = SCHEME.parse(InboundRequest(body=b'{"object": "page"}', headers={}))
    assert (bare.webhook_id, bare.event_type) == (None, "")


HANDSHAKE = (
    "/webhooks/whatsapp/?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
)


@pytest.mark.django_db
def test_handshake_echoes_the_challenge_only_with_the_right_token(client):
    source = {
        "SCHEME": "whatsapp",
        "SECRETS": [settings.SECRET_A],
        "VERIFY_TOKEN": "my-verify-token",
    }
    with override_settings(WEBHOOKS={"SOURCES": {"whatsapp": source}}):
        ok = client.get(HANDSHAKE.format(token="my-verify-token"))
        assert ok.status_code == 200
        assert ok["Content-Type"].startswith("text/plain")
        assert ok.content == b"1158201444"
        wrong = client.get(HANDSHAKE.format(token="guess"))
        assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden"
        assert (
            client.get(
                HANDSHAKE.format(token="my-verify-token").replace("subscribe", "other")
            ).status_code
            == 403
        )
        assert (
            client.get(
                "/webhooks/whatsapp/?hub.mode=subscribe&hub.verify_token=my-verify-token&hub.challenge=%3Cscript%3E"
            ).status_code
            == 403
        )
    with override_settings(WEBHOOKS={"SOURCES": {"whatsapp": {**source, "VERIFY_TOKEN": ""}}}):
        assert client.get(HANDSHAKE.format(token="")).json()["error"] == "not_configured"
    assert client.get("/webhooks/generic/?hub.mode=subscribe").status_code == 405
