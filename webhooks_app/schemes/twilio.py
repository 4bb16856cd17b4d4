"""Twilio: ``X-Twilio-Signature: <base64 HMAC-SHA1(auth token, URL + sorted params)>``.

**What is signed.** The full URL Twilio requested (scheme, host, path and query string exactly
as sent), followed, for ``application/x-www-form-urlencoded`` bodies, by every POST parameter's
name and value in sorted order; a repeated parameter's values are de-duplicated and sorted
(twilio-python's rule; Twilio repeats some on purpose, so they are not refused). For JSON
bodies Twilio appends ``bodySHA256=<hex sha256(body)>`` to the URL and signs the URL alone, so
the body hash is checked against that query value as well. The body is never signed as bytes,
so the form is parsed (leniently) before verification; :meth:`TwilioScheme.parse` then
applies the strict rules.

**The URL must be the one Twilio used** (it is ``request.url``: the source's ``PUBLIC_URL``
if set, else Django's ``build_absolute_uri()``). Behind a proxy or load balancer, set
``PUBLIC_URL`` on the source to the URL entered in the Twilio console, or make Django see the
original host and scheme (``USE_X_FORWARDED_HOST = True`` and ``SECURE_PROXY_SSL_HEADER``).
``PUBLIC_URL`` gives scheme, host and path; the query string the request arrived with is
appended (it carries JSON bodies' per-request ``bodySHA256``), unless ``PUBLIC_URL`` has a
query of its own, which is then used exactly as configured.
Like Twilio's own libraries, the URL is also tried without its port and with the scheme's
default port, because Twilio is not consistent about including ``:443``/``:80``.

**Secrets.** The account's *primary* Auth Token signs; a secondary token signs nothing until
it is promoted, so list both in ``SECRETS`` while rotating. There is no timestamp: the
delivery-id dedupe is the only replay protection.

**Delivery id and event type** (Twilio documents no id header), from the first that applies:

* a JSON CloudEvent, or an array of them (Event Streams): the event's ``id`` and ``type``;
* an ``EventType`` field (Conversations, TaskRouter, Sync…): that event type; the id is the
  ``I-Twilio-Idempotency-Token`` header, else the sid-based id below plus ``:<EventType>``;
* a transcription, recording, conference, message or call sid (in that order), with its
  status: id ``<sid>[:<status>][:<SequenceNumber>]``, event type ``<kind>[.<status>]``, e.g.
  an incoming message is ``SM…``/``message``, its status callbacks
  ``SM…:delivered``/``message.delivered``, a call status callback ``CA…:completed:3``/
  ``call.completed``, a conference one ``CF…:participant-join:2``/``conference.participant-join``.

A status is part of the id because one message or call goes through several statuses, each a
callback of its own; a ``SequenceNumber`` (voice and conference callbacks) is appended too.
Recordings and transcriptions are matched before calls, because their callbacks also carry the
call's ``CallSid``. Anything else is identified by the ``I-Twilio-Idempotency-Token`` header
when present (absent from Twilio's reference docs, but what receivers use to recognise
Twilio's retries), else not deduplicated, and goes to the ``"*"`` route.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    Scheme,
    any_digest_matches,
    decode_base64_digest,
    form_pairs,
    parse_json,
    validate_webhook_id,
)

SIGNATURE_HEADER = "x-twilio-signature"
IDEMPOTENCY_HEADER = "i-twilio-idempotency-token"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
BODY_HASH_PARAM = "bodySHA256"
SHA1_DIGEST_SIZE = 20  # HMAC-SHA1 is Twilio's choice, not ours
DEFAULT_PORTS = {"https": "443", "http": "80"}

#: (sid field, status field, event kind): the most specific first.
KINDS = (
    ("TranscriptionSid", "TranscriptionStatus", "transcription"),
    ("RecordingSid", "RecordingStatus", "recording"),
    ("ConferenceSid", "StatusCallbackEvent", "conference"),
    ("MessageSid", "MessageStatus", "message"),
    ("SmsSid", "SmsStatus", "message"),
    ("CallSid", "CallStatus", "call"),
)

Params = Mapping[str, Sequence[str]]


# -- signing ----------------------------------------------------------------------------------
def signed_string(url: str, params: Params) -> str:
    """``url`` + name+value of every parameter, names sorted, each one's values de-duplicated
    and sorted (twilio-python's ``compute_signature``)."""
    return url + "".join(
        name + value for name in sorted(params) for value in sorted(set(params[name]))
    )


def compute_signature(auth_token: str, url: str, params: Params) -> bytes:
    text = signed_string(url, params)
    return hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()


def url_with_body_hash(url: str, body: bytes) -> str:
    """``url`` with ``bodySHA256=<hex sha256(body)>`` appended, as Twilio sends JSON bodies."""
    separator = "&" if urllib.parse.urlsplit(url).query else "?"
    return f"{url}{separator}{BODY_HASH_PARAM}={hashlib.sha256(body).hexdigest()}"


def url_variants(url: str) -> set[str]:
    """``url``, ``url`` without its port, and ``url`` with the scheme's default port if it has
    none: twilio-python's ``remove_port``/``add_port``. Only the authority is rewritten (by
    string slicing, so userinfo, IPv6 literals, path and query stay byte-for-byte)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return {url}
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    host, colon, port = hostport.rpartition(":")
    if not (colon and port.isascii() and port.isdigit()):  # no port; "[::1]" ends in "]"
        host, port = hostport, ""
    base, tail = f"{scheme}://{userinfo}{at}{host}", rest[end:]
    variants = {url, base + tail}
    default = DEFAULT_PORTS.get(scheme.lower())
    if not port and default:
        variants.add(f"{base}:{default}{tail}")
    return variants


# -- request helpers --------------------------------------------------------------------------
def media_type(request: InboundRequest) -> str:
    return (request.header("content-type") or "").split(";", 1)[0].strip().lower()


def _signed_params(body: bytes) -> dict[str, list[str]]:
    """The form as Twilio signed it: UTF-8 text, ``+`` and ``%xx`` decoded, blanks kept.

    Lenient on purpose: a body the strict parser refuses must still be *unauthenticated*
    (401) rather than a 400 that tells an unauthenticated sender how far it got.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature("The form body is not UTF-8, which Twilio always sends.") from None
    params: dict[str, list[str]] = {}
    for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return params


def _query_value(url: str, name: str) -> str | None:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get(name)
    return values[0] if values else None


class TwilioScheme(Scheme):
    media_types: ClassVar[frozenset[str]] = frozenset({FORM, JSON})
    signature_headers: ClassVar[frozenset[str]] = frozenset({SIGNATURE_HEADER})
    stored_headers: ClassVar[frozenset[str]] = frozenset({IDEMPOTENCY_HEADER})
    signs_url: ClassVar[bool] = True

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature("Send X-Twilio-Signature.")
        params: Params = {}
        body_hash_ok = True
        if media_type(request) == FORM:
            params = _signed_params(request.body)
        else:
            # JSON: the body is covered only through the bodySHA256 the signed URL carries.
            sent = (_query_value(request.url, BODY_HASH_PARAM) or "").encode()
            body_hash_ok = hmac.compare_digest(
                sent, hashlib.sha256(request.body).hexdigest().encode()
            )
        provided = decode_base64_digest(header, SHA1_DIGEST_SIZE)
        expected = [
            compute_signature(secret, url, params)
            for url in url_variants(request.url)
            for secret in secrets
        ]
        # Every candidate is compared, whatever failed first: the time taken tells nothing.
        signature_ok = any_digest_matches(provided or b"", expected) and provided is not None
        if not signature_ok:
            raise InvalidSignature()
        if not body_hash_ok:
            raise InvalidSignature("bodySHA256 in the URL does not match the body.")

    def parse(self, request: InboundRequest) -> Delivery:
        payload: Any
        if media_type(request) == FORM:
            params: dict[str, list[str]] = {}
            for name, value in form_pairs(request.body):
                params.setdefault(name, []).append(value)
            # One value stays a string; a repeated field keeps all its values.
            payload = {name: vals[0] if len(vals) == 1 else vals for name, vals in params.items()}
        else:
            payload = parse_json(request.body)
            if (cloud := _cloud_events(payload)) is not None:
                return Delivery(cloud[0], cloud[1], payload)
        fields = payload if isinstance(payload, dict) else {}
        webhook_id, event_type = _from_sids(fields)
        if isinstance(fields.get("EventType"), str):
            event_type = fields["EventType"]
            webhook_id = request.header(IDEMPOTENCY_HEADER) or (
                f"{webhook_id}:{event_type}" if webhook_id else None
            )
        elif webhook_id is None:
            webhook_id = request.header(IDEMPOTENCY_HEADER)
        if webhook_id is not None:
            webhook_id = validate_webhook_id(webhook_id, where="the Twilio delivery id")
        return Delivery(webhook_id, event_type, payload)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
        url: str = "",
        content_type: str = FORM,
    ) -> dict[str, str]:
        """The header Twilio would send for ``body`` POSTed to ``url`` (required: it is signed).

        For a JSON ``content_type``, ``url`` must already carry the body's ``bodySHA256``
        (:func:`url_with_body_hash`), exactly as the request will be sent.
        """
        if not url:
            raise ValueError("Twilio signs the URL: pass url=.")
        if content_type.split(";", 1)[0].strip().lower() == FORM:
            params: Params = _signed_params(body)
        elif _query_value(url, BODY_HASH_PARAM) != hashlib.sha256(body).hexdigest():
            raise ValueError("For a JSON body, url must carry its bodySHA256 (url_with_body_hash).")
        else:
            params = {}
        signature = compute_signature(secret, url, params)
        return {"X-Twilio-Signature": base64.b64encode(signature).decode("ascii")}


def _from_sids(fields: Mapping[str, Any]) -> tuple[str | None, str]:
    """Delivery id and event type from the first ``KINDS`` sid present (module docstring)."""
    for sid_field, status_field, kind in KINDS:
        sid = fields.get(sid_field)
        if not isinstance(sid, str) or not sid:
            continue
        status = fields.get(status_field)
        sequence = fields.get("SequenceNumber")
        parts = [sid]
        if isinstance(status, str) and status:
            parts.append(status)
        if isinstance(sequence, str) and sequence:
            parts.append(sequence)
        event_type = f"{kind}.{status}" if isinstance(status, str) and status else kind
        return ":".join(parts), event_type
    return None, ""


def _cloud_events(payload: Any) -> tuple[str, str] | None:
    """(id, type) of an Event Streams delivery: one CloudEvent, or a batch (a JSON array).

    A batch is identified by its sorted event ids, hashed (a redelivered batch holds the same
    events); its type is the events' common type, else ``""`` (the ``"*"`` route).
    """
    events = payload if isinstance(payload, list) else [payload]
    if not events or not all(
        isinstance(e, dict)
        and "specversion" in e
        and isinstance(e.get("id"), str)
        and isinstance(e.get("type"), str)
        for e in events
    ):
        return None
    types = {e["type"] for e in events}
    event_type = types.pop() if len(types) == 1 else ""
    if len(events) == 1:
        return validate_webhook_id(events[0]["id"], where="the CloudEvent id"), event_type
    digest = hashlib.sha256("\n".join(sorted(e["id"] for e in events)).encode()).hexdigest()
    return f"batch:{digest}", event_type


SCHEME = TwilioScheme
