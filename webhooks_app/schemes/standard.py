"""Standard Webhooks v1 (standardwebhooks.com): what Svix-powered senders and others emit.

Three headers: ``webhook-id`` (the message id, the same on every retry: our idempotency key),
``webhook-timestamp`` (Unix seconds of *this attempt*) and ``webhook-signature``, a
space-separated list of ``v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`` entries.
Senders rotating a secret sign with both keys and send both entries; any ``v1`` entry that a
configured secret produced is accepted, and entries of other versions (``v1a`` is ed25519,
``v2`` does not exist yet) are skipped, as the spec tells consumers to do.

Svix-branded senders (Clerk, Resend…) send the same triple as ``svix-id``, ``svix-timestamp``
and ``svix-signature``; those are read when no ``webhook-signature`` header is present.

Secrets (see :func:`signing_key`): ``whsec_<base64>`` is base64-decoded, padding optional;
anything else is used as raw UTF-8 bytes.

Stricter than the reference ``standardwebhooks`` library, on purpose:

* the timestamp must be an integer string, and is signed verbatim (the library parses it with
  ``float()`` and signs the floored value, so ``1614265330.9`` passes for ``1614265330``);
* malformed entries never raise anything but ``InvalidSignature`` (the library leaks
  ``ValueError``/``binascii.Error``);
* the tolerance is the source's ``TIMESTAMP_TOLERANCE`` in both directions, never disabled.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from webhooks_app.exceptions import (
    InvalidPayload,
    InvalidSignature,
    MissingSignature,
    NotConfigured,
)
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    any_digest_matches,
    check_timestamp,
    hmac_sha256,
    parse_json,
    validate_webhook_id,
)

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_VERSION = "v1,"


@dataclass(frozen=True)
class _HeaderNames:
    id: str
    timestamp: str
    signature: str


WEBHOOK_HEADERS = _HeaderNames("webhook-id", "webhook-timestamp", "webhook-signature")
SVIX_HEADERS = _HeaderNames("svix-id", "svix-timestamp", "svix-signature")


def signing_key(secret: str) -> bytes | None:
    """The HMAC key a configured secret stands for, or ``None`` if it cannot be one.

    * ``whsec_<base64>`` (what the spec and Svix dashboards hand out): the decoded bytes.
      Padding is optional, as in every reference library, but the alphabet is strict: the
      Python library's lenient ``b64decode`` silently drops stray characters, so two different
      secrets could collapse to one key. A malformed or empty one is unusable (``None``).
    * anything else: the UTF-8 bytes, used raw, like the reference library's ``Webhook(bytes)``.
      (The library would base64-decode an unprefixed string too; we do not, because a plain
      password such as ``my-secret`` would be mangled. Add the ``whsec_`` prefix to a bare
      base64 secret.)
    """
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode() or None
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return None
    return key or None


def _header_names(request: InboundRequest) -> _HeaderNames:
    if request.header(WEBHOOK_HEADERS.signature) is None and request.header(SVIX_HEADERS.signature):
        return SVIX_HEADERS
    return WEBHOOK_HEADERS


def carries_signature(request: InboundRequest) -> bool:
    """Whether the request carries a signature header of either spelling (the set that
    :meth:`StandardWebhooksScheme.verify` would check)."""
    return request.header(_header_names(request).signature) is not None


def signed_message_id(request: InboundRequest) -> str:
    """The message id from the header set whose signature is checked (``webhook-id``, or
    ``svix-id`` beside ``svix-signature``): signed verbatim, so the only id to trust.

    Schemes built on this one (GitLab) read their id here, never from a header set that
    verification did not look at, or a replay could choose its own id.
    """
    names = _header_names(request)
    raw_id = request.header(names.id)
    if raw_id is None:
        raise InvalidPayload(f"The {names.id} header is required.")
    webhook_id = validate_webhook_id(raw_id, where=names.id)
    if "." in webhook_id:
        # The spec forbids it, and for good reason: with a "." inside the id, part of it
        # could be re-read as the timestamp of a differently split signed string.
        raise InvalidPayload(f"{names.id} must not contain '.'.")
    return webhook_id


def _signed_content(webhook_id: str, timestamp: str, body: bytes) -> bytes:
    # UTF-8, as the reference libraries encode the id; the body is the raw bytes received.
    return f"{webhook_id}.{timestamp}.".encode() + body


class StandardWebhooksScheme(Scheme):
    """Standard Webhooks v1 symmetric signatures (HMAC-SHA256, base64)."""

    signature_headers: ClassVar[frozenset[str]] = frozenset(
        {WEBHOOK_HEADERS.signature, SVIX_HEADERS.signature}
    )
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {WEBHOOK_HEADERS.id, WEBHOOK_HEADERS.timestamp, SVIX_HEADERS.id, SVIX_HEADERS.timestamp}
    )

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        keys = [key for key in map(signing_key, secrets) if key is not None]
        if not keys:
            raise NotConfigured(
                "No configured secret is a usable Standard Webhooks secret "
                "(whsec_ followed by base64, or a plain string)."
            )
        names = _header_names(request)
        header = request.header(names.signature)
        if header is None:
            raise MissingSignature("Send the webhook-signature header: v1,<base64 HMAC-SHA256>.")
        webhook_id = request.header(names.id)
        timestamp = request.header(names.timestamp)
        if not webhook_id:
            raise InvalidSignature("The webhook-id and webhook-timestamp headers are required.")
        timestamp = check_timestamp(timestamp, now=now, tolerance=tolerance, header=names.timestamp)
        try:
            signed = _signed_content(webhook_id, timestamp, request.body)
        except UnicodeEncodeError:
            raise InvalidSignature() from None
        # Compare whole ``v1,<base64>`` strings rather than decoded bytes: no decoder to trip
        # on malformed input, and a non-canonical encoding of the right digest is not accepted.
        expected = [(_VERSION + _b64(hmac_sha256(key, signed))).encode() for key in keys]
        matched = False
        for entry in header.split():
            if entry.startswith(_VERSION) and entry.isascii():
                matched |= any_digest_matches(entry.encode(), expected)
        if not matched:
            raise InvalidSignature()

    def parse(self, request: InboundRequest) -> Delivery:
        """The body (any JSON) is the payload; its ``type`` field, if any, is the event type."""
        payload = parse_json(request.body)
        webhook_id = signed_message_id(request)
        event_type = payload.get("type", "") if isinstance(payload, dict) else ""
        if not isinstance(event_type, str):
            raise InvalidPayload("The payload's type must be a string.")
        return Delivery(webhook_id=webhook_id, event_type=event_type, payload=payload)

    def content_key(self, request: InboundRequest) -> None:
        """The id is signed (``{id}.{timestamp}.{body}``), so it is the only key needed: a
        sender may legitimately send the same body as two messages under two ids."""
        return None

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        key = signing_key(secret)
        if key is None:
            raise ValueError("The secret is not a usable Standard Webhooks secret.")
        webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = _VERSION + _b64(hmac_sha256(key, _signed_content(webhook_id, stamp, body)))
        return {
            WEBHOOK_HEADERS.id: webhook_id,
            WEBHOOK_HEADERS.timestamp: stamp,
            WEBHOOK_HEADERS.signature: signature,
        }


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


SCHEME = StandardWebhooksScheme
