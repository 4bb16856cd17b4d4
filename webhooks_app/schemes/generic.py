"""The generic scheme: ``X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>``.

The body names the workflow to run: ``{"workflow_name": ..., "inputs": {...}, "webhook_id": ...}``,
and may carry an ``order_key`` (events with the same key run one at a time, in order).
"""

from __future__ import annotations

from typing import ClassVar

from webhooks_app.exceptions import InvalidPayload
from webhooks_app.schemes.base import (
    Delivery,
    HmacHeaderScheme,
    InboundRequest,
    parse_json_object,
    validate_webhook_id,
)


class GenericScheme(HmacHeaderScheme):
    signature_header = "X-Webhook-Signature"
    prefix = "sha256="
    prefix_optional = True
    missing_detail = "Send the X-Webhook-Signature header: sha256=<hex HMAC-SHA256>."
    id_header = "X-Webhook-ID"
    stored_headers: ClassVar[frozenset[str]] = frozenset({id_header.lower()})
    recipe: ClassVar[str] = (
        "Your sender POSTs JSON to {url}, signed with this source's secret: X-Webhook-Signature:"
        " sha256=<hex HMAC-SHA256 of the raw body>; the body names the workflow"
        " (workflow_name, inputs)."
    )
    secret_from_provider: ClassVar[bool] = False

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
        elif (header_id := request.header(self.id_header)) is not None:
            webhook_id = validate_webhook_id(header_id, where=self.id_header)
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


SCHEME = GenericScheme
