"""Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=<hex>]``.

``v1`` is hex HMAC-SHA256 over ``"{t}.{raw body}"``, keyed with the endpoint's signing secret.

Provider quirks and security subtleties:

* The secret starts with ``whsec_`` like a Standard Webhooks secret, but Stripe uses the
  *whole literal string* (prefix included) as the UTF-8 key: it is never base64-decoded.
* While an endpoint secret is being rolled (old one kept up to 24 h) Stripe sends one ``v1``
  per secret; any one matching a configured secret passes.
* Only ``v1`` counts. Stripe adds a fake ``v0`` to test-mode events; accepting another scheme
  would let an attacker downgrade to it. A header with no ``v1`` entry is refused.
* stripe-python only refuses timestamps that are too *old*; we refuse both directions (the
  source's ``TIMESTAMP_TOLERANCE``), so a far-future ``t`` cannot make a capture replayable.
* ``t`` is signed verbatim and must be plain ASCII digits.

The delivery id is the event's ``id`` (``evt_…``) in the body, the same on every retry; the
event type is the body's ``type`` (``invoice.paid``…). Thin (v2) events carry both as well.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    any_digest_matches,
    check_timestamp,
    hmac_sha256,
    parse_json_object,
    unhex,
    validate_webhook_id,
)

SIGNATURE_HEADER = "stripe-signature"
_DIGEST_HEX_LENGTH = 64


def _parse_header(header: str) -> tuple[str, list[bytes]]:
    """The ``t`` value and the decoded ``v1`` digests; ``InvalidSignature`` if unusable.

    Malformed ``v1`` entries are dropped rather than fatal, so a decoy cannot hide a valid one.
    """
    timestamps: list[str] = []
    digests: list[bytes] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamps.append(value)
        elif key == "v1" and len(value) == _DIGEST_HEX_LENGTH:
            digest = unhex(value)
            if digest is not None:
                digests.append(digest)
    if len(timestamps) != 1:
        raise InvalidSignature("Stripe-Signature must carry exactly one t=<Unix seconds>.")
    if not digests:
        raise InvalidSignature("Stripe-Signature carries no v1 signature (others are ignored).")
    return timestamps[0], digests


class StripeScheme(Scheme):
    """Stripe webhook endpoints (``Stripe-Signature``, hex HMAC-SHA256 over ``t.body``)."""

    signature_headers: ClassVar[frozenset[str]] = frozenset({SIGNATURE_HEADER})
    recipe: ClassVar[str] = (
        "Dashboard → Developers → Webhooks → Add endpoint {url}; the endpoint's signing secret"
        " (whsec_…) is this source's secret, used exactly as shown. While rolling it, keep both"
        " here."
    )
    secret_from_provider: ClassVar[bool] = True

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature("Send the Stripe-Signature header: t=<unix>,v1=<hex>.")
        stamp, provided = _parse_header(header)
        timestamp = check_timestamp(
            stamp, now=now, tolerance=tolerance, header="Stripe-Signature t"
        )
        signed = timestamp.encode() + b"." + request.body
        expected = [hmac_sha256(secret.encode(), signed) for secret in secrets]
        matched = False
        for digest in provided:
            matched |= any_digest_matches(digest, expected)
        if not matched:
            raise InvalidSignature()

    def parse(self, request: InboundRequest) -> Delivery:
        event = parse_json_object(request.body)
        if "id" not in event:
            raise InvalidPayload("The Stripe event has no id.")
        webhook_id = validate_webhook_id(event["id"], where="id")
        # Every live event has a type; stripe-python's own test payload does not, so a missing
        # one is "" (routed by "*") rather than a refusal of a correctly signed delivery.
        event_type = event.get("type", "")
        if not isinstance(event_type, str):
            raise InvalidPayload("The Stripe event's type must be a string.")
        return Delivery(webhook_id=webhook_id, event_type=event_type, payload=event)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """``webhook_id`` is ignored: Stripe's delivery id is the ``id`` inside the body."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac_sha256(secret.encode(), stamp.encode() + b"." + body).hex()
        return {"Stripe-Signature": f"t={stamp},v1={digest}"}


SCHEME = StripeScheme
