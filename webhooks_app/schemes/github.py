"""GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``.

Provider quirks and security subtleties:

* Only ``X-Hub-Signature-256`` is accepted. The legacy ``X-Hub-Signature`` (HMAC-SHA1) is sent
  alongside it "for compatibility"; a request carrying only the SHA-1 one is answered
  ``missing_signature``, so nobody can fall back to the weaker MAC. Both headers are signature
  headers: neither is ever stored or logged.
* Nothing but the body is signed: no timestamp, and neither ``X-GitHub-Delivery`` nor
  ``X-GitHub-Event``. The body's SHA-256 is therefore a second idempotency key
  (:meth:`Scheme.content_key`, contract §5): a captured delivery re-sent under a new delivery
  id, a new event name, or both is a duplicate of the first, and never runs again or under
  another event's route. Should GitHub send identical bytes as two deliveries (one event to a
  repository hook and an organisation hook on the same source), they are one event too: the
  first to arrive wins. Once cleanup has deleted an event (``RETENTION_DAYS``), its body is
  forgotten and a capture would run again.
* GitHub sends one signature; rotation works by configuring the old and the new secret.
* Both content types GitHub offers are accepted: ``application/json`` and
  ``application/x-www-form-urlencoded`` (the default for repository webhooks), where the JSON
  is the ``payload`` form field. Either way the MAC covers the raw body as received.

The event type is ``X-GitHub-Event`` (``push``, ``pull_request``…; ``ping`` is an ordinary
event, ignored unless routed); the delivery id is ``X-GitHub-Delivery`` (a GUID, unchanged on a
manual redelivery). Both are required.
"""

from __future__ import annotations

from typing import Any, ClassVar

from webhooks_app.exceptions import InvalidPayload
from webhooks_app.schemes.base import (
    Delivery,
    HmacHeaderScheme,
    InboundRequest,
    parse_form,
    parse_json_object,
    validate_webhook_id,
)

LEGACY_SIGNATURE_HEADER = "x-hub-signature"
EVENT_HEADER = "x-github-event"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


class GitHubScheme(HmacHeaderScheme):
    """GitHub repository, organisation and App webhooks."""

    signature_header = "X-Hub-Signature-256"
    prefix = "sha256="
    missing_detail = (
        "Send X-Hub-Signature-256 (set a secret on the GitHub webhook); "
        "the SHA-1 X-Hub-Signature alone is not accepted."
    )
    id_header = "X-GitHub-Delivery"
    media_types: ClassVar[frozenset[str]] = frozenset({"application/json", FORM_MEDIA_TYPE})
    #: Besides ``signature_header``: the SHA-1 one, never stored though never accepted.
    signature_headers: ClassVar[frozenset[str]] = frozenset({LEGACY_SIGNATURE_HEADER})
    recipe: ClassVar[str] = (
        "Repository or organisation → Settings → Webhooks → Add webhook: Payload URL {url},"
        " content type JSON, Secret: this source's secret."
    )
    secret_from_provider: ClassVar[bool] = False
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {
            EVENT_HEADER,
            id_header.lower(),
            "x-github-hook-id",
            "x-github-hook-installation-target-type",
            "x-github-hook-installation-target-id",
            "x-github-enterprise-host",
            "x-github-enterprise-version",
        }
    )

    def parse(self, request: InboundRequest) -> Delivery:
        payload = _payload(request)
        delivery = request.header(self.id_header)
        if delivery is None:
            raise InvalidPayload("The X-GitHub-Delivery header is required.")
        webhook_id = validate_webhook_id(delivery, where=self.id_header)
        event = request.header(EVENT_HEADER)
        if event is None:
            raise InvalidPayload("The X-GitHub-Event header is required.")
        # Same rule as an id (1-255 printable characters): it is stored and shown in the admin.
        event_type = validate_webhook_id(event, where="X-GitHub-Event")
        return Delivery(webhook_id=webhook_id, event_type=event_type, payload=payload)


def _payload(request: InboundRequest) -> dict[str, Any]:
    media_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        return parse_json_object(request.body)
    form = parse_form(request.body)
    if "payload" not in form:
        raise InvalidPayload("The form body has no payload field.")
    return parse_json_object(form["payload"].encode())


SCHEME = GitHubScheme
