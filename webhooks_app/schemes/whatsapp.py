"""Meta webhooks (WhatsApp Cloud API; Graph API objects): GitHub's signature with the App Secret.

``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``. Meta signs the body
*as sent*, with non-ASCII characters escaped (``\\u00e9``): only the received bytes verify,
never a re-serialisation. The legacy ``X-Hub-Signature`` (SHA-1) is not accepted on its own,
and neither header is stored. Nothing but the body is signed (no timestamp): replays are
stopped by the delivery id below and by the body's digest (the content key), for as long as
the event is stored.

Subscribing: Meta first sends ``GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…``.
The challenge is echoed (``text/plain``) only when the token equals the source's
``VERIFY_TOKEN`` (hashed, then compared in constant time, so neither its content nor its length
leaks) and the challenge looks like what Meta sends (an integer; ASCII letters and digits are
allowed): an echo endpoint must not reflect arbitrary text. Anything else is 403; without a
``VERIFY_TOKEN`` the answer is 503 ``not_configured`` (an empty token never matches).

One delivery is one event, though Meta batches (``entry[].changes[]``, several messages or
statuses per change): the workflow sees the whole payload and should walk all of it.

* Event type: the first change's ``field`` (``messages``, ``message_template_status_update``,
  ``account_update``…); ``""`` when there is none (Messenger's ``entry[].messaging[]`` shape),
  which goes to the ``"*"`` route.
* Delivery id: Meta sends none, so it is derived from the payload's own ids, over every entry
  and change: each message's ``id`` (``wamid…``) and each status's ``id:status`` (one message
  goes through sent, delivered and read, each a notification of its own). One item: that id.
  Several: ``batch:`` and the SHA-256 of the sorted ids, so two batches are one delivery only
  when they carry the same items. Keyed on the first item alone, a later batch that starts with
  a stored message but carries more would be a duplicate, and its other items would never run
  (Meta promises neither how it batches nor that a retry is batched as before). The price: an
  item that arrives in two different batches runs in both events, so workflows dedupe on the
  message id, as Meta's at-least-once delivery asks anyway. No item at all: ``None`` (the
  server assigns an id; the body digest still makes a replay a duplicate).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, ClassVar

from webhooks_app.exceptions import HandshakeRefused, InvalidPayload, NotConfigured
from webhooks_app.schemes.base import (
    Delivery,
    HmacHeaderScheme,
    InboundRequest,
    parse_json_object,
    secret_token_matches,
    validate_webhook_id,
)

LEGACY_SIGNATURE_HEADER = "x-hub-signature"
MAX_CHALLENGE_LENGTH = 255


class WhatsAppScheme(HmacHeaderScheme):
    """WhatsApp Cloud API webhooks (any Meta app subscription verifies the same way)."""

    signature_header = "X-Hub-Signature-256"
    prefix = "sha256="
    missing_detail = "Send X-Hub-Signature-256 (sha256=<hex HMAC-SHA256 with the App Secret>)."
    # No id_header: a delivery's id comes from the message ids in the body.
    signature_headers: ClassVar[frozenset[str]] = frozenset({LEGACY_SIGNATURE_HEADER})
    recipe: ClassVar[str] = (
        "Meta App → WhatsApp → Configuration → Callback URL {url}, Verify token: the source's"
        " VERIFY_TOKEN. Meta signs with the App Secret: that is this source's secret."
    )
    secret_from_provider: ClassVar[bool] = True

    def handshake(self, request: InboundRequest, verify_token: str) -> str:
        if not verify_token:
            # An empty token is no token: it must not match an empty (or absent) query value.
            raise NotConfigured("Set the source's VERIFY_TOKEN (the token typed in Meta's app).")
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        token_ok = secret_token_matches(token, [verify_token])
        challenge_ok = (
            0 < len(challenge) <= MAX_CHALLENGE_LENGTH
            and challenge.isascii()
            and challenge.isalnum()
        )
        if request.query.get("hub.mode") != "subscribe" or not token_ok or not challenge_ok:
            raise HandshakeRefused()
        return challenge

    def parse(self, request: InboundRequest) -> Delivery:
        body = parse_json_object(request.body)
        change = _first(_first(body.get("entry")).get("changes"))
        value = change.get("value")
        value = value if isinstance(value, dict) else {}
        field = change.get("field", "")
        if not isinstance(field, str):
            raise InvalidPayload("changes[].field must be a string.")
        return Delivery(_delivery_id(body), field, body)


def _first(items: Any) -> dict[str, Any]:
    """``items[0]`` if ``items`` is a list that starts with an object, else ``{}``."""
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _objects(items: Any) -> list[dict[str, Any]]:
    """The objects of ``items`` if it is a list, else none."""
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _item_ids(body: dict[str, Any]) -> Iterator[str]:
    """Every message id and ``status id:status`` of every change of every entry."""
    for entry in _objects(body.get("entry")):
        for change in _objects(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            for message in _objects(value.get("messages")):
                if "id" in message:
                    yield validate_webhook_id(message["id"], where="messages[].id")
            for status in _objects(value.get("statuses")):
                if "id" in status and isinstance(status.get("status"), str):
                    status_id = validate_webhook_id(status["id"], where="statuses[].id")
                    yield validate_webhook_id(
                        f"{status_id}:{status['status']}", where="statuses[].status"
                    )


def _delivery_id(body: dict[str, Any]) -> str | None:
    ids = sorted(set(_item_ids(body)))
    if len(ids) <= 1:
        return ids[0] if ids else None
    # Printable ids hold no newline: the joined text names one set of ids.
    return "batch:" + hashlib.sha256("\n".join(ids).encode()).hexdigest()


SCHEME = WhatsAppScheme
