"""GitLab: ``X-Gitlab-Token`` equals the webhook's secret token, sent in plain text; or, where
the hook has a signing token, a Standard Webhooks signature.

**Secret token** (every GitLab version): a shared token, not a MAC (see
:class:`SharedTokenScheme`). It travels in clear in every request, so whoever captured one
delivery holds the credential and can send anything (any body, id or event) until the token is
rotated: no receiver can prevent that; HTTPS and rotating a token that may have leaked can.
What is stopped here is the same delivery arriving twice. The id is ``Idempotency-Key`` ("unique
ID that remains consistent across webhook retries", GitLab 17.4+), else ``X-Gitlab-Event-UUID``
for older GitLab (shared by "recursive" hooks, hence only a fall-back); without either, 400.
Neither is covered by anything, so the body's SHA-256 is a second key (contract §4): the same
bytes under a new id or a new ``X-Gitlab-Event`` are a duplicate of the first.

**Signing token** (newer GitLab, behind the ``webhook_signing_token`` feature flag, gitlab MRs
230944/231325): GitLab signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 and
sends ``webhook-signature: v1,<base64>``: Standard Webhooks, verified here by
:class:`~webhooks_app.schemes.standard.StandardWebhooksScheme` (timestamp within the source's
tolerance, both ways; the ``svix-*`` spelling of the three headers is accepted too). GitLab hands
such tokens out as ``whsec_<base64>``, so a configured secret with that prefix is a signing token
and any other is a secret token. As soon as one signing token is configured, the signature is
*required* and ``X-Gitlab-Token`` is not consulted: accepting either would leave the body as
forgeable as before. The id is then the signed one, read from the header set that verified
(``webhook-id``, which GitLab sets to the ``Idempotency-Key``, or ``svix-id``); the unsigned
``Idempotency-Key`` and ``X-Gitlab-Event-UUID`` are ignored. Being signed, the id is the only key
(no content key, as for Standard Webhooks): a replay inside the tolerance carries the same id
whatever else it changes, and is a duplicate; after it, it is refused.

A request is read as signed when it carries a Standard Webhooks signature (with a signing token
configured, one that did not verify was already refused). In token mode nothing checks such a
signature, so its id is as unsigned as the others: that helps only someone holding the token,
who can send anything anyway.

Event type: ``X-Gitlab-Event`` (``Push Hook``, ``Merge Request Hook``…), unsigned in both modes:
it routes the first delivery of an id (or of a body, in token mode), and a replay that changes
it is still that delivery's duplicate, never a run under another workflow.
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
    StandardWebhooksScheme,
    carries_signature,
    signed_message_id,
)

TOKEN_HEADER = "x-gitlab-token"  # noqa: S105 - a header name, not a secret
EVENT_HEADER = "x-gitlab-event"
#: Where a token-mode delivery id is read from, best first (a signed one has its own).
TOKEN_ID_HEADERS = ("idempotency-key", "x-gitlab-event-uuid")

_STANDARD = StandardWebhooksScheme()


class GitLabScheme(SharedTokenScheme):
    token_header: ClassVar[str] = TOKEN_HEADER
    signature_headers: ClassVar[frozenset[str]] = frozenset(
        {TOKEN_HEADER, *StandardWebhooksScheme.signature_headers}
    )
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {
            EVENT_HEADER,
            *TOKEN_ID_HEADERS,
            *StandardWebhooksScheme.stored_headers,
            "x-gitlab-webhook-uuid",
            "x-gitlab-instance",
        }
    )
    missing_detail: ClassVar[str] = (
        "Send X-Gitlab-Token (set a secret token on the GitLab webhook)."
    )
    recipe: ClassVar[str] = (
        "Project → Settings → Webhooks: URL {url}, Secret token: this source's secret. If your"
        " GitLab offers a signing token (whsec_…), add it here too: the signature then becomes"
        " required."
    )
    secret_from_provider: ClassVar[bool] = False

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
        webhook_id = (
            signed_message_id(request) if carries_signature(request) else _token_id(request)
        )
        event_type = request.header(EVENT_HEADER) or ""
        return Delivery(webhook_id=webhook_id, event_type=event_type, payload=payload)

    def content_key(self, request: InboundRequest) -> str | None:
        """Signed: none, the signed id is the key (two messages may carry one body). Token
        mode: the body's digest, since no id there is covered by anything."""
        return None if carries_signature(request) else super().content_key(request)

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


def _token_id(request: InboundRequest) -> str:
    for header in TOKEN_ID_HEADERS:
        if (value := request.header(header)) is not None:
            return validate_webhook_id(value, where=header)
    raise InvalidPayload("The Idempotency-Key or X-Gitlab-Event-UUID header is required.")


SCHEME = GitLabScheme
