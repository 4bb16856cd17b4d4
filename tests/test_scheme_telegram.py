"""The Telegram scheme: a shared secret token, the update id as delivery id, the update kind as
event type; through the shared contract and as a pure function."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.telegram import TelegramScheme

SCHEME = TelegramScheme()
HEADER = "x-telegram-bot-api-secret-token"
#: Telegram publishes no token vectors (there is no MAC: its entry in the vectors file says
#: so). These cover the documented token alphabet and both length limits; a ``secret_token``
#: entry added to the vectors file is picked up as well.
LOCAL_TOKENS = ["A", "abc-DEF_123", "Zz09_-" * 42 + "abcd"]  # the last: 256 characters
TOKENS = [e["secret_token"] for e in load_vectors("telegram") if "secret_token" in e] + LOCAL_TOKENS
UPDATE = b'{"update_id": 10000, "message": {"message_id": 1, "text": "/start"}}'


def request(token: str | None, body: bytes = UPDATE) -> InboundRequest:
    return InboundRequest(body=body, headers={} if token is None else {HEADER: token})


def verify(req: InboundRequest, secrets: list[str]) -> None:
    SCHEME.verify(req, secrets, now=0, tolerance=0)


def one_byte_changed(text: str) -> str:
    """``text`` with its last character replaced by another of the token alphabet."""
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def test_the_vectors_file_says_telegram_has_no_mac():
    assert all(
        entry["status"] == "n/a" or "secret_token" in entry for entry in load_vectors("telegram")
    )


@pytest.mark.parametrize("token", TOKENS)
def test_token_vectors_verify_and_a_changed_byte_is_refused(token):
    verify(request(token), [token])
    verify(request(SCHEME.sign(UPDATE, token)[HEADER]), [token])
    with pytest.raises(InvalidSignature):
        verify(request(one_byte_changed(token)), [token])
    with pytest.raises(InvalidSignature):
        verify(request(token), [one_byte_changed(token)])


@pytest.mark.parametrize("token", TOKENS)
def test_a_changed_body_is_not_detected_a_token_is_no_mac(token):
    """Documented limitation: the token authenticates the sender, HTTPS protects the body."""
    verify(request(token, UPDATE.replace(b"/start", b"/stop")), [token])


def test_token_is_compared_against_every_configured_secret():
    secrets = ["old-token", "new-token"]
    verify(request("old-token"), secrets)
    verify(request("new-token"), secrets)
    for wrong in ("", " ", "new-toke", "new-token ", "NEW-TOKEN", "new-token\x00", "é" * 300):
        with pytest.raises(InvalidSignature):
            verify(request(wrong), secrets)
    with pytest.raises(MissingSignature):
        verify(request(None), secrets)
    with pytest.raises(InvalidSignature):
        verify(request("new-token"), [])


def parse(update: dict[str, Any]) -> tuple[str | None, str]:
    delivery = SCHEME.parse(request("t", json.dumps(update).encode()))
    return delivery.webhook_id, delivery.event_type


def test_delivery_id_is_the_update_id_and_event_type_the_update_kind():
    assert parse({"update_id": 7, "message": {}}) == ("7", "message")
    assert parse({"update_id": 8, "callback_query": {"id": "x"}}) == ("8", "callback_query")
    assert parse({"edited_message": {}, "update_id": 9}) == ("9", "edited_message")
    assert parse({"update_id": 10}) == ("10", "")  # no kind: the "*" route


@pytest.mark.parametrize(
    "update", [{"message": {}}, {"update_id": "7"}, {"update_id": True}, {"update_id": 1.5}]
)
def test_update_id_must_be_an_integer(update):
    with pytest.raises(InvalidPayload):
        parse(update)


class TestTelegramScheme(RoutedSchemeContract):
    """The contract, with two tests adapted to what Telegram is:

    * ``update_id`` is an integer, so no delivery id can contain "delivery-1": ``build`` turns
      the contract's ids into update ids ("delivery-1" → 1) and the stored id is checked to be
      "1" instead; every other assertion of the inherited test is kept.
    * a token is not a MAC: a tampered body is accepted, which the override pins down.
    """

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
        from tests.testapp.models import Execution

        response = self.send(self.good())
        assert response.status_code == 202, response.content
        event = WebhookEvent.objects.get()
        assert (event.source, event.workflow_name, event.status) == (
            self.source,
            "record",
            "pending",
        )
        assert (event.webhook_id, event.event_type) == ("1", "message")
        assert HEADER not in event.headers
        self.run_pending()
        assert Execution.objects.count() == 1

    def test_tampered_body_is_refused(self) -> None:
        request = self.good()
        request.body = request.body.replace(b'"hi"', b'"ho"')
        assert self.send(request).status_code == 202

    def test_empty_token_header_is_401_never_500(self) -> None:
        response = self.send(self.good(), **{HEADER: ""})
        self.assert_refused(response, 401, ("invalid_signature",))

    def test_any_configured_secret_verifies(self) -> None:
        for n, secret in enumerate((settings.SECRET_A, settings.SECRET_B)):
            assert self.send(self.good(webhook_id=f"{n + 10}", secret=secret)).status_code == 202
        assert WebhookEvent.objects.count() == 2
