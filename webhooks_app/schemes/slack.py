"""Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{raw body}")>``.

``ts`` is ``X-Slack-Request-Timestamp``, checked against the tolerance in both directions (the
Slack SDK refuses ``abs(now - ts) > 300``). Bodies are JSON (Events API) or form-encoded (slash
commands; interactivity, whose form carries a ``payload`` JSON field): the MAC covers the raw
bytes either way.

- ``url_verification`` is answered ``{"challenge": …}`` once the signature verified, and not
  stored: it is a protocol message, not an event.
- Event type: for ``event_callback`` the inner event's type (``app_mention``, ``message``…); for
  slash commands the command (``/deploy``); for interactivity the payload's ``type``
  (``block_actions``…); otherwise the body's ``type``.
- Delivery id: the Events API's ``event_id`` (the same on Slack's retries, which carry
  ``X-Slack-Retry-Num``); slash commands and interactivity: their ``trigger_id``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, ClassVar

from webhooks_app.exceptions import InvalidPayload, MissingSignature
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    check_timestamp,
    hmac_sha256,
    parse_form,
    parse_json_object,
    validate_webhook_id,
    verify_hex_sha256,
)

SIGNATURE_HEADER = "x-slack-signature"
TIMESTAMP_HEADER = "x-slack-request-timestamp"
FORM = "application/x-www-form-urlencoded"
_PREFIX = "v0="


def _signed(timestamp: str, body: bytes) -> bytes:
    return b"v0:" + timestamp.encode() + b":" + body


class SlackScheme(Scheme):
    media_types: ClassVar[frozenset[str]] = frozenset({"application/json", FORM})
    signature_headers: ClassVar[frozenset[str]] = frozenset({SIGNATURE_HEADER})
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {TIMESTAMP_HEADER, "x-slack-retry-num", "x-slack-retry-reason"}
    )

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature(
                "Send X-Slack-Signature (v0=<hex>) and X-Slack-Request-Timestamp."
            )
        timestamp = check_timestamp(
            request.header(TIMESTAMP_HEADER),
            now=now,
            tolerance=tolerance,
            header="X-Slack-Request-Timestamp",
        )
        verify_hex_sha256(header, _signed(timestamp, request.body), secrets, prefix=_PREFIX)

    def parse(self, request: InboundRequest) -> Delivery:
        media_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
        if media_type == FORM:
            return _parse_form(request.body)
        body = parse_json_object(request.body)
        kind = body.get("type", "")
        if kind == "url_verification":
            challenge = body.get("challenge")
            if not isinstance(challenge, str):
                raise InvalidPayload("url_verification needs a challenge string.")
            return Delivery(None, "url_verification", {}, reply={"challenge": challenge})
        inner = body.get("event")
        event_type = (
            inner.get("type") if kind == "event_callback" and isinstance(inner, dict) else kind
        )
        return Delivery(_optional_id(body.get("event_id"), "event_id"), _text(event_type), body)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac_sha256(secret.encode(), _signed(stamp, body)).hex()
        return {"X-Slack-Signature": _PREFIX + digest, "X-Slack-Request-Timestamp": stamp}


def _parse_form(body: bytes) -> Delivery:
    form = parse_form(body)
    if "payload" in form:  # interactivity: the form wraps one JSON document
        payload = parse_json_object(form["payload"].encode())
        return Delivery(
            _optional_id(payload.get("trigger_id"), "trigger_id"),
            _text(payload.get("type")),
            payload,
        )
    return Delivery(
        _optional_id(form.get("trigger_id"), "trigger_id"), form.get("command", ""), form
    )


def _optional_id(value: Any, where: str) -> str | None:
    return None if value is None else validate_webhook_id(value, where=where)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidPayload("The event type must be a string.")
    return value


SCHEME = SlackScheme
