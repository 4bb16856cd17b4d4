"""Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(app client secret, raw body)>``.

No timestamp is signed: replays are stopped by the delivery-id dedupe alone. After a client
secret is rotated Shopify may keep signing with the old one for up to an hour, so configure
both. Delivery id: ``X-Shopify-Webhook-Id`` (the same on every retry); event type:
``X-Shopify-Topic`` (``orders/create``…). Retries resend the *original* payload; the unsigned
``X-Shopify-Triggered-At`` is kept with the event for staleness checks.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import ClassVar

from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    any_digest_matches,
    decode_base64_digest,
    hmac_sha256,
    parse_json,
    validate_webhook_id,
)

SIGNATURE_HEADER = "x-shopify-hmac-sha256"
ID_HEADER = "x-shopify-webhook-id"
TOPIC_HEADER = "x-shopify-topic"


class ShopifyScheme(Scheme):
    signature_headers: ClassVar[frozenset[str]] = frozenset({SIGNATURE_HEADER})
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {
            ID_HEADER, TOPIC_HEADER, "x-shopify-shop-domain", "x-shopify-api-version",
            "x-shopify-event-id", "x-shopify-triggered-at", "x-shopify-test",
        }
    )  # fmt: skip

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature("Send X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 of the body).")
        provided = decode_base64_digest(header, hashlib.sha256().digest_size)
        expected = [hmac_sha256(secret.encode(), request.body) for secret in secrets]
        if not any_digest_matches(provided or b"", expected) or provided is None:
            raise InvalidSignature()

    def parse(self, request: InboundRequest) -> Delivery:
        payload = parse_json(request.body)
        delivery = request.header(ID_HEADER)
        if delivery is None:
            raise InvalidPayload("The X-Shopify-Webhook-Id header is required.")
        topic = request.header(TOPIC_HEADER) or ""
        return Delivery(
            validate_webhook_id(delivery, where="X-Shopify-Webhook-Id"), topic[:255], payload
        )

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        headers = {
            "X-Shopify-Hmac-Sha256": base64.b64encode(hmac_sha256(secret.encode(), body)).decode()
        }
        if webhook_id is not None:
            headers["X-Shopify-Webhook-Id"] = webhook_id
        return headers


SCHEME = ShopifyScheme
