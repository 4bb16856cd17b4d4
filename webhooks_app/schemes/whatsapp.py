"""Meta webhooks (WhatsApp Cloud API, Messenger, Instagram): GitHub's signature with the App Secret.

``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``. Meta signs the body
*as sent*, with non-ASCII characters escaped (``\\u00e9``): only the received bytes verify.

Subscribing: Meta first sends ``GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…``;
the challenge is echoed (``text/plain``) only when the token equals the source's
``VERIFY_TOKEN`` (compared in constant time), else 403.

Meta batches changes (``entry[].changes[]``) and sends no delivery-id header. One delivery is
one event and the workflow sees the whole payload; the event type is the first change's
``field`` (``messages``…), and the delivery id is derived from the payload's own ids: the first
message's ``id`` (``wamid…``), else the first status's ``id:status`` (one message goes through
sent/delivered/read), else none (the server assigns one; nothing is deduplicated).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any, ClassVar

from webhooks_app.exceptions import HandshakeRefused, InvalidPayload, MissingSignature
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    hmac_sha256,
    parse_json_object,
    validate_webhook_id,
    verify_hex_sha256,
)

SIGNATURE_HEADER = "x-hub-signature-256"
LEGACY_SIGNATURE_HEADER = "x-hub-signature"
_PREFIX = "sha256="
MAX_CHALLENGE_LENGTH = 255


class WhatsAppScheme(Scheme):
    signature_headers: ClassVar[frozenset[str]] = frozenset(
        {SIGNATURE_HEADER, LEGACY_SIGNATURE_HEADER}
    )

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature(
                "Send X-Hub-Signature-256 (sha256=<hex HMAC-SHA256 with the App Secret>)."
            )
        verify_hex_sha256(header, request.body, secrets, prefix=_PREFIX)

    def handshake(self, request: InboundRequest, verify_token: str) -> str:
        token = request.query.get("hub.verify_token", "")
        challenge = request.query.get("hub.challenge", "")
        token_ok = hmac.compare_digest(token.encode(), verify_token.encode())
        # The challenge is echoed: only a short printable one, never markup-shaped input.
        challenge_ok = 0 < len(challenge) <= MAX_CHALLENGE_LENGTH and challenge.isalnum()
        if request.query.get("hub.mode") != "subscribe" or not token_ok or not challenge_ok:
            raise HandshakeRefused()
        return challenge

    def parse(self, request: InboundRequest) -> Delivery:
        body = parse_json_object(request.body)
        change = _first(_first(body.get("entry")), "changes")
        value = change.get("value")
        value = value if isinstance(value, dict) else {}
        field = change.get("field", "")
        if not isinstance(field, str):
            raise InvalidPayload("changes[].field must be a string.")
        return Delivery(_delivery_id(value), field, body)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        return {"X-Hub-Signature-256": _PREFIX + hmac_sha256(secret.encode(), body).hex()}


def _first(container: Any, key: str | None = None) -> dict[str, Any]:
    """``container[key][0]`` (or ``container[0]``) if it is an object, else ``{}``."""
    items = container.get(key) if key is not None and isinstance(container, dict) else container
    return items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}


def _delivery_id(value: dict[str, Any]) -> str | None:
    message = _first(value, "messages")
    if "id" in message:
        return validate_webhook_id(message["id"], where="messages[].id")
    status = _first(value, "statuses")
    if "id" in status and isinstance(status.get("status"), str):
        return validate_webhook_id(f"{status['id']}:{status['status']}", where="statuses[].id")
    return None


SCHEME = WhatsAppScheme
