from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.shopify import ShopifyScheme

SCHEME = ShopifyScheme()
VECTOR = load_vectors("shopify")[0]


def request(body: bytes, signature: str | None, **headers: str) -> InboundRequest:
    if signature is not None:
        headers["x-shopify-hmac-sha256"] = signature
    return InboundRequest(body=body, headers=headers)


def test_published_vector_verifies():
    SCHEME.verify(
        request(VECTOR["body"].encode(), VECTOR["expected_X-Shopify-Hmac-Sha256"]),
        [VECTOR["secret"]],
        now=0,
        tolerance=0,
    )
    assert (
        SCHEME.sign(VECTOR["body"].encode(), VECTOR["secret"])["X-Shopify-Hmac-Sha256"]
        == VECTOR["expected_X-Shopify-Hmac-Sha256"]
    )


@pytest.mark.parametrize("index", [0, 10, -2])
def test_one_changed_byte_of_body_or_signature_is_refused(index):
    body = bytearray(VECTOR["body"].encode())
    body[index] ^= 1
    with pytest.raises(InvalidSignature):
        SCHEME.verify(
            request(bytes(body), VECTOR["expected_X-Shopify-Hmac-Sha256"]),
            [VECTOR["secret"]],
            now=0,
            tolerance=0,
        )
    digest = bytearray(base64.b64decode(VECTOR["expected_X-Shopify-Hmac-Sha256"]))
    digest[index] ^= 1
    with pytest.raises(InvalidSignature):
        SCHEME.verify(
            request(VECTOR["body"].encode(), base64.b64encode(digest).decode()),
            [VECTOR["secret"]],
            now=0,
            tolerance=0,
        )


def test_missing_and_malformed():
    with pytest.raises(MissingSignature):
        SCHEME.verify(request(b"{}", None), ["s"], now=0, tolerance=0)
    for bad in ("", "%%%", "YWJj", "A" * 10_000):
        with pytest.raises(InvalidSignature):
            SCHEME.verify(request(b"{}", bad), ["s"], now=0, tolerance=0)


def test_delivery_id_is_required():
    with pytest.raises(InvalidPayload):
        SCHEME.parse(request(b"{}", None, **{"x-shopify-topic": "orders/create"}))


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
        }
        return SignedRequest(body, headers)
