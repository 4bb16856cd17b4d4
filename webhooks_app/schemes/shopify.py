"""Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(app client secret, raw body)>``.

Provider quirks and security subtleties:

* Only the body is signed: no timestamp, and not the headers. The delivery-id dedupe stops a
  sender's retries and naive replays, but whoever captured a delivery can resend its body under
  a fresh ``X-Shopify-Webhook-Id`` (or another ``X-Shopify-Topic``): workflows that must not act
  twice key on the payload's own ids (the order's ``id``…), which are signed.
* The header is strict base64 of a 32-byte digest; anything else (bad alphabet, wrong length,
  a hex digest) is ``invalid_signature``, never a 500. Every secret is compared, in constant time.
* After the client secret is rotated Shopify may keep signing with the old one for up to an
  hour: list both secrets.
* Only HTTPS deliveries are signed; Pub/Sub and EventBridge deliveries carry no HMAC and do not
  come here.

Delivery id: ``X-Shopify-Webhook-Id``, the same on every retry (Shopify's "idempotency key").
``X-Shopify-Event-Id`` is stored but not used: it is shared by the deliveries of one event to
*several* subscriptions, each of which is a delivery of its own. Event type: ``X-Shopify-Topic``
(``orders/create``, ``app/uninstalled``…). Both headers are required. Retries resend the
*original* payload; the unsigned ``X-Shopify-Triggered-At`` is stored for staleness checks.
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
    parse_json_object,
    validate_webhook_id,
)

SIGNATURE_HEADER = "x-shopify-hmac-sha256"
ID_HEADER = "x-shopify-webhook-id"
TOPIC_HEADER = "x-shopify-topic"


class ShopifyScheme(Scheme):
    """Shopify app webhooks delivered over HTTPS (Admin API subscriptions and the app config)."""

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
        # Compared even when the header did not decode, so timing tells nothing.
        if not any_digest_matches(provided or b"", expected) or provided is None:
            raise InvalidSignature()

    def parse(self, request: InboundRequest) -> Delivery:
        payload = parse_json_object(request.body)
        return Delivery(
            webhook_id=_required(request, ID_HEADER, "X-Shopify-Webhook-Id"),
            # Same rule as an id (1-255 printable characters): it is stored and shown.
            event_type=_required(request, TOPIC_HEADER, "X-Shopify-Topic"),
            payload=payload,
        )

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """The HMAC header (and ``X-Shopify-Webhook-Id`` when given); no timestamp is signed."""
        digest = base64.b64encode(hmac_sha256(secret.encode(), body)).decode()
        headers = {"X-Shopify-Hmac-Sha256": digest}
        if webhook_id is not None:
            headers["X-Shopify-Webhook-Id"] = webhook_id
        return headers


def _required(request: InboundRequest, header: str, name: str) -> str:
    value = request.header(header)
    if value is None:
        raise InvalidPayload(f"The {name} header is required.")
    return validate_webhook_id(value, where=name)


SCHEME = ShopifyScheme
