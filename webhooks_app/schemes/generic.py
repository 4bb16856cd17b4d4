"""The generic scheme: ``X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.

The body names the workflow to run: ``{"workflow_name": ..., "inputs": {...}, "webhook_id": ...}``,
and may carry an ``order_key`` (events with the same key run one at a time, in order).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from webhooks_app.exceptions import InvalidPayload, MissingSignature
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    hmac_sha256,
    parse_json_object,
    validate_webhook_id,
    verify_hex_sha256,
)

SIGNATURE_HEADER = "x-webhook-signature"
ID_HEADER = "x-webhook-id"
_PREFIX = "sha256="


class GenericScheme(Scheme):
    signature_headers: ClassVar[frozenset[str]] = frozenset({SIGNATURE_HEADER})
    stored_headers: ClassVar[frozenset[str]] = frozenset({ID_HEADER})

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature(
                f"Send the X-Webhook-Signature header: {_PREFIX}<hex HMAC-SHA256>."
            )
        verify_hex_sha256(header, request.body, secrets, prefix=_PREFIX, prefix_optional=True)

    def parse(self, request: InboundRequest) -> Delivery:
        body = parse_json_object(request.body)
        workflow_name = body.get("workflow_name")
        if not isinstance(workflow_name, str) or not workflow_name:
            raise InvalidPayload("workflow_name must be a non-empty string.")
        inputs = body.get("inputs", {})
        if not isinstance(inputs, dict):
            raise InvalidPayload("inputs must be a JSON object.")
        webhook_id = body.get("webhook_id")
        if webhook_id is not None:
            webhook_id = validate_webhook_id(webhook_id)
        elif (header_id := request.header(ID_HEADER)) is not None:
            webhook_id = validate_webhook_id(header_id, where="X-Webhook-ID")
        order_key = body.get("order_key")
        if order_key is not None and (not isinstance(order_key, str) or not order_key):
            raise InvalidPayload("order_key must be a non-empty string (or absent).")
        return Delivery(
            webhook_id=webhook_id,
            event_type=workflow_name,
            payload=inputs,
            workflow_name=workflow_name,
            order_key=order_key,
        )

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        headers = {"X-Webhook-Signature": _PREFIX + hmac_sha256(secret.encode(), body).hex()}
        if webhook_id is not None:
            headers["X-Webhook-ID"] = webhook_id
        return headers


SCHEME = GenericScheme
