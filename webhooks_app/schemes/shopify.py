"""Shopify: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256(app client secret, raw body)>``.

Provider quirks and security subtleties:

* Only the body is signed: no timestamp, and none of the headers, so neither the delivery id
  (``X-Shopify-Webhook-Id``) nor the topic (``X-Shopify-Topic``) can be trusted on its own. The
  body's SHA-256 is therefore a second idempotency key (:meth:`Scheme.content_key`, contract
  §5): a captured delivery re-sent under a fresh id, another topic, or both is a duplicate of the
  first and runs once, under the first one's route. The price: Shopify may itself send identical
  bytes as two deliveries (one event to several subscriptions of the endpoint; ``products/create``
  and ``products/update`` of an unchanged product), and then the first to arrive wins and the
  other is answered ``200 duplicate``. Once cleanup has deleted an event, its body is forgotten.
* Every header comes in two spellings: ``X-Shopify-Topic`` and, newer, the lower-case
  ``shopify-topic`` without the prefix (likewise ``hmac-sha256``, ``webhook-id``, ``event-id``,
  ``shop-domain``, ``api-version``, ``triggered-at``, ``test``); Shopify's app libraries accept
  either. Both are read, both HMAC spellings are signature headers, and a request carrying both
  spellings of one header with different values is refused (401 for the HMAC, 400 for the
  others) rather than one being picked.
* The HMAC is strict base64 of a 32-byte digest; anything else (bad alphabet, wrong length, a
  hex digest) is ``invalid_signature``, never a 500. Every secret is compared, in constant time.
* After the client secret is rotated Shopify may keep signing with the old one for up to an
  hour: list both secrets.
* Only HTTPS deliveries are signed; Pub/Sub and EventBridge deliveries carry no HMAC and do not
  come here.

Delivery id: the webhook id, the same on every retry (Shopify's "idempotency key"). The event id
is stored but not used: it is shared by the deliveries of one event to several subscriptions,
which the body digest already makes one. Event type: the topic (``orders/create``,
``app/uninstalled``…). Both are required. Retries resend the *original* payload; the unsigned
``triggered-at`` is stored for staleness checks.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import ClassVar

from webhooks_app.exceptions import (
    InvalidPayload,
    InvalidSignature,
    MissingSignature,
    WebhookError,
)
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

#: Each Shopify header by its name without prefix; it is read as ``X-Shopify-<name>`` and as
#: ``shopify-<name>``.
SIGNATURE = "hmac-sha256"
WEBHOOK_ID = "webhook-id"
TOPIC = "topic"
METADATA = ("shop-domain", "api-version", "event-id", "triggered-at", "test")


def spellings(name: str) -> tuple[str, str]:
    """The two lower-case header names Shopify may send ``name`` under."""
    return f"x-shopify-{name}", f"shopify-{name}"


class ShopifyScheme(Scheme):
    """Shopify app webhooks delivered over HTTPS (Admin API subscriptions and the app config)."""

    signature_headers: ClassVar[frozenset[str]] = frozenset(spellings(SIGNATURE))
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        header for name in (WEBHOOK_ID, TOPIC, *METADATA) for header in spellings(name)
    )
    recipe: ClassVar[str] = (
        "Subscribe the webhook (app configuration or Admin API) with URL {url}. Shopify signs"
        " with the app's client secret: after rotating it, keep the old one here for up to an"
        " hour."
    )
    secret_from_provider: ClassVar[bool] = True

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = _header(request, SIGNATURE, InvalidSignature)
        if header is None:
            raise MissingSignature("Send X-Shopify-Hmac-Sha256 (base64 HMAC-SHA256 of the body).")
        provided = decode_base64_digest(header, hashlib.sha256().digest_size)
        expected = [hmac_sha256(secret.encode(), request.body) for secret in secrets]
        # Compared even when the header did not decode, so timing tells nothing.
        if not any_digest_matches(provided or b"", expected) or provided is None:
            raise InvalidSignature()

    def parse(self, request: InboundRequest) -> Delivery:
        payload = parse_json_object(request.body)
        for name in METADATA:  # stored, and so shown to workflows: one meaning each, too
            _header(request, name, InvalidPayload)
        return Delivery(
            webhook_id=_required(request, WEBHOOK_ID),
            # Same rule as an id (1-255 printable characters): it is stored and shown.
            event_type=_required(request, TOPIC),
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


def _header(request: InboundRequest, name: str, conflict: type[WebhookError]) -> str | None:
    """The value of header ``name`` in whichever spelling was sent; ``conflict`` is raised when
    both spellings were sent with different values, since picking one would let a replay choose."""
    prefixed, bare = (request.header(header) for header in spellings(name))
    if prefixed is not None and bare is not None and prefixed != bare:
        raise conflict(f"{_display(name)} and shopify-{name} disagree.")
    return bare if prefixed is None else prefixed


def _required(request: InboundRequest, name: str) -> str:
    value = _header(request, name, InvalidPayload)
    if value is None:
        raise InvalidPayload(f"The {_display(name)} header is required.")
    return validate_webhook_id(value, where=_display(name))


def _display(name: str) -> str:
    return f"X-Shopify-{name.title()}"


SCHEME = ShopifyScheme
