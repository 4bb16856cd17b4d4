"""Slack: ``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:{ts}:{raw body}")>``.

Security subtleties:

* ``ts`` is ``X-Slack-Request-Timestamp``. It is signed, and must lie within the source's
  tolerance of the clock in *both* directions (the Slack SDK refuses ``abs(now - ts) > 300``):
  a far-future one would keep a captured request replayable for as long as it is "not too old".
* The MAC covers the raw bytes, whatever they are: JSON (Events API) or form-encoded (slash
  commands; interactivity, whose form wraps one JSON document in its ``payload`` field). Both
  are parsed strictly (no repeated key or field, UTF-8 only), so a signed body means one thing.
* Which of the two a body is must not hang on ``Content-Type``, which is not signed. Read as a
  form, a captured JSON body containing ``=`` loses its ``event_id`` (a new event, under the
  ``"*"`` route); one whose text a user typed as ``x=1&command=/deploy&trigger_id=T`` becomes
  that slash command. Slack percent-encodes ``{`` in its forms and every JSON object starts with
  it, so a form body that starts with ``{`` is refused (``invalid_payload``): one reading each.
* Slack still puts its deprecated verification ``token`` in every body. It is a credential (an
  app that still checks it accepts any request carrying it) and the signing secret makes it
  useless here, so it is dropped from the stored payload, which the admin and workflows see.

Protocol messages are answered 200 and never stored, once the signature verified like any
other request (an unsigned one is 401):

* ``url_verification`` (Slack checking an Events API Request URL): ``{"challenge": …}``.
* ``ssl_check=1`` (Slack checking a slash command URL's certificate): ``{}``. Slack's Bolt does
  not verify this one; if Slack sends it unsigned it gets a 401, which stores nothing.

Event type (for ``ROUTES``): for ``event_callback`` the inner event's ``type`` (``app_mention``,
``message``…); for a slash command the command (``/deploy``); for interactivity the payload's
``type`` (``block_actions``, ``view_submission``, ``shortcut``…); otherwise the body's ``type``
(``app_rate_limited``…).

Delivery id: the Events API's ``event_id``, kept by Slack on its retries (which add
``X-Slack-Retry-Num``, stored with the event). Slash commands and interactions have no event id
but carry a ``trigger_id`` unique to the user's action: it is the id, so a captured request
replayed inside the tolerance window is a duplicate, not a second run. Without one
(``view_closed``, ``app_rate_limited``…) the server assigns the id, and the body's digest
(:meth:`Scheme.content_key`) still makes such a replay a duplicate. Changing an unsigned header
(``X-Slack-Retry-Num``…) changes neither key.

Workflows run after the answer, so they reply to the user through the payload's
``response_url`` or the Web API; requests that need their answer in the HTTP response
(``block_suggestion`` option lists, ``view_submission`` validation errors) cannot be served here.
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

FORM = "application/x-www-form-urlencoded"
#: What ``json.loads`` skips before a document: a body starting ``{`` after it is JSON.
_JSON_WHITESPACE = b" \t\n\r"
#: The deprecated verification token: never stored (see the module docstring).
_TOKEN_FIELD = "token"  # noqa: S105 - a field name, not a secret


class SlackScheme(HmacHeaderScheme):
    """Slack apps: Events API, slash commands and interactivity, on one Request URL."""

    signature_header = "X-Slack-Signature"
    prefix = "v0="
    missing_detail = "Send X-Slack-Signature (v0=<hex>) and X-Slack-Request-Timestamp."
    timestamp_header = "X-Slack-Request-Timestamp"
    # No id_header: the id is the body's event_id (or trigger_id).
    media_types: ClassVar[frozenset[str]] = frozenset({"application/json", FORM})
    stored_headers: ClassVar[frozenset[str]] = frozenset(
        {timestamp_header.lower(), "x-slack-retry-num", "x-slack-retry-reason"}
    )
    recipe: ClassVar[str] = (
        "App settings → Basic Information → Signing Secret: this source's secret; Event"
        " Subscriptions → Request URL {url} (its url_verification challenge is answered"
        " automatically). Slash commands and interactivity can use the same URL."
    )
    secret_from_provider: ClassVar[bool] = True

    def signed_content(self, body: bytes, timestamp: str) -> bytes:
        """Slack's base string, ``v0:{timestamp}:{raw body}``."""
        return b"v0:" + timestamp.encode() + b":" + body

    def parse(self, request: InboundRequest) -> Delivery:
        media_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
        if media_type == FORM:
            return _parse_form(request.body)
        body = parse_json_object(request.body)
        kind = _text(body.get("type"))
        if kind == "url_verification":
            challenge = body.get("challenge")
            if not isinstance(challenge, str):
                raise InvalidPayload("url_verification needs a challenge string.")
            return Delivery(None, kind, {}, reply={"challenge": challenge})
        inner = body.get("event")
        if kind == "event_callback" and isinstance(inner, dict):
            kind = _text(inner.get("type"))
        return Delivery(_optional_id(body, "event_id"), kind, _without_token(body))


def _parse_form(body: bytes) -> Delivery:
    if body.lstrip(_JSON_WHITESPACE).startswith(b"{"):
        raise InvalidPayload("The body is JSON: Slack sends JSON as application/json.")
    form = parse_form(body)
    if form.get("ssl_check") == "1":
        return Delivery(None, "ssl_check", {}, reply={})
    if "payload" in form:  # interactivity: the form wraps one JSON document
        payload = parse_json_object(form["payload"].encode())
        return Delivery(
            _optional_id(payload, "trigger_id"), _text(payload.get("type")), _without_token(payload)
        )
    return Delivery(_optional_id(form, "trigger_id"), form.get("command", ""), _without_token(form))


def _optional_id(container: dict[str, Any], key: str) -> str | None:
    value = container.get(key)
    return None if value is None else validate_webhook_id(value, where=key)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidPayload("The event type must be a string.")
    return value


def _without_token(payload: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in payload.items() if key != _TOKEN_FIELD}


SCHEME = SlackScheme
