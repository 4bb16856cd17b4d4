"""The Twilio scheme: the URL-plus-parameters signature (form and JSON bodies), the URL a
deployment sees (PUBLIC_URL, forwarded headers, ports), delivery ids and event types; through
the shared contract (form and JSON) and as pure functions."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.twilio import TwilioScheme, url_variants, url_with_body_hash

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


def test_the_idempotency_header_identifies_what_the_payload_does_not():
    token = "a1b2c3-d4e5"
    assert parse({"EventType": "task.created"}, **{"i-twilio-idempotency-token": token}) == (
        token,
        "task.created",
    )
    assert parse({"Anything": "else"}, **{"i-twilio-idempotency-token": token}) == (token, "")
    # A sid is deterministic and documented: it wins over the header.
    assert parse({"MessageSid": "SM1"}, **{"i-twilio-idempotency-token": token}) == (
        "SM1",
        "message",
    )


def test_repeated_form_fields_keep_every_value():
    req = request(TESTSERVER, FORM, "MessageSid=SM1&MediaUrl=a&MediaUrl=b", None)
    assert SCHEME.parse(req).payload == {"MessageSid": "SM1", "MediaUrl": ["a", "b"]}


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


def post(
    signed_url: str,
    body: bytes = STATUS,
    content_type: str = FORM,
    path: str = "/webhooks/twilio/",
    **extra: Any,
):
    signature = SCHEME.sign(body, settings.SECRET_A, url=signed_url, content_type=content_type)
    return Client().generic(
        "POST",
        path,
        body,
        CONTENT_TYPE=content_type,
        HTTP_X_TWILIO_SIGNATURE=signature["X-Twilio-Signature"],
        **extra,
    )


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
