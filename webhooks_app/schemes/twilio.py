"""Twilio: ``X-Twilio-Signature: <base64 HMAC-SHA1(auth token, URL + sorted params)>``.

The signed string is the full URL Twilio requested (scheme, host, path, query as sent) followed,
for form bodies, by every POST parameter name and value in sorted order (a repeated parameter's
values de-duplicated and sorted, as twilio-python does). For JSON bodies Twilio adds
``bodySHA256=<hex sha256(body)>`` to the URL and signs the URL alone; the body hash is then
compared too. Like twilio-python, the URL is tried with and without the default port.

**The URL must be the one Twilio used.** Behind a proxy, set the source's ``PUBLIC_URL`` to
the exact URL configured in Twilio, or let Django see the original host and scheme
(``USE_X_FORWARDED_HOST``, ``SECURE_PROXY_SSL_HEADER``). Only the primary auth token signs.

Delivery id and event type: ``MessageSid`` → ``message``, ``CallSid`` → ``call`` (also
``SmsSid``/``RecordingSid``…); a status callback (``MessageStatus``/``CallStatus``) is
``<sid>:<status>`` and ``message.<status>``/``call.<status>``, since one message or call goes
through several statuses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Sequence
from typing import Any, ClassVar

from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    decode_base64_digest,
    form_pairs,
    parse_json,
    validate_webhook_id,
)

SIGNATURE_HEADER = "x-twilio-signature"
FORM = "application/x-www-form-urlencoded"
BODY_HASH_PARAM = "bodySHA256"
SHA1_DIGEST_SIZE = 20  # Twilio's MAC is HMAC-SHA1: its choice, not ours
#: (sid field, status field, event kind), first match wins.
KINDS = [
    ("MessageSid", "MessageStatus", "message"),
    ("SmsSid", "SmsStatus", "message"),
    ("CallSid", "CallStatus", "call"),
    ("RecordingSid", "RecordingStatus", "recording"),
]


def form_params(body: bytes) -> dict[str, list[str]]:
    """Form parameters with every value: Twilio repeats some, and signs each."""
    params: dict[str, list[str]] = {}
    for name, value in form_pairs(body):
        params.setdefault(name, []).append(value)
    return params


def signed_string(url: str, params: dict[str, list[str]]) -> str:
    return url + "".join(
        name + value for name in sorted(params) for value in sorted(set(params[name]))
    )


def _with_and_without_port(url: str) -> set[str]:
    parts = urllib.parse.urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    variants = {url}
    if default is not None and parts.port in (None, default):
        for netloc in (host, f"{host}:{default}"):
            variants.add(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    return variants


def _is_form(request: InboundRequest) -> bool:
    return (request.header("content-type") or "").split(";", 1)[0].strip().lower() == FORM


def _sign(secret: str, text: str) -> bytes:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()


class TwilioScheme(Scheme):
    media_types: ClassVar[frozenset[str]] = frozenset({FORM, "application/json"})
    signature_headers: ClassVar[frozenset[str]] = frozenset({SIGNATURE_HEADER})
    stored_headers: ClassVar[frozenset[str]] = frozenset({"i-twilio-idempotency-token"})
    signs_url: ClassVar[bool] = True

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature("Send X-Twilio-Signature.")
        provided = decode_base64_digest(header, SHA1_DIGEST_SIZE) or b""
        if _is_form(request):
            params = form_params(request.body)
        else:
            body_hash = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query).get(
                BODY_HASH_PARAM, [""]
            )[0]
            if not hmac.compare_digest(
                body_hash.encode(), hashlib.sha256(request.body).hexdigest().encode()
            ):
                raise InvalidSignature("bodySHA256 in the URL does not match the body.")
            params = {}
        matched = False
        for url in _with_and_without_port(request.url):
            text = signed_string(url, params)
            for secret in secrets:
                matched |= hmac.compare_digest(provided, _sign(secret, text))
        if not matched:
            raise InvalidSignature()

    def parse(self, request: InboundRequest) -> Delivery:
        if not _is_form(request):
            payload: Any = parse_json(request.body)
            fields = payload if isinstance(payload, dict) else {}
        else:
            params = form_params(request.body)
            payload = {
                name: values[0] if len(values) == 1 else values for name, values in params.items()
            }
            fields = payload
        for sid_field, status_field, kind in KINDS:
            sid = fields.get(sid_field)
            if isinstance(sid, str):
                status = fields.get(status_field)
                if isinstance(status, str) and status:
                    return Delivery(
                        validate_webhook_id(f"{sid}:{status}", where=sid_field),
                        f"{kind}.{status}",
                        payload,
                    )
                return Delivery(validate_webhook_id(sid, where=sid_field), kind, payload)
        return Delivery(None, "", payload)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
        url: str = "",
        form: bool = True,
    ) -> dict[str, str]:
        """For JSON (``form=False``), ``url`` must already carry ``bodySHA256``."""
        params = form_params(body) if form else {}
        return {
            "X-Twilio-Signature": base64.b64encode(
                _sign(secret, signed_string(url, params))
            ).decode()
        }


SCHEME = TwilioScheme
