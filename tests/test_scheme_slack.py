"""The Slack scheme: the shared vectors with a frozen clock, the scheme contract for the Events
API, slash commands and interactivity, the protocol messages answered without storing, and
strict bodies."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import load_vectors, queued_tasks
from tests.scheme_cases import (
    RoutedSchemeContract,
    SignedRequest,
    TimestampedSchemeContract,
    assert_one_event,
)
from tests.testapp.models import Execution
from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.slack import SlackScheme

SCHEME = SlackScheme()
VECTORS = load_vectors("slack")
SIGNATURE = "expected_header_X-Slack-Signature"
FORM = "application/x-www-form-urlencoded"
TOLERANCE = 300


def vector_request(body: bytes, timestamp: str, signature: str, **headers: str) -> InboundRequest:
    return InboundRequest(
        body=body,
        headers={
            "x-slack-signature": signature,
            "x-slack-request-timestamp": timestamp,
            **headers,
        },
    )


def verify(vector: dict[str, Any], request: InboundRequest, *, now: float | None = None) -> None:
    """Verify with the clock frozen at the vector's timestamp (they are years old)."""
    now = int(vector["timestamp"]) if now is None else now
    SCHEME.verify(request, [vector["signing_secret"]], now=now, tolerance=TOLERANCE)


def one_byte_changed(text: str, alphabet: str) -> str:
    """``text`` with its middle character replaced by another one of ``alphabet``."""
    i = len(text) // 2
    other = alphabet[0] if text[i] != alphabet[0] else alphabet[1]
    return text[:i] + other + text[i + 1 :]


# -- the shared vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["timestamp"])
def test_vector_verifies_and_is_reproduced(vector: dict[str, Any]) -> None:
    verify(vector, vector_request(vector["body"].encode(), vector["timestamp"], vector[SIGNATURE]))
    signed = SCHEME.sign(
        vector["body"].encode(), vector["signing_secret"], timestamp=int(vector["timestamp"])
    )
    assert signed == {
        "X-Slack-Signature": vector[SIGNATURE],
        "X-Slack-Request-Timestamp": vector["timestamp"],
    }


@pytest.mark.parametrize("part", ["body", "timestamp", "signature"])
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["timestamp"])
def test_vector_with_one_byte_changed_is_refused(vector: dict[str, Any], part: str) -> None:
    body, timestamp, signature = vector["body"].encode(), vector["timestamp"], vector[SIGNATURE]
    if part == "body":
        i = len(body) // 2
        body = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    elif part == "timestamp":
        # Still digits and still inside the tolerance: only the MAC can refuse it.
        timestamp = one_byte_changed(timestamp, "0123456789")
    else:
        signature = one_byte_changed(signature, "0123456789abcdef")
    with pytest.raises(InvalidSignature):
        verify(vector, vector_request(body, timestamp, signature))


@pytest.mark.parametrize("direction", [-1, 1], ids=["future", "past"])
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["timestamp"])
def test_vector_at_and_beyond_the_tolerance(vector: dict[str, Any], direction: int) -> None:
    """Accepted at exactly the tolerance, refused one second beyond it, in both directions."""
    request = vector_request(vector["body"].encode(), vector["timestamp"], vector[SIGNATURE])
    timestamp = int(vector["timestamp"])
    verify(vector, request, now=timestamp + direction * TOLERANCE)
    with pytest.raises(InvalidSignature):
        verify(vector, request, now=timestamp + direction * (TOLERANCE + 1))


@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if "command=" in v["body"]],
    ids=lambda v: v["timestamp"],
)
def test_slash_command_vector_parses(vector: dict[str, Any]) -> None:
    form = dict(urllib.parse.parse_qsl(vector["body"], keep_blank_values=True))
    request = vector_request(
        vector["body"].encode(), vector["timestamp"], vector[SIGNATURE], **{"content-type": FORM}
    )
    delivery = SCHEME.parse(request)
    assert delivery.event_type == form["command"] == "/webhook-collect"
    assert delivery.webhook_id == form["trigger_id"]
    assert "token" not in delivery.payload  # the deprecated verification token
    assert delivery.payload["team_id"] == form["team_id"]


def test_missing_headers() -> None:
    with pytest.raises(MissingSignature):
        SCHEME.verify(InboundRequest(body=b"{}", headers={}), ["s"], now=0, tolerance=TOLERANCE)
    no_timestamp = InboundRequest(body=b"{}", headers={"x-slack-signature": "v0=" + "0" * 64})
    with pytest.raises(InvalidSignature):
        SCHEME.verify(no_timestamp, ["s"], now=0, tolerance=TOLERANCE)


def test_signature_without_the_v0_prefix_is_refused() -> None:
    body, now = b"{}", int(time.time())
    signature = SCHEME.sign(body, "s", timestamp=now)["X-Slack-Signature"]
    request = vector_request(body, str(now), signature.removeprefix("v0="))
    with pytest.raises(InvalidSignature):
        SCHEME.verify(request, ["s"], now=now, tolerance=TOLERANCE)


# -- the contract ---------------------------------------------------------------------------


def form_request(fields: dict[str, str], secret: str, timestamp: int | None) -> SignedRequest:
    body = urllib.parse.urlencode(fields).encode()
    headers = SCHEME.sign(body, secret, timestamp=timestamp or int(time.time()))
    return SignedRequest(body, headers, FORM)


def event_callback(event_id: str, event_type: str, text: str = "hi") -> bytes:
    """An Events API body as Slack sends it: compact JSON, the event's ``text`` as typed."""
    body = {
        "token": "deprecated-verification-token",
        "team_id": "T1",
        "type": "event_callback",
        "event_id": event_id,
        "event": {"type": event_type, "text": text},
    }
    return json.dumps(body, separators=(",", ":")).encode()


class TestSlackEventsApi(TimestampedSchemeContract):
    """JSON ``event_callback``: the inner event's type, ``event_id`` as the delivery id."""

    source = "slack"
    scheme_name = "slack"
    routed_event = "app_mention"
    unrouted_event = "reaction_added"
    timestamp_header = "x-slack-request-timestamp"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = event_callback(webhook_id, event_type)
        return SignedRequest(body, SCHEME.sign(body, secret, timestamp=timestamp))

    def capture(self, text: str) -> SignedRequest:
        """A signed ``app_mention`` whose text a Slack user chose."""
        body = event_callback("Ev-1", self.routed_event, text)
        return SignedRequest(body, SCHEME.sign(body, settings.SECRET_A))

    @pytest.mark.django_db(transaction=True)
    def test_a_capture_replayed_with_changed_unsigned_headers_is_one_event(self) -> None:
        """Only the timestamp and the body are signed: a replay inside the tolerance window that
        adds, changes or drops any other header (Slack's retry headers, an id header other
        schemes read, the media type's parameters) is the first delivery."""
        with self.routed({"*": "fail"}):
            capture = self.good("Ev-1")
            first = self.send(capture)
            replays = [
                self.send(capture),
                self.send(capture, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "x"}),
                self.send(capture, **{"X-Slack-Retry-Num": "2", "X-Webhook-ID": "Ev-2"}),
                self.send(
                    SignedRequest(capture.body, capture.headers, "application/json; charset=utf-8")
                ),
            ]
            assert_one_event(first, replays)
            self.run_pending()
        assert list(Execution.objects.values_list("workflow", flat=True)) == ["record"]

    @pytest.mark.django_db(transaction=True)
    @pytest.mark.parametrize(
        "text",
        ["a=b", "x=1&command=/deploy&trigger_id=T9&y=2"],
        ids=["loses-its-event-id", "becomes-a-slash-command"],
    )
    def test_a_capture_re_sent_as_a_form_after_it_is_refused(self, text: str) -> None:
        """Issue #10: read as a form, the JSON was a new event under the ``"*"`` route (or the
        ``/deploy`` command its text spelt), a duplicate only thanks to the body digest."""
        with self.routed({"*": "fail", "/deploy": "fail"}):
            capture = self.capture(text)
            first = self.send(capture)
            replay = self.send(SignedRequest(capture.body, capture.headers, FORM))
            assert first.status_code == 202, first.content
            assert (replay.status_code, replay.json()["error"]) == (400, "invalid_payload")
            event = WebhookEvent.objects.get()
            assert (event.webhook_id, event.workflow_name) == ("Ev-1", "record")
            assert queued_tasks() == 1

    @pytest.mark.parametrize(
        "text",
        ["a=b", "x=1&command=/deploy&trigger_id=T9&y=2"],
        ids=["loses-its-event-id", "becomes-a-slash-command"],
    )
    def test_a_capture_re_sent_as_a_form_before_it_arrives_stores_nothing(self, text) -> None:
        """The digest cannot help when the attacker's copy comes first (the original held back,
        or purged): the form reading itself must be refused."""
        with self.routed({"*": "fail", "/deploy": "fail"}):
            capture = self.capture(text)
            replay = self.send(SignedRequest(capture.body, capture.headers, FORM))
            self.assert_refused(replay, 400, ("invalid_payload",))


class TestSlackSlashCommands(RoutedSchemeContract):
    """Form-encoded: the command is the event type, ``trigger_id`` the delivery id."""

    source = "slack"
    scheme_name = "slack"
    routed_event = "/deploy"
    unrouted_event = "/other"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        fields = {"command": event_type, "text": "prod", "trigger_id": webhook_id}
        return form_request(fields, secret, timestamp)

    @pytest.mark.django_db(transaction=True)
    @pytest.mark.parametrize(
        "trigger_id", ["13345224609.738474920.8088930838d88f008e0", None], ids=["trigger", "none"]
    )
    def test_a_capture_replayed_verbatim_inside_the_tolerance_is_one_event(
        self, trigger_id: str | None
    ) -> None:
        """Same bytes, same timestamp, same signature: it verifies again for five minutes. The
        ``trigger_id`` is the key; without one (the server assigns the id), the body digest."""
        fields = {"command": "/deploy", "text": "prod", "response_url": "https://h.test/c/1"}
        if trigger_id is not None:
            fields["trigger_id"] = trigger_id
        capture = form_request(fields, settings.SECRET_A, None)
        first = self.send(capture)
        replays = [self.send(capture), self.send(capture, **{"X-Slack-Retry-Num": "1"})]
        assert_one_event(first, replays)
        assert trigger_id is None or WebhookEvent.objects.get().webhook_id == trigger_id


class TestSlackInteractivity(RoutedSchemeContract):
    """Form-encoded with a ``payload`` JSON field: its ``type`` and ``trigger_id``."""

    source = "slack"
    scheme_name = "slack"
    routed_event = "block_actions"
    unrouted_event = "shortcut"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        payload = {"type": event_type, "trigger_id": webhook_id, "actions": [{"value": "ok"}]}
        return form_request({"payload": json.dumps(payload)}, secret, timestamp)

    @pytest.mark.django_db(transaction=True)
    def test_an_interaction_without_trigger_id_replayed_verbatim_is_one_event(self) -> None:
        """``view_closed`` carries no ``trigger_id``: the body digest is its only key."""
        with self.routed({"view_closed": "record"}):
            payload = {"type": "view_closed", "view": {"id": "V1", "hash": "1.a"}}
            capture = form_request({"payload": json.dumps(payload)}, settings.SECRET_A, None)
            first = self.send(capture)
            assert_one_event(first, [self.send(capture), self.send(capture, **{"X-Id": "2"})])


# -- through the endpoint -------------------------------------------------------------------


@pytest.fixture
def slack_source(db: Any) -> Iterator[None]:
    source = {
        "SCHEME": "slack",
        "SECRETS": [settings.SECRET_A],
        "ROUTES": {"app_mention": "record", "/deploy": "record", "block_actions": "record"},
    }
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {"slack": source}}):
        yield


def post(
    client: Any,
    body: bytes,
    *,
    content_type: str = "application/json",
    signed: bool = True,
    secret: str | None = None,
    timestamp: int | None = None,
    **headers: str,
) -> Any:
    if signed:
        headers.update(SCHEME.sign(body, secret or settings.SECRET_A, timestamp=timestamp))
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    return client.generic("POST", "/webhooks/slack/", body, CONTENT_TYPE=content_type, **meta)


CHALLENGE = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
URL_VERIFICATION = json.dumps(
    {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": CHALLENGE, "type": "url_verification"}
).encode()


def test_url_verification_is_answered_with_its_challenge_and_not_stored(client, slack_source):
    response = post(client, URL_VERIFICATION)
    assert response.status_code == 200
    assert response.json() == {"challenge": CHALLENGE}
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "refusal",
    [
        {"signed": False},
        {"timestamp": 1531420618},  # signed, but years ago
        {"secret": "not-the-signing-secret"},
    ],
    ids=["unsigned", "stale", "wrong"],
)
def test_url_verification_is_verified_first(client, slack_source, refusal):
    response = post(client, URL_VERIFICATION, **refusal)
    assert response.status_code == 401
    assert CHALLENGE not in response.content.decode()
    assert not WebhookEvent.objects.exists()


def test_ssl_check_is_answered_and_not_stored(client, slack_source):
    body = b"ssl_check=1&token=Jhj5dZrVaK7ZwHHjRyZWjbDl"
    response = post(client, body, content_type=FORM)
    assert (response.status_code, response.json()) == (200, {})
    assert post(client, body, content_type=FORM, signed=False).status_code == 401
    assert not WebhookEvent.objects.exists()


def test_slash_command_is_accepted_and_stored_without_the_token(client, slack_source):
    fields = {
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "command": "/deploy",
        "text": "prod",
        "response_url": "https://hooks.slack.com/commands/T1/1/x",
        "trigger_id": "13345224609.738474920.8088930838d88f008e0",
    }
    body = urllib.parse.urlencode(fields).encode()
    response = post(client, body, content_type=f"{FORM}; charset=utf-8")
    assert response.status_code == 202, response.content
    event = WebhookEvent.objects.get()
    assert (event.event_type, event.workflow_name) == ("/deploy", "record")
    assert event.webhook_id == fields["trigger_id"]
    assert event.payload == {k: v for k, v in fields.items() if k != "token"}
    assert "x-slack-signature" not in event.headers
    assert "x-slack-request-timestamp" in event.headers


def test_event_retry_is_a_duplicate_and_its_retry_headers_are_stored(client, slack_source):
    body = json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "type": "event_callback",
            "event_id": "Ev08MFMKH6",
            "event": {"type": "app_mention", "text": "<@U1> hi"},
        }
    ).encode()
    assert post(client, body).status_code == 202
    retry = post(client, body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    assert (retry.status_code, retry.json()["status"]) == (200, "duplicate")
    event = WebhookEvent.objects.get()
    assert (event.webhook_id, event.event_type) == ("Ev08MFMKH6", "app_mention")
    assert "token" not in event.payload and event.payload["event"]["text"] == "<@U1> hi"


def test_app_rate_limited_has_no_event_id(client, slack_source):
    body = b'{"type": "app_rate_limited", "team_id": "T1", "minute_rate_limited": 1518467820}'
    response = post(client, body)
    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    event = WebhookEvent.objects.get()
    assert event.event_type == "app_rate_limited"
    assert len(event.webhook_id) == 36  # assigned by the server (a UUID)


def test_interaction_without_trigger_id_gets_a_server_id():
    payload = json.dumps({"type": "view_closed", "view": {"id": "V1"}})
    request = InboundRequest(
        body=urllib.parse.urlencode({"payload": payload}).encode(), headers={"content-type": FORM}
    )
    delivery = SCHEME.parse(request)
    assert (delivery.webhook_id, delivery.event_type) == (None, "view_closed")


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b'{"type": "event_callback", "type": "url_verification"}', "application/json", "invalid_json"),
        (b'{"type": "event_callback", "event_id": "\xff"}', "application/json", "invalid_json"),
        (b"\xff\xfe", "application/json", "invalid_json"),
        (b"[]", "application/json", "invalid_payload"),
        (b'{"type": "url_verification"}', "application/json", "invalid_payload"),
        (b'{"type": "event_callback", "event_id": 7}', "application/json", "invalid_payload"),
        (b'{"type": "event_callback", "event": {"type": 1}}', "application/json", "invalid_payload"),
        (b"command=%2Fdeploy&text=%FF", FORM, "invalid_json"),
        (b"command=%2Fdeploy&command=%2Fother", FORM, "invalid_payload"),
        (b"payload=%7Bnot+json", FORM, "invalid_json"),
        (b"payload=%7B%22type%22%3A+1%7D", FORM, "invalid_payload"),
        (b'{"type":"event_callback","event_id":"Ev1","text":"a=b"}', FORM, "invalid_payload"),
        (b' \r\n\t{"type":"event_callback","text":"a=b"}', FORM, "invalid_payload"),
    ],
)  # fmt: skip
def test_signed_malformed_body_is_400(client, slack_source, body, content_type, error):
    response = post(client, body, content_type=content_type)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == error
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"command": "/deploy", "text": '{"env": "prod"}', "trigger_id": "T1"},
        {"payload": json.dumps({"type": "block_actions", "trigger_id": "T2"})},
    ],
    ids=["slash-command-text", "interactivity-payload"],
)
def test_forms_whose_fields_hold_json_are_accepted(client, slack_source, fields):
    """Slack percent-encodes ``{``: only a body that *starts* with it is JSON read as a form."""
    body = urllib.parse.urlencode(fields).encode()
    assert post(client, body, content_type=FORM).status_code == 202
    assert WebhookEvent.objects.get().workflow_name == "record"


def test_other_media_types_are_415(client, slack_source):
    response = post(client, b"command=%2Fdeploy", content_type="text/plain")
    assert response.status_code == 415


def test_parse_rejects_non_string_url_verification_challenge():
    with pytest.raises(InvalidPayload):
        SCHEME.parse(
            InboundRequest(
                body=b'{"type": "url_verification", "challenge": 1}',
                headers={"content-type": "application/json"},
            )
        )
