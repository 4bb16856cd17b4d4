"""Twilio: ``X-Twilio-Signature: <base64 HMAC-SHA1(auth token, signed string)>``.

**What is signed.** One string: the full URL Twilio requested (scheme, host, path and query
string exactly as sent) followed, for ``application/x-www-form-urlencoded`` bodies, by every
POST parameter's name and value with no separator at all, names sorted, a repeated
parameter's values de-duplicated and sorted (twilio-python's rule). For JSON bodies Twilio
appends ``bodySHA256=<hex sha256(body)>`` to the URL and signs the URL alone; the body must
hash to that value. Twilio adds ``bodySHA256`` to JSON requests only, so a JSON request
without it and a form whose URL carries it are both refused (401): otherwise a JSON
request's signature would also verify its URL sent as an empty form. The body is never
signed as bytes, so the form is parsed (leniently) before verification;
:meth:`TwilioScheme.parse` then applies the strict rules.

**What a captured request can still do.** Nothing signed says when a request was sent or
how often it may arrive: there is no timestamp and no signed delivery id (the
``I-Twilio-Idempotency-Token`` header is not signed; it is stored, never trusted). And one
signed string is many bodies: fields reordered or ``%``-encoded differently, a value
repeated, ``MessageSid=SM1&NumMedia=0`` re-split as ``MessageSid=SM1NumMedia0``, text moved
between the query string and the fields, a port added or dropped. So every Twilio delivery's
idempotency key is the signed string itself (:meth:`TwilioScheme.content_key`): a captured
delivery re-sent in any of those forms, under any token, is ``200 duplicate`` of the stored
event for as long as that event is kept (after cleanup deleted it, a replay is new). Two
deliveries with the same URL and parameters are therefore one event, as Twilio's retries
are. What the signature cannot bind is where one field ends and the next begins: someone
who reads a delivery in transit *before* it arrives can deliver it first re-split (a sid or
status glued to its neighbour, so another id or event type), and the genuine one is then its
duplicate. Serve the endpoint over HTTPS only. Shapes Twilio never sends are refused (400)
rather than guessed at: a repeated sid, status, ``SequenceNumber`` or ``EventType`` field,
and a field without a name.

**Bounded refusals.** Verifying needs the parameters decoded and sorted, so a form with more
than ``MAX_FORM_FIELDS`` (1000) fields or ``MAX_FORM_ESCAPES`` (65 536) ``%``-escapes is
refused as unauthenticated (401) after counting its ``&`` and ``%`` and before any parsing.
Twilio sends fewer than about a hundred fields, and typically a few hundred escapes.

**The URL must be the one Twilio used** (it is ``request.url``: the source's ``PUBLIC_URL``
if set, else Django's ``build_absolute_uri()``). Behind a proxy or load balancer, set
``PUBLIC_URL`` on the source to the URL entered in the Twilio console, or make Django see the
original host and scheme (``USE_X_FORWARDED_HOST = True`` and ``SECURE_PROXY_SSL_HEADER``).
``PUBLIC_URL`` gives scheme, host and path; the query string the request arrived with is
appended (it carries JSON bodies' per-request ``bodySHA256``), unless ``PUBLIC_URL`` has a
query of its own, which is then used exactly as configured.
Like Twilio's own libraries, the URL is also tried without its port and with the scheme's
default port, because Twilio is not consistent about including ``:443``/``:80``; the content
key leaves the port out, so the port a sender picks never makes a new event.

**Secrets.** The account's *primary* Auth Token signs; a secondary token signs nothing until
it is promoted, so list both in ``SECRETS`` while rotating.

**Delivery id and event type** (Twilio documents no id header), from the first that applies:

* a JSON CloudEvent, or an array of them (Event Streams): the event's ``id`` and ``type``;
* a transcription, recording, conference, message or call sid (in that order), with its
  status: id ``<sid>[:<status>][:<SequenceNumber>]``, event type ``<kind>[.<status>]``, e.g.
  an incoming message is ``SM…``/``message``, its status callbacks
  ``SM…:delivered``/``message.delivered``, a call status callback ``CA…:completed:3``/
  ``call.completed``, a conference one ``CF…:participant-join:2``/``conference.participant-join``;
* an ``EventType`` field (Conversations, TaskRouter, Sync…) is the event type, and is
  appended to the sid-based id (``IM…:onMessageAdded``).

A status is part of the id because one message or call goes through several statuses, each a
callback of its own; a ``SequenceNumber`` (voice and conference callbacks) is appended too.
Recordings and transcriptions are matched before calls, because their callbacks also carry the
call's ``CallSid``. A delivery with none of these (a TaskRouter event, say) gets an id from the
server, and the content key alone recognises its retries; one without an event type goes to
the ``"*"`` route.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
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
#: A form with more fields than this is refused unparsed. Twilio's largest callbacks (an
#: MMS with ten media, voice with add-ons) carry well under 100; Django's own default cap
#: (``DATA_UPLOAD_MAX_NUMBER_FIELDS``) is this too.
MAX_FORM_FIELDS = 1000
#: Nor more ``%``-escapes than this: decoding costs about half a microsecond per escape in
#: Python, so this bounds a refusal to ~35 ms. 64 KiB of escaped bytes (punctuation,
#: non-ASCII text) leaves room for the JSON attributes TaskRouter and Conversations send.
MAX_FORM_ESCAPES = 65_536

#: (sid field, status field, event kind): the most specific first.
KINDS = (
    ("TranscriptionSid", "TranscriptionStatus", "transcription"),
    ("RecordingSid", "RecordingStatus", "recording"),
    ("ConferenceSid", "StatusCallbackEvent", "conference"),
    ("MessageSid", "MessageStatus", "message"),
    ("SmsSid", "SmsStatus", "message"),
    ("CallSid", "CallStatus", "call"),
)
#: The fields the delivery id and event type come from: Twilio sends each at most once.
IDENTIFYING_FIELDS = frozenset(
    {field for sid, status, _ in KINDS for field in (sid, status)} | {"SequenceNumber", "EventType"}
)

Params = Mapping[str, Sequence[str]]


# -- signing ----------------------------------------------------------------------------------
def parameter_text(params: Params) -> str:
    """What Twilio appends to the URL: name+value of every parameter, names sorted, each one's
    values de-duplicated and sorted (twilio-python's ``compute_signature``)."""
    return "".join(name + value for name in sorted(params) for value in sorted(set(params[name])))


def compute_signature(auth_token: str, url: str, tail: bytes) -> bytes:
    """HMAC-SHA1 of ``url`` + ``tail`` (:func:`signed_tail`), fed in two parts so that a
    large tail is neither copied nor re-encoded once per URL variant and secret."""
    mac = hmac.new(auth_token.encode(), url.encode(), hashlib.sha1)
    mac.update(tail)
    return mac.digest()


def url_with_body_hash(url: str, body: bytes) -> str:
    """``url`` with ``bodySHA256=<hex sha256(body)>`` appended, as Twilio sends JSON bodies."""
    separator = "&" if urllib.parse.urlsplit(url).query else "?"
    return f"{url}{separator}{BODY_HASH_PARAM}={hashlib.sha256(body).hexdigest()}"


def _split_port(url: str) -> tuple[str, str, str] | None:
    """``(scheme://[userinfo@]host, port, rest)``, or ``None`` for a URL without ``://``.

    String slicing, so userinfo, IPv6 literals, path and query stay byte-for-byte."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    userinfo, at, hostport = rest[:end].rpartition("@")
    host, colon, port = hostport.rpartition(":")
    if not (colon and port.isascii() and port.isdigit()):  # no port; "[::1]" ends in "]"
        host, port = hostport, ""
    return f"{scheme}://{userinfo}{at}{host}", port, rest[end:]


def url_variants(url: str) -> set[str]:
    """``url``, ``url`` without its port, and ``url`` with the scheme's default port if it has
    none: twilio-python's ``remove_port``/``add_port``. Only the port is rewritten."""
    parts = _split_port(url)
    if parts is None:
        return {url}
    base, port, rest = parts
    variants = {url, base + rest}
    default = DEFAULT_PORTS.get(base.partition("://")[0].lower())
    if not port and default:
        variants.add(f"{base}:{default}{rest}")
    return variants


def url_without_port(url: str) -> str:
    """The one member of :func:`url_variants` that every variant of ``url`` shares."""
    parts = _split_port(url)
    return url if parts is None else parts[0] + parts[2]


# -- request helpers --------------------------------------------------------------------------
def media_type(request: InboundRequest) -> str:
    return (request.header("content-type") or "").split(";", 1)[0].strip().lower()


def within_form_caps(body: bytes) -> bool:
    """Whether the form has at most ``MAX_FORM_FIELDS`` fields and ``MAX_FORM_ESCAPES``
    escapes: two C-speed counts, so an oversized form costs no decoding and no sorting."""
    return body.count(b"&") < MAX_FORM_FIELDS and body.count(b"%") <= MAX_FORM_ESCAPES


def _signed_params(body: bytes) -> dict[str, list[str]]:
    """The form as Twilio signed it: UTF-8 text, ``+`` and ``%xx`` decoded, blanks kept.

    Lenient on purpose: a body the strict parser refuses must still be *unauthenticated*
    (401) rather than a 400 that tells an unauthenticated sender how far it got; hence also
    the default detail, the same as a wrong signature's.
    """
    if not within_form_caps(body):
        raise InvalidSignature()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSignature() from None
    params: dict[str, list[str]] = {}
    for name, value in urllib.parse.parse_qsl(text, keep_blank_values=True):
        params.setdefault(name, []).append(value)
    return params


def signed_tail(request: InboundRequest) -> bytes:
    """What follows the URL in the signed string, UTF-8: a form's parameters; nothing for JSON
    (whose body the URL's ``bodySHA256`` covers)."""
    if media_type(request) != FORM:
        return b""
    return parameter_text(_signed_params(request.body)).encode()


def _query_value(url: str, name: str) -> str | None:
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get(name)
    return values[0] if values else None


class TwilioScheme(Scheme):
    media_types: ClassVar[frozenset[str]] = frozenset({FORM, JSON})
    signature_headers: ClassVar[frozenset[str]] = frozenset({SIGNATURE_HEADER})
    stored_headers: ClassVar[frozenset[str]] = frozenset({IDEMPOTENCY_HEADER})
    signs_url: ClassVar[bool] = True
    recipe: ClassVar[str] = (
        "In the Twilio console, set the webhook URL to {url}, exactly the URL Twilio calls:"
        " Twilio signs it, so behind a proxy set the source's PUBLIC_URL to it. The secret is"
        " the account's primary Auth Token."
    )
    secret_from_provider: ClassVar[bool] = True

    def verify(
        self, request: InboundRequest, secrets: Sequence[str], *, now: float, tolerance: int
    ) -> None:
        header = request.header(SIGNATURE_HEADER)
        if header is None:
            raise MissingSignature("Send X-Twilio-Signature.")
        sent_hash = _query_value(request.url, BODY_HASH_PARAM)
        is_json = media_type(request) == JSON
        if not is_json and sent_hash is not None:
            raise InvalidSignature()  # a JSON request's signed URL, sent with a form body
        # JSON: the body is covered only through the bodySHA256 the signed URL carries.
        body_hash_ok = not is_json or hmac.compare_digest(
            (sent_hash or "").encode(), hashlib.sha256(request.body).hexdigest().encode()
        )
        tail = signed_tail(request)
        provided = decode_base64_digest(header, SHA1_DIGEST_SIZE)
        expected = [
            compute_signature(secret, url, tail)
            for url in url_variants(request.url)
            for secret in secrets
        ]
        # Every candidate is compared, whatever failed first: the time taken tells nothing.
        signature_ok = any_digest_matches(provided or b"", expected) and provided is not None
        if not signature_ok:
            raise InvalidSignature()
        if not body_hash_ok:
            raise InvalidSignature("bodySHA256 in the URL does not match the body.")

    def content_key(self, request: InboundRequest) -> str:
        """SHA-256 of the signed string with the URL's port left out.

        Every request the same signature verifies maps here, however it is encoded: the
        signed string is what the HMAC covers, and the port is the only part of it that
        verification lets vary (:func:`url_variants`; the sender picks it with ``Host``).
        """
        digest = hashlib.sha256(url_without_port(request.url).encode())
        digest.update(signed_tail(request))
        return digest.hexdigest()

    def parse(self, request: InboundRequest) -> Delivery:
        payload: Any
        if media_type(request) == FORM:
            payload = _form_payload(request.body)
        else:
            payload = parse_json(request.body)
            if (cloud := _cloud_events(payload)) is not None:
                return Delivery(cloud[0], cloud[1], payload)
        fields = payload if isinstance(payload, dict) else {}
        webhook_id, event_type = _from_sids(fields)
        if isinstance(fields.get("EventType"), str):
            event_type = fields["EventType"]
            if webhook_id is not None:
                webhook_id = f"{webhook_id}:{event_type}"
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
            tail = parameter_text(_signed_params(body)).encode()
        elif _query_value(url, BODY_HASH_PARAM) != hashlib.sha256(body).hexdigest():
            raise ValueError("For a JSON body, url must carry its bodySHA256 (url_with_body_hash).")
        else:
            tail = b""
        signature = compute_signature(secret, url, tail)
        return {"X-Twilio-Signature": base64.b64encode(signature).decode("ascii")}


def _form_payload(body: bytes) -> dict[str, str | list[str]]:
    """The strictly parsed form: one value stays a string, a repeated field keeps all its
    values. Shapes Twilio never sends are refused, because the signature cannot tell which
    reading was meant (module docstring)."""
    if not within_form_caps(body):
        raise InvalidPayload(
            f"A Twilio form has at most {MAX_FORM_FIELDS} fields and {MAX_FORM_ESCAPES} escapes."
        )
    params: dict[str, list[str]] = {}
    for name, value in form_pairs(body):
        params.setdefault(name, []).append(value)
    if "" in params:
        raise InvalidPayload("A form field has no name.")
    repeated = sorted(name for name in IDENTIFYING_FIELDS if len(params.get(name, ())) > 1)
    if repeated:
        raise InvalidPayload(f"Twilio sends {repeated[0]} once; this form repeats it.")
    return {name: vals[0] if len(vals) == 1 else vals for name, vals in params.items()}


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
