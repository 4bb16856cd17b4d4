"""The Twilio scheme: the URL-plus-parameters signature (form and JSON bodies), the URL a
deployment sees (PUBLIC_URL, forwarded headers, ports), delivery ids and event types; through
the shared contract (form and JSON) and as pure functions."""

from __future__ import annotations

import base64
import json
import sys
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from tests.conftest import GENERIC_URL, load_vectors, queued_tasks
from tests.scheme_cases import RoutedSchemeContract, SignedRequest, assert_one_event
from webhooks_app.conf import webhook_settings
from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.twilio import (
    MAX_FORM_ESCAPES,
    MAX_FORM_FIELDS,
    TwilioScheme,
    compute_signature,
    parameter_text,
    url_variants,
    url_with_body_hash,
)

SCHEME = TwilioScheme()
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
TESTSERVER = "http://testserver/webhooks/twilio/"


def vector_cases() -> list[pytest.param]:
    """Every Twilio vector as (token, url, content type, body, signature): the form ones (a
    params dict or a raw body with repeated fields, plus the port variants) and the JSON one."""
    cases = []
    for n, entry in enumerate(load_vectors("twilio")):
        token, url, signature = (
            entry["auth_token"],
            entry["url"],
            entry["expected_X-Twilio-Signature"],
        )
        if "params" in entry:
            body = urllib.parse.urlencode(entry["params"])
            cases.append(pytest.param(token, url, FORM, body, signature, id=f"{n}-params"))
            for label, variant_signature in entry.get("variants", {}).items():
                variant_url = label.rsplit(" ", 1)[-1]
                cases.append(
                    pytest.param(
                        token, variant_url, FORM, body, variant_signature, id=f"{n}-{variant_url}"
                    )
                )
        elif "form_body" in entry:
            cases.append(
                pytest.param(token, url, FORM, entry["form_body"], signature, id=f"{n}-form")
            )
        else:
            cases.append(pytest.param(token, url, JSON, entry["body"], signature, id=f"{n}-json"))
    return cases


VECTORS = vector_cases()


def request(
    url: str, content_type: str, body: str | bytes, signature: str | None
) -> InboundRequest:
    headers = {"content-type": content_type}
    if signature is not None:
        headers["x-twilio-signature"] = signature
    raw = body.encode() if isinstance(body, str) else body
    return InboundRequest(body=raw, headers=headers, url=url)


def verify(req: InboundRequest, secrets: list[str]) -> None:
    SCHEME.verify(req, secrets, now=0, tolerance=0)


def change_one_byte(text: str, *, first: bool = False) -> str:
    """``text`` with its first or last alphanumeric character replaced by another."""
    indexes = [i for i, ch in enumerate(text) if ch.isalnum()]
    i = indexes[0] if first else indexes[-1]
    return text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :]


# -- the published vectors -------------------------------------------------------------------------
@pytest.mark.parametrize(("token", "url", "content_type", "body", "signature"), VECTORS)
def test_vectors_verify(token, url, content_type, body, signature):
    verify(request(url, content_type, body, signature), [token])
    verify(request(url, content_type, body, signature), ["another-token", token])
    assert SCHEME.sign(body.encode(), token, url=url, content_type=content_type) == {
        "X-Twilio-Signature": signature
    }


@pytest.mark.parametrize("part", ["body", "url", "signature", "token"])
@pytest.mark.parametrize(("token", "url", "content_type", "body", "signature"), VECTORS)
def test_vectors_with_one_byte_changed_are_refused(part, token, url, content_type, body, signature):
    if part == "body":
        body = change_one_byte(body)
    elif part == "url":
        url = change_one_byte(url)
    elif part == "signature":
        signature = change_one_byte(signature, first=True)  # the last may be padding bits
    else:
        token = change_one_byte(token)
    with pytest.raises(InvalidSignature):
        verify(request(url, content_type, body, signature), [token])


# -- verification details --------------------------------------------------------------------------
FORM_VECTOR = load_vectors("twilio")[0]
FORM_BODY = urllib.parse.urlencode(FORM_VECTOR["params"])


def test_missing_empty_and_malformed_signatures():
    with pytest.raises(MissingSignature):
        verify(request(FORM_VECTOR["url"], FORM, FORM_BODY, None), ["12345"])
    for value in ("", " ", "not base64!", "A" * 10_000, "é", FORM_VECTOR["url"]):
        with pytest.raises(InvalidSignature):
            verify(request(FORM_VECTOR["url"], FORM, FORM_BODY, value), ["12345"])


def test_a_form_body_that_is_not_utf8_is_unauthenticated_not_malformed():
    """Verification needs the parameters, but an unsigned request must learn nothing more than
    "invalid signature" (401), never a 400 about its body."""
    with pytest.raises(InvalidSignature):
        verify(request(TESTSERVER, FORM, b"Body=\xff\xfe", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="), ["k"])


def test_json_body_needs_its_hash_in_the_url():
    body = b'{"a": 1}'
    with_hash = url_with_body_hash(TESTSERVER, body)
    signature = SCHEME.sign(body, "k", url=with_hash, content_type=JSON)["X-Twilio-Signature"]
    verify(request(with_hash, JSON, body, signature), ["k"])
    # The same signed URL with another body; and a URL signed without any hash.
    with pytest.raises(InvalidSignature):
        verify(request(with_hash, JSON, b'{"a": 2}', signature), ["k"])
    bare = SCHEME.sign(FORM_BODY.encode(), "k", url=TESTSERVER, content_type=FORM)
    with pytest.raises(InvalidSignature):
        verify(request(TESTSERVER, JSON, b"", bare["X-Twilio-Signature"]), ["k"])
    with pytest.raises(ValueError, match="bodySHA256"):
        SCHEME.sign(body, "k", url=TESTSERVER, content_type=JSON)
    with pytest.raises(ValueError, match="url"):
        SCHEME.sign(body, "k")


def test_ports_are_tried_with_and_without():
    params = FORM_BODY.encode()
    for signed, received in [
        ("https://h.example/p?x=1", "https://h.example:443/p?x=1"),
        ("https://h.example:443/p?x=1", "https://h.example/p?x=1"),
        ("http://h.example:80/p", "http://h.example/p"),
        ("http://h.example/p", "http://h.example:8000/p"),  # twilio-python drops any port
    ]:
        signature = SCHEME.sign(params, "k", url=signed)["X-Twilio-Signature"]
        verify(request(received, FORM, params, signature), ["k"])
    signature = SCHEME.sign(params, "k", url="https://h.example:8443/p")["X-Twilio-Signature"]
    with pytest.raises(InvalidSignature):  # a port is never invented, only the default one
        verify(request("https://h.example/p", FORM, params, signature), ["k"])


def test_url_variants_touch_only_the_port():
    assert url_variants("https://u:p@[::1]:8443/a:b?c=d:e#f") == {
        "https://u:p@[::1]:8443/a:b?c=d:e#f",
        "https://u:p@[::1]/a:b?c=d:e#f",
    }
    assert url_variants("https://[::1]/x?") == {"https://[::1]/x?", "https://[::1]:443/x?"}
    assert url_variants("http://h") == {"http://h", "http://h:80"}
    assert url_variants("not a url") == {"not a url"}


# -- delivery id and event type --------------------------------------------------------------------
def parse(fields: dict[str, str] | list | None = None, *, json_body: Any = None, **headers: str):
    if json_body is not None:
        req = request(TESTSERVER, JSON, json.dumps(json_body), None)
    else:
        req = request(TESTSERVER, FORM, urllib.parse.urlencode(fields or {}), None)
    req = InboundRequest(req.body, {**req.headers, **headers}, req.url)
    delivery = SCHEME.parse(req)
    return delivery.webhook_id, delivery.event_type


INBOUND_SMS = {
    "MessageSid": "SM1",
    "SmsSid": "SM1",
    "SmsMessageSid": "SM1",
    "SmsStatus": "received",
    "AccountSid": "AC1",
    "From": "+14158675309",
    "To": "+18005551212",
    "Body": "hi",
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (INBOUND_SMS, ("SM1", "message")),
        (
            {"MessageSid": "SM1", "MessageStatus": "delivered"},
            ("SM1:delivered", "message.delivered"),
        ),
        ({"SmsSid": "SM2", "SmsStatus": "sent"}, ("SM2:sent", "message.sent")),
        (
            {"CallSid": "CA1", "CallStatus": "completed", "SequenceNumber": "3"},
            ("CA1:completed:3", "call.completed"),
        ),
        ({"CallSid": "CA1"}, ("CA1", "call")),
        (
            {"CallSid": "CA1", "RecordingSid": "RE1", "RecordingStatus": "completed"},
            ("RE1:completed", "recording.completed"),
        ),
        (
            {
                "CallSid": "CA1",
                "RecordingSid": "RE1",
                "TranscriptionSid": "TR1",
                "TranscriptionStatus": "completed",
            },
            ("TR1:completed", "transcription.completed"),
        ),
        (
            {
                "ConferenceSid": "CF1",
                "CallSid": "CA1",
                "StatusCallbackEvent": "participant-join",
                "SequenceNumber": "2",
            },
            ("CF1:participant-join:2", "conference.participant-join"),
        ),
        (
            {"EventType": "onMessageAdded", "MessageSid": "IM1"},
            ("IM1:onMessageAdded", "onMessageAdded"),
        ),
        ({"EventType": "task.created"}, (None, "task.created")),
        ({"Anything": "else"}, (None, "")),
    ],
)
def test_delivery_id_and_event_type(fields, expected):
    assert parse(fields) == expected


def test_the_idempotency_header_is_never_the_delivery_id():
    """It is not signed: whoever holds a captured request could pick a new one per replay. A
    payload without a sid gets a server-assigned id; the content key recognises its retries."""
    token = {"i-twilio-idempotency-token": "a1b2c3-d4e5"}
    assert parse({"EventType": "task.created"}, **token) == (None, "task.created")
    assert parse({"Anything": "else"}, **token) == (None, "")
    assert parse({"MessageSid": "SM1"}, **token) == ("SM1", "message")
    assert parse({"EventType": "onMessageAdded", "MessageSid": "IM1"}, **token) == (
        "IM1:onMessageAdded",
        "onMessageAdded",
    )


def test_repeated_form_fields_keep_every_value():
    req = request(TESTSERVER, FORM, "MessageSid=SM1&MediaUrl=a&MediaUrl=b", None)
    assert SCHEME.parse(req).payload == {"MessageSid": "SM1", "MediaUrl": ["a", "b"]}


@pytest.mark.parametrize(
    "body",
    [
        "MessageSid=SM1&MessageSid=SM2",
        "MessageSid=SM1&MessageSid=SM1",  # signed like one MessageSid, parsed as a list
        "CallSid=CA1&CallStatus=ringing&CallStatus=completed",
        "CallSid=CA1&SequenceNumber=1&SequenceNumber=2",
        "EventType=task.created&EventType=task.deleted",
        "=MessageSidSM1SmsStatusreceived",  # every field's text under one nameless field
    ],
)
def test_shapes_twilio_never_sends_are_refused_not_guessed(body):
    with pytest.raises(InvalidPayload):
        SCHEME.parse(request(TESTSERVER, FORM, body, None))


def content_key(url: str, body: str, content_type: str = FORM) -> str:
    return SCHEME.content_key(request(url, content_type, body, None))


def test_the_content_key_is_the_signed_string_whatever_the_encoding():
    """Every body and URL that the same signature verifies has the same key."""
    key = content_key(TESTSERVER, "a=1&b=2")
    for url, body in [
        (TESTSERVER, "b=2&a=1"),  # reordered
        (TESTSERVER, "%61=%31&b=2"),  # escaped
        (TESTSERVER, "a=1&b=2&b=2"),  # a value repeated
        (TESTSERVER, "a=1b2"),  # re-split
        (TESTSERVER, "=a1b2"),
        (TESTSERVER + "a1", "b=2"),  # moved into the URL
        ("http://testserver:80/webhooks/twilio/", "a=1&b=2"),  # a port the sender picked
        ("http://testserver:8000/webhooks/twilio/", "a=1&b=2"),
    ]:
        assert content_key(url, body) == key, (url, body)
    for url, body in [
        (TESTSERVER, "a=1&b=3"),
        (TESTSERVER, "a=1&b=2&b=3"),
        ("https://testserver/webhooks/twilio/", "a=1&b=2"),
        ("http://otherserver/webhooks/twilio/", "a=1&b=2"),
    ]:
        assert content_key(url, body) != key, (url, body)


def test_the_content_key_of_json_is_its_signed_url():
    body = b'{"specversion": "1.0", "id": "EZ1", "type": "t"}'
    url = url_with_body_hash(TESTSERVER, body)
    key = content_key(url, body.decode(), JSON)
    assert content_key(url.replace("testserver", "testserver:80", 1), "", JSON) == key
    assert content_key(url_with_body_hash(TESTSERVER, b"[]"), "[]", JSON) != key


def test_event_streams_cloud_events():
    event = {"specversion": "1.0", "id": "EZ1", "type": "com.twilio.messaging.message.delivered"}
    assert parse(json_body=event) == ("EZ1", "com.twilio.messaging.message.delivered")
    assert parse(json_body=[event]) == ("EZ1", "com.twilio.messaging.message.delivered")
    batch_id, batch_type = parse(json_body=[event, {**event, "id": "EZ2"}])
    assert batch_id.startswith("batch:") and batch_type == event["type"]
    assert parse(json_body=[{**event, "id": "EZ2"}, event])[0] == batch_id  # order-independent
    assert parse(json_body=[event, {**event, "id": "EZ2", "type": "other"}])[1] == ""
    assert parse(json_body={"id": "x", "type": "no specversion"}) == (None, "")


# -- through the endpoint --------------------------------------------------------------------------
class TestTwilioScheme(RoutedSchemeContract):
    """Form bodies, signed over the URL the test client requests (``TESTSERVER``)."""

    source = "twilio"
    scheme_name = "twilio"
    routed_event = "message"
    unrouted_event = "call"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        sid = "MessageSid" if event_type == "message" else "CallSid"
        body = urllib.parse.urlencode(
            {sid: webhook_id, "From": "+14158675309", "Body": "hi"}
        ).encode()
        headers = SCHEME.sign(body, secret, url=f"http://testserver{self.url}")
        return SignedRequest(body, headers, FORM)

    def test_query_string_is_signed(self) -> None:
        request = self.good()
        request.query = "tenant=a"
        self.assert_refused(self.send(request), 401, ("invalid_signature",))
        body = request.body
        request.headers = SCHEME.sign(body, settings.SECRET_A, url=f"{TESTSERVER}?tenant=a")
        assert self.send(request).status_code == 202

    def test_status_callbacks_of_one_message_are_separate_events(self) -> None:
        for status in ("sent", "delivered", "delivered"):
            body = urllib.parse.urlencode({"MessageSid": "SM9", "MessageStatus": status}).encode()
            self.send(
                SignedRequest(body, SCHEME.sign(body, settings.SECRET_A, url=TESTSERVER), FORM)
            )
        assert sorted(WebhookEvent.objects.values_list("webhook_id", "event_type")) == [
            ("SM9:delivered", "message.delivered"),
            ("SM9:sent", "message.sent"),
        ]


class TestTwilioJsonScheme(RoutedSchemeContract):
    """JSON bodies (Event Streams CloudEvents): the body hash travels in the signed query."""

    source = "twilio"
    scheme_name = "twilio"
    routed_event = "com.twilio.messaging.message.delivered"
    unrouted_event = "com.twilio.voice.insights.call-summary.complete"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        event = {"specversion": "1.0", "id": webhook_id, "type": event_type, "data": {}}
        body = json.dumps([event]).encode()
        url = url_with_body_hash(f"http://testserver{self.url}", body)
        headers = SCHEME.sign(body, secret, url=url, content_type=JSON)
        return SignedRequest(body, headers, JSON, query=urllib.parse.urlsplit(url).query)

    def test_body_hash_must_match_even_with_the_body_resigned_elsewhere(self) -> None:
        request = self.good()
        request.body = request.body.replace(b"delivery-1", b"delivery-2")
        self.assert_refused(self.send(request), 401, ("invalid_signature",))


# -- the URL a deployment sees ---------------------------------------------------------------------
PUBLIC = "https://hooks.example.com/webhooks/twilio/"
STATUS = urllib.parse.urlencode({"MessageSid": "SM1", "MessageStatus": "delivered"}).encode()


def twilio_source(**options: Any) -> dict[str, Any]:
    source = {"SCHEME": "twilio", "SECRETS": [settings.SECRET_A], "ROUTES": {"*": "record"}}
    return {"SOURCES": {"twilio": {**source, **options}}}


def sign(body: bytes, signed_url: str, content_type: str = FORM) -> str:
    return SCHEME.sign(body, settings.SECRET_A, url=signed_url, content_type=content_type)[
        "X-Twilio-Signature"
    ]


def deliver(
    body: bytes,
    signature: str,
    content_type: str = FORM,
    path: str = "/webhooks/twilio/",
    **extra: Any,
):
    return Client().generic(
        "POST", path, body, CONTENT_TYPE=content_type, HTTP_X_TWILIO_SIGNATURE=signature, **extra
    )


def post(
    signed_url: str,
    body: bytes = STATUS,
    content_type: str = FORM,
    path: str = "/webhooks/twilio/",
    **extra: Any,
):
    return deliver(body, sign(body, signed_url, content_type), content_type, path, **extra)


@pytest.mark.django_db
def test_public_url_is_what_is_signed():
    with override_settings(WEBHOOKS=twilio_source(PUBLIC_URL=PUBLIC)):
        assert post(TESTSERVER).status_code == 401  # the URL Django sees is not what Twilio signed
        response = post(PUBLIC)
        assert response.status_code == 202, response.content
    event = WebhookEvent.objects.get()
    assert (event.webhook_id, event.event_type) == ("SM1:delivered", "message.delivered")
    assert "x-twilio-signature" not in event.headers


@pytest.mark.django_db
@override_settings(
    ALLOWED_HOSTS=["hooks.example.com"],
    USE_X_FORWARDED_HOST=True,
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
)
def test_forwarded_host_and_scheme_are_what_is_signed():
    proxied = {"HTTP_X_FORWARDED_HOST": "hooks.example.com", "HTTP_X_FORWARDED_PROTO": "https"}
    with override_settings(WEBHOOKS=twilio_source()):
        assert post(TESTSERVER, **proxied).status_code == 401
        assert post("http://hooks.example.com/webhooks/twilio/", **proxied).status_code == 401
        response = post(PUBLIC, **proxied)
        assert response.status_code == 202, response.content
        body = b'{"specversion": "1.0", "id": "EZ1", "type": "t"}'
        url = url_with_body_hash(PUBLIC, body)
        path = "/webhooks/twilio/?" + urllib.parse.urlsplit(url).query
        response = post(url, body, JSON, path, **proxied)
        assert response.status_code == 202, response.content


@pytest.mark.django_db
def test_public_url_with_a_json_body():
    """PUBLIC_URL gives scheme, host and path; the per-request query (bodySHA256) is kept."""
    body = b'{"specversion": "1.0", "id": "EZ1", "type": "t"}'
    url = url_with_body_hash(PUBLIC, body)
    with override_settings(WEBHOOKS=twilio_source(PUBLIC_URL=PUBLIC)):
        response = post(url, body, JSON, "/webhooks/twilio/?" + urllib.parse.urlsplit(url).query)
    assert response.status_code == 202, response.content


# -- replays (issue #10 finding 1) -----------------------------------------------------------------
CAPTURED_SMS = {**INBOUND_SMS, "NumMedia": "0"}
TENANT_PATH = "/webhooks/twilio/?tenant=a"


def form(pairs: list[tuple[str, str]]) -> bytes:
    return urllib.parse.urlencode(pairs).encode()


def refusals(responses: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {name: (r.status_code, r.json()["error"]) for name, r in responses.items()}


@pytest.mark.django_db(transaction=True)
def test_a_captured_form_replayed_in_any_encoding_is_one_event():
    """Twilio signs the URL and the fields' names and values run together, not the body, and
    not the idempotency token. Each of these was a second event before (a new token: 202 under
    that token; ``MessageSid=SM1NumMedia0``: 202 "SM1NumMedia0"); now each is the same signed
    string, answered 200 duplicate with the stored id, and runs nothing."""
    pairs = list(CAPTURED_SMS.items())
    body = form(pairs)
    signature = sign(body, f"{TESTSERVER}?tenant=a")

    def without(*names: str) -> list[tuple[str, str]]:
        return [(name, value) for name, value in pairs if name not in names]

    every_byte_escaped = "&".join(
        f"{name}={''.join(f'%{byte:02X}' for byte in value.encode())}"
        for name, value in reversed(pairs)
    ).encode()
    replays = {
        "another idempotency token": (body, TENANT_PATH, {"HTTP_I_TWILIO_IDEMPOTENCY_TOKEN": "t2"}),
        "no idempotency token": (body, TENANT_PATH, {}),
        "reordered, every byte escaped": (every_byte_escaped, TENANT_PATH, {}),
        "a value repeated": (body + b"&Body=hi", TENANT_PATH, {}),
        "MessageSid=SM1NumMedia0": (
            form([(n, "SM1NumMedia0" if n == "MessageSid" else v) for n, v in without("NumMedia")]),
            TENANT_PATH,
            {},
        ),
        "a field moved into the query": (
            form(without("AccountSid")),
            "/webhooks/twilio/?tenant=aAccountSidAC1",
            {},
        ),
        "the default port": (body, TENANT_PATH, {"HTTP_HOST": "testserver:80"}),
        "another port": (body, TENANT_PATH, {"HTTP_HOST": "testserver:8000"}),
    }
    with override_settings(WEBHOOKS=twilio_source()):
        first = deliver(body, signature, path=TENANT_PATH, HTTP_I_TWILIO_IDEMPOTENCY_TOKEN="t1")
        responses = [
            deliver(replay, signature, path=path, **extra)
            for replay, path, extra in replays.values()
        ]
    assert_one_event(first, responses)
    assert WebhookEvent.objects.get().webhook_id == "SM1"


@pytest.mark.django_db(transaction=True)
def test_a_captured_form_re_shaped_ambiguously_is_refused():
    """A repeated ``MessageSid`` is signed like one but parsed as a list, and the id fell back
    to ``SmsSid`` (202 "SM1:received"); a nameless field can hold the whole signed text."""
    pairs = list(CAPTURED_SMS.items())
    body = form(pairs)
    signature = sign(body, TESTSERVER)
    replays = {
        "MessageSid repeated": body + b"&MessageSid=SM1",
        "one nameless field": form([("", parameter_text({n: [v] for n, v in pairs}))]),
    }
    with override_settings(WEBHOOKS=twilio_source()):
        assert deliver(body, signature).status_code == 202
        responses = {name: deliver(replay, signature) for name, replay in replays.items()}
    assert refusals(responses) == dict.fromkeys(replays, (400, "invalid_payload"))
    assert WebhookEvent.objects.count() == 1
    assert queued_tasks() == 1


@pytest.mark.parametrize(
    ("fields", "webhook_id"),
    [
        (  # TaskRouter: no sid the scheme knows, so the server assigns the id
            {"EventType": "task.created", "TaskSid": "WT1", "AccountSid": "AC1", "Timestamp": "1"},
            None,
        ),
        (
            {"EventType": "onMessageAdded", "MessageSid": "IM1", "ConversationSid": "CH1"},
            "IM1:onMessageAdded",
        ),
        ({"AccountSid": "AC1", "Anything": "else"}, None),
    ],
)
@pytest.mark.django_db(transaction=True)
def test_a_new_idempotency_token_is_not_a_new_event(fields, webhook_id):
    body = urllib.parse.urlencode(fields).encode()
    signature = sign(body, TESTSERVER)
    with override_settings(WEBHOOKS=twilio_source()):
        first = deliver(body, signature, HTTP_I_TWILIO_IDEMPOTENCY_TOKEN="t1")
        replays = [
            deliver(body, signature, HTTP_I_TWILIO_IDEMPOTENCY_TOKEN="t2"),
            deliver(body, signature, HTTP_I_TWILIO_IDEMPOTENCY_TOKEN="t3"),
            deliver(body, signature),
        ]
    assert_one_event(first, replays)
    event = WebhookEvent.objects.get()
    if webhook_id is None:
        assert len(event.webhook_id) == 36  # a server-assigned UUID, not the unsigned token
    else:
        assert event.webhook_id == webhook_id
    assert event.headers["i-twilio-idempotency-token"] == "t1"  # kept, never trusted


@pytest.mark.django_db(transaction=True)
def test_a_json_signature_never_verifies_a_form():
    """A JSON request's signature covers its URL, ``bodySHA256`` included; the same URL sent
    as an empty form verified (202, payload ``{}``). A URL with ``bodySHA256`` is JSON's."""
    body = json.dumps({"specversion": "1.0", "id": "EZ1", "type": "t", "data": {}}).encode()
    url = url_with_body_hash(TESTSERVER, body)
    path = "/webhooks/twilio/?" + urllib.parse.urlsplit(url).query
    signature = sign(body, url, JSON)
    with override_settings(WEBHOOKS=twilio_source()):
        first = deliver(body, signature, JSON, path)
        as_forms = {
            "empty form": deliver(b"", signature, FORM, path),
            "the JSON as a form": deliver(body, signature, FORM, path),
        }
        replays = [
            deliver(body, signature, JSON, path, HTTP_I_TWILIO_IDEMPOTENCY_TOKEN="x"),
            deliver(body, signature, JSON, path, HTTP_HOST="testserver:80"),
        ]
    assert refusals(as_forms) == dict.fromkeys(as_forms, (401, "invalid_signature"))
    assert_one_event(first, replays)
    assert WebhookEvent.objects.get().webhook_id == "EZ1"


# -- bounded refusals (issue #10 finding 6) --------------------------------------------------------
def calls_made(send: Callable[[], Any]) -> tuple[int, Any]:
    """How many Python and C functions ``send()`` calls, and what it returns: a measure of its
    work that, unlike its duration, is the same on every run and every machine."""
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        result = send()
    finally:
        sys.setprofile(None)
    return calls, result


def unsigned(path: str, body: bytes, content_type: str) -> Callable[[], Any]:
    """A POST of ``body`` with a well-formed but wrong signature for both schemes."""
    headers = {"HTTP_X_TWILIO_SIGNATURE": "A" * 27 + "=", "HTTP_X_WEBHOOK_SIGNATURE": "0" * 64}
    return lambda: Client().generic("POST", path, body, CONTENT_TYPE=content_type, **headers)


@pytest.mark.django_db
def test_a_refused_oversized_form_costs_what_a_generic_refusal_costs():
    """Verifying a form means decoding and sorting all of it: 1 MiB of ``a=1&`` took ~0.3 s,
    of distinct names ~0.9 s, of ``%41`` ~0.2 s, against ~3 ms for generic. The work of a
    refusal is counted in function calls: before the caps it grew with every field and escape
    (hundreds of thousands of calls); now it is the generic scheme's, whatever the body."""
    size = webhook_settings.MAX_BODY_BYTES - 1
    bodies = {
        "fields": (b"a=1&" * size)[:size],
        "distinct names": b"&".join(b"f%d=" % n for n in range(size // 4))[:size],
        "escapes": (b"a=" + b"%41" * size)[:size],
    }
    generic = unsigned(GENERIC_URL, b'{"x": "' + b"a" * (size - 9) + b'"}', "application/json")
    small_form = unsigned("/webhooks/twilio/", b"MessageSid=SM1", FORM)
    sources = {**settings.WEBHOOKS["SOURCES"], **twilio_source()["SOURCES"]}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": sources}):
        for send in (generic, small_form):
            send()  # warm every cache the first request fills
        generic_calls, generic_response = calls_made(generic)
        small_calls, _ = calls_made(small_form)
        for shape, body in bodies.items():
            calls, response = calls_made(unsigned("/webhooks/twilio/", body, FORM))
            assert response.json() == generic_response.json(), shape  # 401, same detail
            assert calls <= small_calls + 20, (shape, calls, small_calls)
            assert calls <= 1.5 * generic_calls, (shape, calls, generic_calls)


@pytest.mark.django_db
def test_the_form_caps_refuse_only_what_twilio_never_sends():
    """At the caps a signed form is accepted; one field or escape more and it is refused as
    unauthenticated (401, the same answer as a wrong signature): it cannot be verified within
    bounded work, and a 400 would tell an unsigned sender how far it got."""

    def signed(fields: list[tuple[str, str]]) -> tuple[bytes, str]:
        body = form(fields)
        params: dict[str, list[str]] = {}
        for name, value in fields:
            params.setdefault(name, []).append(value)
        tail = parameter_text(params).encode()
        mac = compute_signature(settings.SECRET_A, TESTSERVER, tail)
        return body, base64.b64encode(mac).decode()

    many = [(f"F{n}", "x") for n in range(MAX_FORM_FIELDS - 1)]
    escaped = "+" * MAX_FORM_ESCAPES  # each "+" in a value is sent escaped, as %2B
    with override_settings(WEBHOOKS=twilio_source()):
        at_caps = [
            deliver(*signed([("MessageSid", "SM1"), *many])),
            deliver(*signed([("MessageSid", "SM2"), ("Body", escaped)])),
        ]
        over_caps = [
            deliver(*signed([("MessageSid", "SM3"), ("F", "x"), *many])),
            deliver(*signed([("MessageSid", "SM4"), ("Body", escaped + "+")])),
        ]
    assert [r.status_code for r in at_caps] == [202, 202], [r.content for r in at_caps]
    assert [r.json() for r in over_caps] == [
        {"error": "invalid_signature", "detail": InvalidSignature.default_detail}
    ] * 2
