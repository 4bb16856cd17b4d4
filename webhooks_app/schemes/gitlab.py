"""GitLab: ``X-Gitlab-Token`` equals the webhook's secret token, sent in plain text.

A shared token, not a MAC (see :class:`SharedTokenScheme`; GitLab's signed deliveries are
behind a feature flag and follow Standard Webhooks: point such a hook at a ``standard`` source
instead). Delivery id: ``X-Gitlab-Event-UUID``, else ``Idempotency-Key`` (newer GitLab
versions); event type: ``X-Gitlab-Event`` (``Push Hook``, ``Merge Request Hook``…).
"""

from __future__ import annotations

from typing import ClassVar

from webhooks_app.exceptions import InvalidPayload
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    SharedTokenScheme,
    parse_json_object,
    validate_webhook_id,
)

EVENT_HEADER = "x-gitlab-event"
ID_HEADERS = ("x-gitlab-event-uuid", "idempotency-key")


class GitLabScheme(SharedTokenScheme):
    token_header: ClassVar[str] = "x-gitlab-token"  # noqa: S105 - a header name
    signature_headers: ClassVar[frozenset[str]] = frozenset({token_header})
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {EVENT_HEADER, *ID_HEADERS, "x-gitlab-webhook-uuid", "x-gitlab-instance"}
    )
    missing_detail: ClassVar[str] = (
        "Send X-Gitlab-Token (set a secret token on the GitLab webhook)."
    )

    def parse(self, request: InboundRequest) -> Delivery:
        payload = parse_json_object(request.body)
        delivery = next((v for h in ID_HEADERS if (v := request.header(h)) is not None), None)
        if delivery is None:
            raise InvalidPayload("The X-Gitlab-Event-UUID header is required.")
        event = (request.header(EVENT_HEADER) or "")[:255]
        return Delivery(validate_webhook_id(delivery, where="X-Gitlab-Event-UUID"), event, payload)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        headers = self.token_headers(secret)
        if webhook_id is not None:
            headers["X-Gitlab-Event-UUID"] = webhook_id
        return headers


SCHEME = GitLabScheme
