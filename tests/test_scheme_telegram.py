from __future__ import annotations

import json

import pytest

from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.telegram import TelegramScheme

SCHEME = TelegramScheme()


def token_request(token: str | None, body: bytes = b"{}") -> InboundRequest:
    headers = {} if token is None else {"x-telegram-bot-api-secret-token": token}
    return InboundRequest(body=body, headers=headers)


def test_token_compared_against_every_configured_secret():
    SCHEME.verify(token_request("new-token"), ["old-token", "new-token"], now=0, tolerance=0)
    for wrong in ("", "new-toke", "new-token ", "NEW-TOKEN", "é" * 300):
        with pytest.raises(InvalidSignature):
            SCHEME.verify(token_request(wrong), ["old-token", "new-token"], now=0, tolerance=0)
    with pytest.raises(MissingSignature):
        SCHEME.verify(token_request(None), ["old-token"], now=0, tolerance=0)


@pytest.mark.parametrize("update", [{"message": {}}, {"update_id": "7"}, {"update_id": True}])
def test_update_id_must_be_an_integer(update):
    with pytest.raises(InvalidPayload):
        SCHEME.parse(token_request("t", json.dumps(update).encode()))


class TestTelegramScheme(RoutedSchemeContract):
    """``update_id`` is an integer: "delivery-1" becomes update 1, so the stored id is "1"."""

    source = "telegram"
    scheme_name = "telegram"
    routed_event = "message"
    unrouted_event = "edited_channel_post"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        update_id = int("".join(ch for ch in webhook_id if ch.isdigit()) or 0)
        body = json.dumps(
            {"update_id": update_id, event_type: {"message_id": 5, "text": "hi"}}
        ).encode()
        return SignedRequest(body, SCHEME.sign(body, secret))

    def test_good_signature_is_accepted_and_runs_once(self) -> None:
        from webhooks_app.models import WebhookEvent

        response = self.send(self.good())
        assert response.status_code == 202, response.content
        event = WebhookEvent.objects.get()
        assert (event.webhook_id, event.event_type, event.workflow_name) == (
            "1",
            "message",
            "record",
        )
        assert "x-telegram-bot-api-secret-token" not in event.headers

    def test_tampered_body_is_refused(self) -> None:
        """A token is not a MAC: an altered body cannot be detected (documented; use HTTPS)."""
        request = self.good()
        request.body = request.body.replace(b'"hi"', b'"ho"')
        assert self.send(request).status_code == 202
