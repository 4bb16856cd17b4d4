"""Standard Webhooks v1 (standardwebhooks.com): what Svix-powered senders and others emit.

Three headers: ``webhook-id`` (the message id, the same on every retry: our idempotency key),
``webhook-timestamp`` (Unix seconds of *this attempt*) and ``webhook-signature``, a
space-separated list of signatures of ``"{id}.{timestamp}.{body}"``: symmetric
``v1,<base64 HMAC-SHA256(key, …)>`` and asymmetric ``v1a,<base64 ed25519 signature>`` entries.
Senders rotating a secret sign with both keys and send both entries; any entry that a
configured secret of its kind produced is accepted (a ``v1`` one by an HMAC secret, a ``v1a``
one by a ``whpk_`` public key), and entries of other versions (``v2`` does not exist yet) are
skipped, as the spec tells consumers to do.

Svix-branded senders (Clerk, Resend…) send the same triple as ``svix-id``, ``svix-timestamp``
and ``svix-signature``; those are read when no ``webhook-signature`` header is present.

Secrets (see :func:`signing_key` and :func:`public_key`): ``whsec_<base64>`` is base64-decoded,
padding optional; ``whpk_<base64>`` is a 32-byte Ed25519 public key (the same base64 rule);
anything else is used as raw UTF-8 bytes. ``whsk_<base64>``, the sender's private key, is for
:meth:`StandardWebhooksScheme.sign` only (a test playing the sender): a receiver has no use for
it, and it never verifies anything here.

Stricter than the reference ``standardwebhooks`` library, on purpose:

* the timestamp must be an integer string, and is signed verbatim (the library parses it with
  ``float()`` and signs the floored value, so ``1614265330.9`` passes for ``1614265330``);
* malformed entries never raise anything but ``InvalidSignature`` (the library leaks
  ``ValueError``/``binascii.Error``); a ``v1a`` signature must be canonical padded base64 of
  64 bytes, as a ``v1`` one must be the canonical encoding of its digest;
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

from cryptography.exceptions import InvalidSignature as BadEd25519Signature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

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
PUBLIC_KEY_PREFIX = "whpk_"
PRIVATE_KEY_PREFIX = "whsk_"
ED25519_KEY_BYTES = 32
ED25519_SIGNATURE_BYTES = 64
_VERSION = "v1,"
_ASYMMETRIC_VERSION = "v1a,"
#: The encodings (sign bit cleared) of the Ed25519 points of small order, as libsodium refuses
#: them. Such a "public key" is nobody's: an all-zero placeholder key accepts 64 zero bytes as
#: the signature of about one message in four, so a forger only has to vary the id.
_SMALL_ORDER_POINTS = frozenset(
    bytes.fromhex(point)
    for point in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
)


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
    * ``whpk_``/``whsk_`` (Ed25519 keys): never an HMAC key. A public key is public: as HMAC
      key text it would let anyone forge a ``v1`` signature.
    * anything else: the UTF-8 bytes, used raw, like the reference library's ``Webhook(bytes)``.
      (The library would base64-decode an unprefixed string too; we do not, because a plain
      password such as ``my-secret`` would be mangled. Add the ``whsec_`` prefix to a bare
      base64 secret.)
    """
    if secret.startswith((PUBLIC_KEY_PREFIX, PRIVATE_KEY_PREFIX)):
        return None
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode() or None
    return _decode_base64(secret[len(SECRET_PREFIX) :]) or None


def public_key(secret: str) -> Ed25519PublicKey | None:
    """The Ed25519 key a ``whpk_<base64>`` secret stands for (``v1a`` entries), or ``None``:
    another kind of secret, not 32 bytes of base64 (padding optional, as for ``whsec_``), or a
    point of small order (:data:`_SMALL_ORDER_POINTS`)."""
    if not secret.startswith(PUBLIC_KEY_PREFIX):
        return None
    raw = _decode_base64(secret[len(PUBLIC_KEY_PREFIX) :])
    if raw is None or len(raw) != ED25519_KEY_BYTES:
        return None
    if raw[:-1] + bytes([raw[-1] & 0x7F]) in _SMALL_ORDER_POINTS:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key(secret: str) -> Ed25519PrivateKey | None:
    """The Ed25519 key a ``whsk_<base64>`` secret stands for, or ``None``. Two layouts exist:
    the 32-byte seed (RFC 8032), and libsodium's and TweetNaCl's 64 bytes, seed then public
    key; the latter only if its halves belong together."""
    if not secret.startswith(PRIVATE_KEY_PREFIX):
        return None
    raw = _decode_base64(secret[len(PRIVATE_KEY_PREFIX) :])
    if raw is None or len(raw) not in (ED25519_KEY_BYTES, 2 * ED25519_KEY_BYTES):
        return None
    key = Ed25519PrivateKey.from_private_bytes(raw[:ED25519_KEY_BYTES])
    if (
        len(raw) > ED25519_KEY_BYTES
        and key.public_key().public_bytes_raw() != raw[ED25519_KEY_BYTES:]
    ):
        return None
    return key


def _decode_base64(encoded: str) -> bytes | None:
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        return None


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
    """Standard Webhooks v1 signatures: symmetric (HMAC-SHA256) and asymmetric (ed25519)."""

    signature_headers: ClassVar[frozenset[str]] = frozenset(
        {WEBHOOK_HEADERS.signature, SVIX_HEADERS.signature}
    )
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {WEBHOOK_HEADERS.id, WEBHOOK_HEADERS.timestamp, SVIX_HEADERS.id, SVIX_HEADERS.timestamp}
    )
    recipe: ClassVar[str] = (
        "In the sender's dashboard (Svix, Clerk, Resend…), add an endpoint with URL {url}; its"
        " signing secret (whsec_…) or Ed25519 public key (whpk_…) is this source's secret."
    )
    secret_from_provider: ClassVar[bool] = True

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        keys = [key for key in map(signing_key, secrets) if key is not None]
        public_keys = [key for key in map(public_key, secrets) if key is not None]
        if not keys and not public_keys:
            raise NotConfigured(
                "No configured secret is a usable Standard Webhooks secret "
                "(whsec_ followed by base64, a whpk_ Ed25519 public key, or a plain string)."
            )
        names = _header_names(request)
        header = request.header(names.signature)
        if header is None:
            raise MissingSignature(
                "Send the webhook-signature header: v1,<base64 HMAC-SHA256> "
                "or v1a,<base64 ed25519>."
            )
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
            if not entry.isascii():
                continue
            if entry.startswith(_VERSION):
                matched |= any_digest_matches(entry.encode(), expected)
            elif entry.startswith(_ASYMMETRIC_VERSION) and public_keys:
                signature = _ed25519_signature(entry[len(_ASYMMETRIC_VERSION) :])
                matched |= signature is not None and _ed25519_matches(
                    signature, signed, public_keys
                )
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
        """A ``v1`` signature for an HMAC secret, a ``v1a`` one for a ``whsk_`` private key."""
        webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = _signature_entry(secret, _signed_content(webhook_id, stamp, body))
        return {
            WEBHOOK_HEADERS.id: webhook_id,
            WEBHOOK_HEADERS.timestamp: stamp,
            WEBHOOK_HEADERS.signature: signature,
        }


def _signature_entry(secret: str, message: bytes) -> str:
    ed25519_key = private_key(secret)
    if ed25519_key is not None:
        return _ASYMMETRIC_VERSION + _b64(ed25519_key.sign(message))
    key = signing_key(secret)
    if key is not None:
        return _VERSION + _b64(hmac_sha256(key, message))
    if secret.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError("A whpk_ public key only verifies: sign with its whsk_ private key.")
    raise ValueError("The secret is not a usable Standard Webhooks secret.")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _ed25519_signature(encoded: str) -> bytes | None:
    """The 64 bytes of a ``v1a`` entry, or ``None`` unless it is their canonical padded base64:
    strict like ``v1`` entries, where a lenient decoder would take several spellings of one."""
    signature = _decode_base64(encoded)
    if signature is None or len(signature) != ED25519_SIGNATURE_BYTES:
        return None
    return signature if _b64(signature) == encoded else None


def _ed25519_matches(
    signature: bytes, message: bytes, public_keys: Sequence[Ed25519PublicKey]
) -> bool:
    """Whether one of ``public_keys`` made ``signature``. No constant-time care is needed:
    the verification holds no secret to leak (the keys are public)."""
    for key in public_keys:
        try:
            key.verify(signature, message)
        except BadEd25519Signature:
            continue
        return True
    return False


SCHEME = StandardWebhooksScheme
