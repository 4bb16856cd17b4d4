"""The Shopify scheme: the shared vectors, strict base64, the scheme contract, the delivery and
topic headers, and what is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import (
    InvalidJSON,
    InvalidPayload,
    InvalidSignature,
    MissingSignature,
)
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.shopify import ShopifyScheme

SCHEME = ShopifyScheme()
VECTORS = load_vectors("shopify")
SIGNATURE = "expected_X-Shopify-Hmac-Sha256"
BASE64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def request(body: bytes, signature: str | None, **headers: str) -> InboundRequest:
    if signature is not None:
        headers["x-shopify-hmac-sha256"] = signature
    return InboundRequest(body=body, headers=headers)


def verify(req: InboundRequest, secrets: list[str]) -> None:
    # Shopify signs no timestamp: the clock and tolerance must not matter.
    SCHEME.verify(req, secrets, now=0, tolerance=0)


# -- the shared vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["secret"])
def test_vector_verifies_and_is_reproduced(vector: dict[str, Any]) -> None:
    verify(request(vector["body"].encode(), vector[SIGNATURE]), [vector["secret"]])
    signed = SCHEME.sign(vector["body"].encode(), vector["secret"])
    assert signed == {"X-Shopify-Hmac-Sha256": vector[SIGNATURE]}


@pytest.mark.parametrize("part", ["body", "signature", "digest"])
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["secret"])
def test_vector_with_one_byte_changed_is_refused(vector: dict[str, Any], part: str) -> None:
    """Only the body is signed (no id, no timestamp, no topic)."""
    body, signature = vector["body"].encode(), vector[SIGNATURE]
    i = len(body) // 2 if part == "body" else len(signature) // 2
    if part == "body":
        body = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    elif part == "signature":  # a character of the base64 text, still valid base64
        other = BASE64[0] if signature[i] != BASE64[0] else BASE64[1]
        signature = signature[:i] + other + signature[i + 1 :]
    else:  # a byte of the decoded digest
        digest = bytearray(base64.b64decode(signature))
        digest[len(digest) // 2] ^= 1
        signature = base64.b64encode(digest).decode()
    with pytest.raises(InvalidSignature):
        verify(request(body, signature), [vector["secret"]])


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["secret"])
def test_rotation_any_listed_secret_verifies(vector: dict[str, Any]) -> None:
    req = request(vector["body"].encode(), vector[SIGNATURE])
    verify(req, ["the-new-client-secret", vector["secret"]])
    with pytest.raises(InvalidSignature):
        verify(req, ["the-new-client-secret"])


# -- malformed headers ----------------------------------------------------------------------

BODY = b'{"id": 820982911946154508}'
SECRET = "hush"
DIGEST = hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()


def test_missing_header_is_missing_signature() -> None:
    with pytest.raises(MissingSignature):
        verify(request(BODY, None), [SECRET])


@pytest.mark.parametrize(
    "value",
    [
        "",
        "%%%",
        "YWJj",  # valid base64 of 3 bytes, not 32
        "A" * 10_000,
        DIGEST.hex(),  # the right MAC, hex-encoded
        "sha256=" + base64.b64encode(DIGEST).decode(),  # a prefix Shopify does not send
        base64.urlsafe_b64encode(DIGEST).decode().replace("=", ""),  # unpadded, URL-safe
        base64.b64encode(DIGEST).decode()[:20] + " " + base64.b64encode(DIGEST).decode()[20:],
        "é" * 44,
    ],
)
def test_malformed_header_is_invalid_signature(value: str) -> None:
    with pytest.raises(InvalidSignature):
        verify(request(BODY, value), [SECRET])


def test_surrounding_whitespace_is_tolerated() -> None:
    verify(request(BODY, f" {base64.b64encode(DIGEST).decode()} "), [SECRET])


# -- parsing --------------------------------------------------------------------------------

HEADERS = {"x-shopify-webhook-id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"}


def test_webhook_id_and_topic_come_from_the_headers() -> None:
    delivery = SCHEME.parse(request(BODY, None, **HEADERS, **{"x-shopify-topic": "orders/create"}))
    assert delivery.webhook_id == HEADERS["x-shopify-webhook-id"]
    assert delivery.event_type == "orders/create"
    assert delivery.payload == {"id": 820982911946154508}


@pytest.mark.parametrize(
    "headers",
    [
        {"x-shopify-topic": "orders/create"},  # no webhook id
        {**HEADERS},  # no topic
        {"x-shopify-webhook-id": "", "x-shopify-topic": "orders/create"},
        {"x-shopify-webhook-id": "a\x01b", "x-shopify-topic": "orders/create"},
        {**HEADERS, "x-shopify-topic": "x" * 256},
        # The event id is not a fallback: it is shared by several subscriptions' deliveries.
        {"x-shopify-event-id": "98880550-7158-44d4-b7cd-2c97c8a091b5", "x-shopify-topic": "a/b"},
    ],
)
def test_missing_or_malformed_id_and_topic_are_invalid_payload(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidPayload):
        SCHEME.parse(request(BODY, None, **headers))


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"[]", InvalidPayload),
        (b'"x"', InvalidPayload),
        (b'{"id": 1, "id": 2}', InvalidJSON),
        (b'{"email": "\xff"}', InvalidJSON),
    ],
)
def test_body_must_be_a_strict_json_object(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        SCHEME.parse(request(body, None, **HEADERS, **{"x-shopify-topic": "orders/create"}))


# -- the contract ---------------------------------------------------------------------------


class TestShopifyScheme(RoutedSchemeContract):
    source = "shopify"
    scheme_name = "shopify"
    routed_event = "orders/create"
    unrouted_event = "products/update"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps({"id": 820982911946154508, "email": "jon@example.com"}).encode()
        headers = {
            **SCHEME.sign(body, secret, webhook_id=webhook_id),
            "X-Shopify-Topic": event_type,
            "X-Shopify-Shop-Domain": "example.myshopify.com",
        }
        return SignedRequest(body, headers)


# -- through the endpoint -------------------------------------------------------------------


@pytest.fixture
def shopify_source(db: Any) -> Iterator[None]:
    source = {"SCHEME": "shopify", "SECRETS": [settings.SECRET_A], "ROUTES": {"*": "record"}}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {"shopify": source}}):
        yield


def post(client: Any, body: bytes, **headers: str) -> Any:
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    return client.generic(
        "POST", "/webhooks/shopify/", body, CONTENT_TYPE="application/json", **meta
    )


SHOPIFY_HEADERS = {
    "X-Shopify-Topic": "orders/create",
    "X-Shopify-Shop-Domain": "example.myshopify.com",
    "X-Shopify-API-Version": "2025-07",
    "X-Shopify-Event-Id": "98880550-7158-44d4-b7cd-2c97c8a091b5",
    "X-Shopify-Triggered-At": "2025-07-01T12:00:00.000000Z",
    "X-Shopify-Test": "true",
    "X-Some-Proxy": "not kept",
}


def test_useful_headers_are_stored_without_the_hmac(client, shopify_source):
    signed = SCHEME.sign(BODY, settings.SECRET_A, webhook_id="wh-1")
    assert post(client, BODY, **signed, **SHOPIFY_HEADERS).status_code == 202
    event = WebhookEvent.objects.get()
    assert (event.webhook_id, event.event_type) == ("wh-1", "orders/create")
    assert set(event.headers) >= {
        "x-shopify-webhook-id",
        "x-shopify-topic",
        "x-shopify-shop-domain",
        "x-shopify-api-version",
        "x-shopify-event-id",
        "x-shopify-triggered-at",
        "x-shopify-test",
    }
    assert "x-shopify-hmac-sha256" not in event.headers
    assert "x-some-proxy" not in event.headers
    assert signed["X-Shopify-Hmac-Sha256"] not in json.dumps(event.headers)


def test_one_event_to_two_subscriptions_is_two_deliveries(client, shopify_source):
    """Same ``X-Shopify-Event-Id``, different ``X-Shopify-Webhook-Id``: both are stored."""
    for webhook_id in ("wh-1", "wh-2"):
        signed = SCHEME.sign(BODY, settings.SECRET_A, webhook_id=webhook_id)
        assert post(client, BODY, **signed, **SHOPIFY_HEADERS).status_code == 202
    assert WebhookEvent.objects.count() == 2


def test_signed_delivery_without_webhook_id_is_400_and_not_stored(client, shopify_source):
    response = post(client, BODY, **SCHEME.sign(BODY, settings.SECRET_A), **SHOPIFY_HEADERS)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_payload"
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize("value", ["%%%", DIGEST.hex(), "A" * 10_000])
def test_malformed_base64_through_the_endpoint_is_401(client, shopify_source, value):
    response = post(
        client, BODY, **{"X-Shopify-Hmac-Sha256": value, "X-Shopify-Webhook-Id": "wh-1"}
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_signature"
