"""GitLab: ``X-Gitlab-Token`` equals the webhook's secret token, sent in plain text; or, where
the hook has a signing token, a Standard Webhooks signature.

**Secret token** (every GitLab version): a shared token, not a MAC (see
:class:`SharedTokenScheme`). It proves the sender knows the secret, not that the body is
intact, and a captured request stays valid forever: HTTPS protects the body, and the
delivery-id dedupe is the only replay protection.

**Signing token** (newer GitLab, behind the ``webhook_signing_token`` feature flag, gitlab MRs
230944/231325): GitLab signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 and
sends ``webhook-signature: v1,<base64>``: Standard Webhooks, verified here by
:class:`~webhooks_app.schemes.standard.StandardWebhooksScheme` (timestamp within the source's
tolerance, both ways). GitLab hands such tokens out as ``whsec_<base64>``, so a configured secret
with that prefix is a signing token and any other is a secret token. As soon as one signing
token is configured, the signature is *required* and ``X-Gitlab-Token`` is not consulted:
accepting either would leave the body as forgeable as before.

Delivery id: ``webhook-id`` (signed when signing is on; GitLab sets it to the
``Idempotency-Key``), else ``Idempotency-Key`` ("unique ID that remains consistent across
webhook retries", GitLab 17.4+), else ``X-Gitlab-Event-UUID`` for older GitLab (shared by
"recursive" hooks, hence only a fall-back); without any of them, 400. Event type:
``X-Gitlab-Event`` (``Push Hook``, ``Merge Request Hook``…).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from webhooks_app.exceptions import InvalidPayload
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    SharedTokenScheme,
    parse_json_object,
    validate_webhook_id,
)
from webhooks_app.schemes.standard import (
    SECRET_PREFIX,
    WEBHOOK_HEADERS,
    StandardWebhooksScheme,
)

TOKEN_HEADER = "x-gitlab-token"  # noqa: S105 - a header name, not a secret
EVENT_HEADER = "x-gitlab-event"
#: Where the delivery id is read from, best first.
ID_HEADERS = (WEBHOOK_HEADERS.id, "idempotency-key", "x-gitlab-event-uuid")

_STANDARD = StandardWebhooksScheme()


class GitLabScheme(SharedTokenScheme):
    token_header: ClassVar[str] = TOKEN_HEADER
    signature_headers: ClassVar[frozenset[str]] = frozenset(
        {TOKEN_HEADER, WEBHOOK_HEADERS.signature}
    )
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {
            EVENT_HEADER,
            *ID_HEADERS,
            WEBHOOK_HEADERS.timestamp,
            "x-gitlab-webhook-uuid",
            "x-gitlab-instance",
        }
    )
    missing_detail: ClassVar[str] = (
        "Send X-Gitlab-Token (set a secret token on the GitLab webhook)."
    )

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        signing = [secret for secret in secrets if secret.startswith(SECRET_PREFIX)]
        if signing:
            _STANDARD.verify(request, signing, now=now, tolerance=tolerance)
        else:
            super().verify(request, secrets, now=now, tolerance=tolerance)

    def parse(self, request: InboundRequest) -> Delivery:
        payload = parse_json_object(request.body)
        for header in ID_HEADERS:
            if (value := request.header(header)) is not None:
                webhook_id = validate_webhook_id(value, where=header)
                break
        else:
            raise InvalidPayload("The Idempotency-Key or X-Gitlab-Event-UUID header is required.")
        event_type = request.header(EVENT_HEADER) or ""
        return Delivery(webhook_id=webhook_id, event_type=event_type, payload=payload)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """What GitLab 17.4+ sends: a signature for a ``whsec_`` secret, else the token."""
        if secret.startswith(SECRET_PREFIX):
            headers = _STANDARD.sign(body, secret, webhook_id=webhook_id, timestamp=timestamp)
        else:
            headers = self.token_headers(secret)
        if webhook_id is not None:
            headers["Idempotency-Key"] = webhook_id
            headers["X-Gitlab-Event-UUID"] = webhook_id
        return headers


SCHEME = GitLabScheme
