"""The shape every signature scheme has, and the pure helpers they share.

A scheme turns the raw request (bytes, headers, URL) plus the configured secrets and the clock
into a verdict: it raises a :mod:`webhooks_app.exceptions` error, or it returns a
:class:`Delivery`. Schemes never touch the ORM or Django's request object, so they are tested
with plain data (``shared/vectors``) and are safe to reuse outside a view.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from webhooks_app.exceptions import (
    InvalidJSON,
    InvalidPayload,
    InvalidSignature,
    MethodNotAllowed,
    MissingSignature,
)

#: Deeper JSON than this is refused (400): real webhook payloads nest about ten levels, and
#: deep nesting is a denial-of-service shape (stdlib ``json`` raises ``RecursionError``).
MAX_JSON_DEPTH = 64
MAX_ID_LENGTH = 255


@dataclass(frozen=True)
class InboundRequest:
    """What a scheme may look at: the exact bytes received and the request metadata."""

    body: bytes
    headers: Mapping[str, str]  # keys are lower-case
    url: str = ""
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Delivery:
    """A verified, parsed delivery.

    ``webhook_id`` is the sender's idempotency key (``None``: the server assigns one and nothing
    is deduplicated). ``workflow_name`` is set only by schemes whose body names the workflow
    (generic); provider schemes leave it to the source's ``ROUTES``.
    """

    webhook_id: str | None
    event_type: str
    payload: Any
    workflow_name: str | None = None
    #: The sender's ordering key (the generic envelope's ``order_key``); else the source's
    #: ``ORDER_KEY`` decides.
    order_key: str | None = None
    #: Answer this body (200) instead of storing anything: protocol messages such as Slack's
    #: ``url_verification``, which are verified but are not events.
    reply: Mapping[str, Any] | None = None


class Scheme(ABC):
    """One sender's signing convention."""

    #: Lower-case media types the body may be sent as.
    media_types: ClassVar[frozenset[str]] = frozenset({"application/json"})
    #: Lower-case names of headers that carry signatures: never stored, never logged.
    signature_headers: ClassVar[frozenset[str]] = frozenset()
    #: Lower-case names of provider headers worth keeping with the event (ids, event types).
    stored_headers: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``verify`` reads ``request.url`` (Twilio signs it); others get ``""``.
    signs_url: ClassVar[bool] = False
    #: What to enter where at the provider, for the admin's source page: one or two sentences
    #: with ``{url}`` exactly once, for the URL to give the sender. The admin calls
    #: ``recipe.format(url=...)``, so the text has no other braces. "": the admin says
    #: something general instead.
    recipe: ClassVar[str] = ""
    #: Whether the provider generates the secret and shows it to you (Stripe's ``whsec_``), so
    #: it is pasted here; ``False``: you choose it here and paste it at the provider (GitHub).
    secret_from_provider: ClassVar[bool] = False

    @abstractmethod
    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        """Raise ``MissingSignature`` or ``InvalidSignature`` unless a secret signed the body."""

    @abstractmethod
    def parse(self, request: InboundRequest) -> Delivery:
        """Raise ``InvalidJSON`` or ``InvalidPayload``, or return the delivery."""

    def content_key(self, request: InboundRequest) -> str | None:
        """A digest of what the signature covers: the delivery's second idempotency key.

        Where a delivery id or an event type travels in a header the signature does not cover,
        a captured request re-sent with a new value would otherwise be a new event (or another
        workflow's). Two deliveries of one source with the same key are one event, whatever
        their unsigned headers say (contract §4, §5). By default the key is the body's SHA-256;
        schemes that sign something else (Twilio signs a URL and its parameters) override it,
        and ``None`` means the delivery id is itself signed and is the only key needed.
        """
        return hashlib.sha256(request.body).hexdigest()

    def handshake(self, request: InboundRequest, verify_token: str) -> str:
        """Answer a ``GET`` (subscription check); the returned text is sent as ``text/plain``.

        Raise ``HandshakeRefused`` for a wrong token. Most schemes have no handshake: 405.
        """
        raise MethodNotAllowed()

    @property
    def has_handshake(self) -> bool:
        """Whether ``GET`` means something for this scheme (it overrides :meth:`handshake`)."""
        return type(self).handshake is not Scheme.handshake

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """Headers a sender would add to ``body`` (tests, ``send_test_webhook``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot sign requests")


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def any_digest_matches(provided: bytes, expected: Iterable[bytes]) -> bool:
    """Constant-time comparison against every candidate (all are compared, no early exit)."""
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(provided, candidate)
    return matched


#: Unix seconds as ASCII digits; 15 digits is far beyond any real clock and bounds ``int()``.
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")


def check_timestamp(value: str | None, *, now: float, tolerance: int, header: str) -> str:
    """A signed timestamp, as sent: digits only, within ``tolerance`` of ``now`` both ways.

    Both directions: a far-future timestamp would keep a captured request replayable for as
    long as it stays "not too old". Returned verbatim, because it is signed verbatim.
    """
    if value is None or not _UNIX_SECONDS.fullmatch(value):
        raise InvalidSignature(f"{header} must be an integer (Unix seconds).")
    if abs(now - int(value)) > tolerance:
        raise InvalidSignature(f"{header} is outside the tolerance window.")
    return value


def secret_token_matches(provided: str, secrets: Sequence[str]) -> bool:
    """Plain shared tokens (Telegram, GitLab) compared in constant time.

    Both sides are hashed first, so neither the comparison nor its length reveals anything.
    """
    digest = hashlib.sha256(provided.encode("utf-8", "surrogatepass")).digest()
    return any_digest_matches(digest, [hashlib.sha256(s.encode()).digest() for s in secrets])


def decode_base64_digest(value: str, size: int) -> bytes | None:
    """Strict base64 of a ``size``-byte digest (Shopify, Twilio); ``None`` if malformed."""
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest if len(digest) == size else None


def verify_hex_sha256(
    value: str,
    message: bytes,
    secrets: Sequence[str],
    *,
    prefix: str,
    prefix_optional: bool = False,
) -> None:
    """``<prefix><hex HMAC-SHA256(secret, message)>`` for one of ``secrets``, else ``InvalidSignature``.

    The prefix is matched case-insensitively, the hex in either case. Every candidate is
    computed and compared even for a malformed value, so the time taken does not tell which
    check failed.
    """
    value = value.strip()
    if value[: len(prefix)].lower() == prefix:
        value = value[len(prefix) :]
    elif not prefix_optional:
        value = ""
    provided = unhex(value) if len(value) == 64 else None
    expected = [hmac_sha256(secret.encode(), message) for secret in secrets]
    if not any_digest_matches(provided or b"", expected) or provided is None:
        raise InvalidSignature()


def unhex(value: str) -> bytes | None:
    """Strict hex decoding (no whitespace, no odd length, ASCII only); ``None`` if malformed."""
    try:
        return binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        # Parsers disagree on which duplicate wins; a signed body must mean one thing.
        raise ValueError("duplicate key")
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("number out of range")
    return number


def _check_storable(value: Any) -> None:
    """Depth limit, plus strings every database can store (no NUL, no lone surrogates).

    Iterative, so hostile nesting cannot exhaust the interpreter's stack.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[Any] = node.values()
            strings: Iterable[Any] = node.keys()
        elif isinstance(node, list):
            children, strings = node, ()
        else:
            if isinstance(node, str):
                _check_string(node)
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidJSON(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.")
        for key in strings:
            _check_string(key)
        stack.extend((child, depth + 1) for child in children)


def _check_string(text: str) -> None:
    if "\x00" in text:
        raise InvalidJSON("The body contains a NUL character.")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJSON("The body contains an unpaired surrogate.") from None


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no duplicate keys, no NaN/Infinity, bounded depth."""
    try:
        text = body.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except UnicodeDecodeError:
        raise InvalidJSON("The body is not valid UTF-8.") from None
    except RecursionError:
        raise InvalidJSON(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, constants, huge numbers
        raise InvalidJSON(f"The body is not valid JSON: {exc}.") from None
    _check_storable(value)
    return value


def parse_json_object(body: bytes) -> dict[str, Any]:
    value = parse_json(body)
    if not isinstance(value, dict):
        raise InvalidPayload("The body must be a JSON object.")
    return value


def validate_webhook_id(value: object, *, where: str = "webhook_id") -> str:
    """An idempotency key: 1-255 printable characters (no control characters)."""
    if not isinstance(value, str):
        raise InvalidPayload(f"{where} must be a string.")
    if not 1 <= len(value) <= MAX_ID_LENGTH or not value.isprintable():
        raise InvalidPayload(f"{where} must be 1-{MAX_ID_LENGTH} printable characters.")
    return value


def form_pairs(body: bytes) -> list[tuple[str, str]]:
    """Strict ``application/x-www-form-urlencoded``: UTF-8 only, storable strings only."""
    try:
        pairs = urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), errors="strict"
        )
    except UnicodeDecodeError:
        raise InvalidJSON("The body is not valid UTF-8.") from None
    except ValueError as exc:
        raise InvalidPayload(f"The form body is malformed: {exc}.") from None
    for key, value in pairs:
        _check_string(key)
        _check_string(value)
    return pairs


def parse_form(body: bytes) -> dict[str, str]:
    """A form whose fields each appear once (Slack): a repeated one is refused, for the same
    reason as duplicate JSON keys. (Twilio repeats fields on purpose: it uses ``form_pairs``.)
    """
    pairs = form_pairs(body)
    form = dict(pairs)
    if len(form) != len(pairs):
        raise InvalidPayload("The form body repeats a field.")
    return form


class SharedTokenScheme(Scheme):
    """Senders that authenticate with a shared token in a header instead of a MAC (Telegram,
    GitLab). The token proves who sent the request, not that the body is intact: use HTTPS."""

    token_header: ClassVar[str]
    missing_detail: ClassVar[str]

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        token = request.header(self.token_header)
        if token is None:
            raise MissingSignature(self.missing_detail)
        if not secret_token_matches(token, secrets):
            raise InvalidSignature("The secret token does not match.")

    def token_headers(self, secret: str) -> dict[str, str]:
        return {self.token_header: secret}


class HmacHeaderScheme(Scheme):
    """Senders that put ``<prefix><hex HMAC-SHA256(secret, signed content)>`` in one header
    (generic, GitHub, Meta, Slack): a subclass declares the header, the prefix and the message
    for a request without it, and gets :meth:`verify` and :meth:`sign`.

    What is signed is the raw body; a sender that signs a timestamp too (Slack) names its
    header in ``timestamp_header`` and builds the signed bytes in :meth:`signed_content`.
    """

    #: As the sender spells it (``sign`` writes it so); read case-insensitively.
    signature_header: ClassVar[str]
    #: Lower-case (``sha256=``, ``v0=``); the sender's may be in either case.
    prefix: ClassVar[str]
    #: Whether a bare hex digest (no prefix) is accepted as well.
    prefix_optional: ClassVar[bool] = False
    #: The ``MissingSignature`` detail: what to send, or what to set at the provider.
    missing_detail: ClassVar[str]
    #: The header of a signed Unix timestamp, checked against the tolerance; "" when none is.
    timestamp_header: ClassVar[str] = ""
    #: Where ``sign`` puts ``webhook_id``; "" when the sender's id travels in the body.
    id_header: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The header the signature travels in is never stored or logged, whether or not the
        # subclass remembered to list it.
        if header := getattr(cls, "signature_header", ""):
            cls.signature_headers = cls.signature_headers | {header.lower()}

    def signed_content(self, body: bytes, timestamp: str) -> bytes:
        """The bytes the MAC covers; ``timestamp`` is ``""`` unless ``timestamp_header`` is set."""
        return body

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        value = request.header(self.signature_header)
        if value is None:
            raise MissingSignature(self.missing_detail)
        timestamp = ""
        if self.timestamp_header:
            timestamp = check_timestamp(
                request.header(self.timestamp_header),
                now=now,
                tolerance=tolerance,
                header=self.timestamp_header,
            )
        verify_hex_sha256(
            value,
            self.signed_content(request.body, timestamp),
            secrets,
            prefix=self.prefix,
            prefix_optional=self.prefix_optional,
        )

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """The signature header, the timestamp's if one is signed (now unless ``timestamp``
        is given), and ``id_header`` when ``webhook_id`` is given and the scheme has one."""
        stamp = ""
        if self.timestamp_header:
            stamp = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac_sha256(secret.encode(), self.signed_content(body, stamp)).hex()
        headers = {self.signature_header: self.prefix + digest}
        if stamp:
            headers[self.timestamp_header] = stamp
        if webhook_id is not None and self.id_header:
            headers[self.id_header] = webhook_id
        return headers
