"""The Shopify scheme: the shared vectors, strict base64, the scheme contract, the delivery and
topic headers, and what is stored."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest, assert_one_event
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


# -- the two spellings of every header --------------------------------------------------------


def spelled(stem: str, *, bare: bool) -> str:
    """A Shopify header name: ``shopify-<stem>`` (``bare``) or ``X-Shopify-<stem>``."""
    return f"shopify-{stem}" if bare else f"X-Shopify-{stem}"


def respelled(headers: dict[str, str], *, bare: bool) -> dict[str, str]:
    """``headers`` with every Shopify header in one spelling; other headers unchanged."""
    result = {}
    for name, value in headers.items():
        stem = name.lower().removeprefix("x-")
        is_shopify = stem.startswith("shopify-")
        result[spelled(stem.removeprefix("shopify-"), bare=bare) if is_shopify else name] = value
    return result


BARE = {"shopify-webhook-id": HEADERS["x-shopify-webhook-id"], "shopify-topic": "orders/create"}


def test_the_unprefixed_spelling_is_read_like_the_prefixed_one() -> None:
    """Shopify also sends ``shopify-*`` headers without ``X-`` (its libraries read both)."""
    delivery = SCHEME.parse(request(BODY, None, **BARE))
    assert (delivery.webhook_id, delivery.event_type) == (
        HEADERS["x-shopify-webhook-id"],
        "orders/create",
    )
    verify(
        InboundRequest(BODY, {"shopify-hmac-sha256": base64.b64encode(DIGEST).decode()}), [SECRET]
    )
    both = {
        **BARE,
        "x-shopify-webhook-id": BARE["shopify-webhook-id"],
        "x-shopify-topic": "orders/create",
    }
    assert SCHEME.parse(request(BODY, None, **both)).webhook_id == delivery.webhook_id


def test_both_spellings_are_signature_headers_and_every_other_pair_is_stored() -> None:
    assert SCHEME.signature_headers == {"x-shopify-hmac-sha256", "shopify-hmac-sha256"}
    stems = (
        "webhook-id",
        "topic",
        "shop-domain",
        "api-version",
        "event-id",
        "triggered-at",
        "test",
    )
    expected = {spelled(stem, bare=bare).lower() for stem in stems for bare in (True, False)}
    assert SCHEME.stored_headers == expected


def test_two_spellings_of_the_hmac_that_disagree_are_invalid_signature() -> None:
    """Never pick one: a valid HMAC beside a different one is refused, in either order."""
    good, other = base64.b64encode(DIGEST).decode(), base64.b64encode(b"\0" * 32).decode()
    for prefixed, bare in ((good, other), (other, good)):
        req = InboundRequest(BODY, {"x-shopify-hmac-sha256": prefixed, "shopify-hmac-sha256": bare})
        with pytest.raises(InvalidSignature):
            verify(req, [SECRET])


@pytest.mark.parametrize("stem", ["webhook-id", "topic", "shop-domain", "event-id", "test"])
def test_two_spellings_of_a_header_that_disagree_are_invalid_payload(stem: str) -> None:
    headers = {**BARE, f"shopify-{stem}": "one", f"x-shopify-{stem}": "other"}
    with pytest.raises(InvalidPayload):
        SCHEME.parse(request(BODY, None, **headers))


# -- the contract ---------------------------------------------------------------------------


class TestShopifyScheme(RoutedSchemeContract):
    source = "shopify"
    scheme_name = "shopify"
    routed_event = "orders/create"
    unrouted_event = "products/update"
    #: Which spelling of the headers this provider sends (see :class:`TestShopifyBareHeaders`).
    bare: ClassVar[bool] = False

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps({"id": 820982911946154508, "email": "jon@example.com"}).encode()
        headers = {
            **SCHEME.sign(body, secret, webhook_id=webhook_id),
            "X-Shopify-Topic": event_type,
            "X-Shopify-Shop-Domain": "example.myshopify.com",
        }
        return SignedRequest(body, respelled(headers, bare=self.bare))

    def header(self, stem: str) -> str:
        return spelled(stem, bare=self.bare)

    @pytest.mark.django_db(transaction=True)
    def test_a_capture_replayed_under_new_ids_topics_or_spellings_is_one_event(self) -> None:
        """Issue #10 finding 4: Shopify signs neither the webhook id nor the topic. A captured
        order was stored again under each new id; now every variant, in either spelling of the
        headers, is the first delivery, and none runs under the other topic's workflow."""
        with self.routed({"orders/cancelled": "fail"}):
            capture = self.good("wh-1")
            other_spelling = SignedRequest(
                capture.body, respelled(capture.headers, bare=not self.bare)
            )
            first = self.send(capture)
            replays = [
                self.send(capture),
                self.send(capture, **{self.header("webhook-id"): "wh-2"}),
                self.send(capture, **{self.header("topic"): "orders/cancelled"}),
                self.send(
                    other_spelling,
                    **{
                        spelled("webhook-id", bare=not self.bare): "wh-3",
                        spelled("topic", bare=not self.bare): "orders/cancelled",
                    },
                ),
            ]
            assert_one_event(first, replays)
            assert WebhookEvent.objects.get().event_type == "orders/create"

    @pytest.mark.django_db(transaction=True)
    def test_one_body_under_two_topics_is_one_event_the_first_wins(self) -> None:
        """Shopify may send identical bytes as two topics (``products/create`` then
        ``products/update`` of an unchanged product). Nothing signed tells them apart from a
        replay under another topic, so the first to arrive wins; the second is a duplicate."""
        with self.routed({"products/create": "record", "products/update": "fail"}):
            first = self.send(self.good("wh-create", event_type="products/create"))
            second = self.send(self.good("wh-update", event_type="products/update"))
            assert_one_event(first, [second])

    @pytest.mark.parametrize(
        ("stem", "status", "error"),
        [
            ("hmac-sha256", 401, "invalid_signature"),
            ("webhook-id", 400, "invalid_payload"),
            ("topic", 400, "invalid_payload"),
            ("shop-domain", 400, "invalid_payload"),
        ],
    )
    def test_both_spellings_with_different_values_are_refused(self, stem, status, error) -> None:
        """Whichever spelling were picked, a replay could choose the value: refuse instead."""
        capture = self.good("wh-1")
        value = capture.headers[self.header(stem)]
        conflicting = {spelled(stem, bare=not self.bare): "other-" + value}
        self.assert_refused(self.send(capture, **conflicting), status, (error,))
        same = {spelled(stem, bare=not self.bare): value}
        assert self.send(capture, **same).status_code == 202


class TestShopifyBareHeaders(TestShopifyScheme):
    """The whole contract again with ``shopify-*`` headers, as Shopify now also sends them."""

    bare = True

    def test_stored_headers_keep_the_bare_spelling_without_the_hmac(self) -> None:
        assert self.send(self.good("wh-1")).status_code == 202
        headers = WebhookEvent.objects.get().headers
        assert headers["shopify-webhook-id"] == "wh-1"
        assert headers["shopify-topic"] == "orders/create"
        assert headers["shopify-shop-domain"] == "example.myshopify.com"
        assert "shopify-hmac-sha256" not in headers


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


@pytest.mark.django_db(transaction=True)
def test_one_event_to_two_subscriptions_is_one_event_the_first_wins(client, shopify_source):
    """Same ``X-Shopify-Event-Id`` and body, different ``X-Shopify-Webhook-Id``: indistinguishable
    from a replay under a new id (neither header is signed), so the second is a duplicate."""
    first, second = [
        post(client, BODY, **SCHEME.sign(BODY, settings.SECRET_A, webhook_id=wh), **SHOPIFY_HEADERS)
        for wh in ("wh-1", "wh-2")
    ]
    assert_one_event(first, [second])


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
