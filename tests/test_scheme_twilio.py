from __future__ import annotations

import hashlib
import urllib.parse

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.twilio import TwilioScheme

SCHEME = TwilioScheme()
PARAMS, DUPLICATES, JSON_BODY = load_vectors("twilio")
FORM = "application/x-www-form-urlencoded"


def form_request(url: str, body: str, signature: str | None) -> InboundRequest:
    headers = {"content-type": FORM}
    if signature is not None:
        headers["x-twilio-signature"] = signature
    return InboundRequest(body=body.encode(), headers=headers, url=url)


def verify(request: InboundRequest, token: str = "12345") -> None:
    SCHEME.verify(request, [token], now=0, tolerance=0)


def test_published_form_vectors_verify():
    verify(
        form_request(
            PARAMS["url"],
            urllib.parse.urlencode(PARAMS["params"]),
            PARAMS["expected_X-Twilio-Signature"],
        )
    )
    verify(
        form_request(
            DUPLICATES["url"], DUPLICATES["form_body"], DUPLICATES["expected_X-Twilio-Signature"]
        )
    )


@pytest.mark.parametrize(("variant", "signature"), list(PARAMS["variants"].items()))
def test_published_port_variants_verify(variant, signature):
    url = variant.removeprefix("same params, url ")
    verify(form_request(url, urllib.parse.urlencode(PARAMS["params"]), signature))


def test_published_json_vector_verifies_with_the_body_hash():
    request = InboundRequest(
        body=JSON_BODY["body"].encode(),
        headers={
            "content-type": "application/json",
            "x-twilio-signature": JSON_BODY["expected_X-Twilio-Signature"],
        },
        url=JSON_BODY["url"],
    )
    verify(request)
    assert (
        hashlib.sha256(JSON_BODY["body"].encode()).hexdigest() == JSON_BODY["expected_bodySHA256"]
    )
    tampered = InboundRequest(
        body=JSON_BODY["body"].encode() + b" ", headers=request.headers, url=request.url
    )
    with pytest.raises(InvalidSignature):
        verify(tampered)


@pytest.mark.parametrize("part", ["url", "param", "signature", "token"])
def test_one_changed_byte_is_refused(part):
    url, body, signature, token = (
        PARAMS["url"],
        urllib.parse.urlencode(PARAMS["params"]),
        PARAMS["expected_X-Twilio-Signature"],
        "12345",
    )
    if part == "url":
        url = url.replace("foo=1", "foo=2")
    elif part == "param":
        body = body.replace("Digits=1234", "Digits=1235")
    elif part == "signature":
        signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    else:
        token = "12346"
    with pytest.raises(InvalidSignature):
        verify(form_request(url, body, signature), token)


def test_missing_signature():
    with pytest.raises(MissingSignature):
        verify(form_request(PARAMS["url"], "a=1", None))


class TestTwilioScheme(RoutedSchemeContract):
    """Signed over the URL the test client requests: http://testserver/webhooks/twilio/."""

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


@pytest.mark.django_db
def test_public_url_is_what_is_signed(client):
    public = "https://hooks.example.com/webhooks/twilio/"
    body = urllib.parse.urlencode({"MessageSid": "SM1", "MessageStatus": "delivered"}).encode()
    source = {
        "SCHEME": "twilio",
        "SECRETS": [settings.SECRET_A],
        "ROUTES": {"*": "record"},
        "PUBLIC_URL": public,
    }

    def post(signed_url: str):
        signature = SCHEME.sign(body, settings.SECRET_A, url=signed_url)["X-Twilio-Signature"]
        return client.generic(
            "POST", "/webhooks/twilio/", body, CONTENT_TYPE=FORM, HTTP_X_TWILIO_SIGNATURE=signature
        )

    with override_settings(WEBHOOKS={"SOURCES": {"twilio": source}}):
        assert post("http://testserver/webhooks/twilio/").status_code == 401  # the internal URL
        response = post(public)
        assert response.status_code == 202, response.content
    event = WebhookEvent.objects.get()
    assert (event.webhook_id, event.event_type) == ("SM1:delivered", "message.delivered")
