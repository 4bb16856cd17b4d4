"""Test helpers for the workflows a project builds on this app (contract §13): send what a
provider would send, signed with the source's configured secret, and run the stored events in
the test's own process, with no qcluster::

    from webhooks_app.testing import deliver, run_events

    def test_a_paid_invoice_runs_its_workflow(client):  # pytest-django's client, db enabled
        response = deliver(client, "stripe", event_type="invoice.paid")
        assert response.status_code == 202
        [event] = run_events()
        assert event.status == "succeeded"

Nothing here is a shortcut past the app: :func:`signed_request` builds the bytes and headers
the source's scheme verifies (its own ``sign``), :func:`deliver` posts them through the
project's URLconf, and :func:`run_events` runs :func:`webhooks_app.tasks.process_event`, the
entry point a qcluster worker calls, so claims, retries and ordering behave as in production.

**Sample payloads** ship with the app as ``webhooks_app/samples/<scheme>/<event type>.json``,
one file per provider event in the shape the provider's documentation shows (Shopify's
``orders/create`` is ``shopify/orders/create.json``; Twilio's form is stored as its fields).
One file each rather than one module: every sample reads, diffs and updates on its own like
the provider's page, serves outside Python too (``curl --data @push.json``), and another event
type is one more file, no code.

A sample delivery is a new event each time, as a provider's next event would be: its delivery
id is fresh unless ``webhook_id`` is given, and the same ``webhook_id`` gives the same delivery
again (a replay, answered ``200 duplicate``). Where the provider carries the id in the body
(Stripe's ``id``, Telegram's ``update_id``…) it is written there; where it travels in a header
that nothing signs (GitHub, GitLab, Shopify), the app tells deliveries apart by their bodies
(contract §5), so the sample's own ids of the event (the pushed commit, the order's token) are
derived from the delivery id.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import Q
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from webhooks_app import sources, tasks
from webhooks_app.conf import SourceConfig, secret_env_names
from webhooks_app.models import EventStatus, WebhookEvent
from webhooks_app.schemes import Scheme, get_scheme

__all__ = ["deliver", "run_events", "sample_event_types", "sample_payload", "signed_request"]

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
#: Where Django's test client (and DRF's ``APIClient``) says a request goes: what a URL-signing
#: scheme (Twilio) signs unless told otherwise.
TEST_CLIENT_ORIGIN = "http://testserver"


def _uuid() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class Conventions:
    """Where one provider's deliveries carry what its scheme's ``sign`` leaves to the body or to
    a header of its own. Paths are dotted, list positions included (``entry.0.changes.0.field``).
    """

    #: The sample sent when no event type is asked for; also the event-type header's default.
    default_event_type: str
    #: A fresh delivery id shaped like the provider's.
    new_id: Callable[[], str] = _uuid
    content_type: str = JSON
    #: The header that names the event type (GitHub, GitLab, Shopify)…
    event_header: str = ""
    #: …or where the body names it.
    event_field: str = ""
    #: Where the body carries the delivery id (each one is set); none: ``sign`` puts it in a
    #: header.
    id_fields: tuple[str, ...] = ()
    #: The id is a JSON integer (Telegram's ``update_id``).
    numeric_id: bool = False
    #: A sample's hex ids of the event itself, derived from the delivery id (module docstring).
    event_hex_fields: tuple[str, ...] = ()


CONVENTIONS: dict[str, Conventions] = {
    "generic": Conventions(
        "send_welcome_email", event_field="workflow_name", id_fields=("webhook_id",)
    ),
    "standard": Conventions(
        "contact.created", new_id=lambda: f"msg_{uuid.uuid4().hex}", event_field="type"
    ),
    "github": Conventions(
        "push",
        event_header="X-GitHub-Event",
        event_hex_fields=("after", "head_commit.id", "commits.0.id"),
    ),
    "gitlab": Conventions(
        "Push Hook",
        event_header="X-Gitlab-Event",
        event_hex_fields=("after", "checkout_sha", "commits.0.id"),
    ),
    "shopify": Conventions(
        "orders/create", event_header="X-Shopify-Topic", event_hex_fields=("token",)
    ),
    "stripe": Conventions(
        "invoice.paid",
        new_id=lambda: f"evt_{secrets.token_hex(12)}",
        event_field="type",
        id_fields=("id",),
    ),
    "slack": Conventions(
        "app_mention",
        new_id=lambda: f"Ev{secrets.token_hex(5).upper()}",
        event_field="event.type",
        id_fields=("event_id",),
    ),
    "telegram": Conventions(
        "message",
        new_id=lambda: str(secrets.randbelow(2**31)),
        id_fields=("update_id",),
        numeric_id=True,
    ),
    "twilio": Conventions(
        "message",
        new_id=lambda: f"SM{uuid.uuid4().hex}",
        content_type=FORM,
        # An incoming message carries its sid three times, under its old names too.
        id_fields=("MessageSid", "SmsSid", "SmsMessageSid"),
    ),
    "whatsapp": Conventions(
        "messages",
        new_id=lambda: f"wamid.{uuid.uuid4().hex}",
        event_field="entry.0.changes.0.field",
        id_fields=("entry.0.changes.0.value.messages.0.id",),
    ),
}


# Samples


def sample_event_types(scheme: str) -> list[str]:
    """The event types the app has a sample payload of for ``scheme`` (a scheme name, not a
    source), sorted; none for a scheme without samples."""
    root = SAMPLES_DIR / scheme
    if not scheme.isidentifier() or not root.is_dir():  # never a path out of SAMPLES_DIR
        return []
    return sorted(
        path.relative_to(root).with_suffix("").as_posix() for path in root.rglob("*.json")
    )


def sample_payload(scheme: str, event_type: str) -> Any:
    """A fresh copy of the sample payload (the caller may change it); ``ValueError`` naming the
    known event types if there is none."""
    known = sample_event_types(scheme)
    if event_type not in known:
        raise ValueError(
            f"The {scheme!r} scheme has no sample of event type {event_type!r}. "
            f"Known event types: {', '.join(known) or 'none'}."
        )
    return json.loads((SAMPLES_DIR / scheme / f"{event_type}.json").read_text(encoding="utf-8"))


# Requests


def source_config(name: str) -> SourceConfig:
    """The configured source ``name``, which must have a secret to sign with;
    ``ImproperlyConfigured`` saying what to set otherwise."""
    source = sources.get_source(name)
    if source is None:
        raise ImproperlyConfigured(
            f"No webhook source {name!r} is configured. "
            f"Known sources: {', '.join(sorted(sources.all_sources())) or 'none'}."
        )
    if not source.secrets and source.stored:
        raise ImproperlyConfigured(
            f"Source {name!r} has no valid secret: add one with "
            f"WebhookSource.objects.get(name={name!r}).add_secret(...)."
        )
    if not source.secrets:
        raise ImproperlyConfigured(
            f"Source {name!r} has no secret: set "
            f"{' or '.join(secret_env_names(name, source.scheme))} "
            f"or WEBHOOKS['SOURCES'][{name!r}]['SECRETS']."
        )
    return source


def signed_request(
    source: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    event_type: str | None = None,
    webhook_id: str | None = None,
    timestamp: int | None = None,
    url: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers (``Content-Type`` included) that ``source``'s sender would POST,
    signed with the source's first secret.

    ``payload`` is what the body encodes (JSON, or a form for Twilio); ``None`` sends the
    scheme's sample for ``event_type`` (default: the provider's best-known event, in
    :data:`CONVENTIONS`), as a new delivery unless ``webhook_id`` names one.
    With a payload, ``event_type`` and ``webhook_id`` are put where the provider carries them
    (a header, or a field of a copy of the payload). ``body`` sends exact bytes instead.
    ``timestamp`` (Unix seconds) is for schemes that sign one; ``url`` is the URL a URL-signing
    scheme signs (Twilio; default: the source's ``PUBLIC_URL``, else the test client's).

    ``ImproperlyConfigured`` for an unknown source, one without a secret, or a scheme that
    cannot sign; ``ValueError`` for an event type with no sample or nowhere to go.
    """
    config = source_config(source)
    scheme = _signing_scheme(config)
    conventions = CONVENTIONS.get(config.scheme)
    content_type = conventions.content_type if conventions else _content_type(scheme)
    if body is not None:
        _check_raw_body(config.scheme, conventions, payload, event_type, webhook_id)
    elif payload is not None:
        placed = _place(config.scheme, conventions, copy.deepcopy(payload), event_type, webhook_id)
        body = _encode(placed, content_type)
    elif conventions is None:
        raise ValueError(f"The {config.scheme!r} scheme has no built-in sample payloads.")
    else:
        if webhook_id is None:
            webhook_id = conventions.new_id()  # a sample is a new delivery
        body = _encode(_sample(config.scheme, conventions, event_type, webhook_id), content_type)
    if conventions is not None and webhook_id is None and not conventions.id_fields:
        webhook_id = conventions.new_id()  # an id that travels in a header is always sent
    headers = {"Content-Type": content_type}
    if conventions is not None and conventions.event_header:
        headers[conventions.event_header] = event_type or conventions.default_event_type
    extra = {"url": url or _default_url(config)} if scheme.signs_url else {}
    signed = scheme.sign(
        body, config.secrets[0], webhook_id=webhook_id, timestamp=timestamp, **extra
    )
    return body, {**headers, **signed}


def deliver(
    client: Any,
    source: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    event_type: str | None = None,
    webhook_id: str | None = None,
    timestamp: int | None = None,
    url: str | None = None,
) -> Any:
    """POST :func:`signed_request`'s request to ``source`` and return the response.

    ``client`` is Django's test client, or anything with ``.post(path, data,
    content_type=…, headers=…)``. It posts to ``url`` if given, else to the source's path in
    this project's URLconf; the test client reaches it as ``http://testserver``, which is what
    a URL-signing scheme signs by default.
    """
    data, headers = signed_request(
        source,
        payload,
        body=body,
        event_type=event_type,
        webhook_id=webhook_id,
        timestamp=timestamp,
        url=url,
    )
    content_type = headers.pop("Content-Type")
    return client.post(url or _path(source), data, content_type=content_type, headers=headers)


def run_events() -> list[WebhookEvent]:
    """Run every event that is due now (``pending``, or ``failed`` with its retry time reached)
    in this process, oldest first, one attempt each, and return them as they ended.

    Each goes through :func:`webhooks_app.tasks.process_event`, so the claim decides as it does
    for a worker: a paused, key-held or rate-limited event is left ``pending``, and a failed
    one is ``failed`` with its retry scheduled (a later call runs it once that time comes;
    with ``RETRY_BACKOFF = 0`` that is the next call) or ``dead`` after ``MAX_ATTEMPTS``.
    """
    due = Q(status=EventStatus.PENDING) | Q(
        status=EventStatus.FAILED, next_attempt_at__lte=timezone.now()
    )
    ids = list(WebhookEvent.objects.filter(due).order_by("pk").values_list("pk", flat=True))
    for event_id in ids:
        tasks.process_event(event_id)
    return list(WebhookEvent.objects.filter(pk__in=ids).order_by("pk"))


def _signing_scheme(source: SourceConfig) -> Scheme:
    try:
        scheme = get_scheme(source.scheme)
    except KeyError:
        raise ImproperlyConfigured(
            f"Source {source.name!r} names the unknown scheme {source.scheme!r} "
            "(manage.py check reports it as webhooks_app.E001)."
        ) from None
    if type(scheme).sign is Scheme.sign:
        raise ImproperlyConfigured(
            f"Source {source.name!r} uses the {source.scheme!r} scheme, which cannot sign "
            f"requests: give {type(scheme).__name__} a sign() method (see Scheme.sign)."
        )
    return scheme


def _content_type(scheme: Scheme) -> str:
    """A project's own scheme: JSON if it takes JSON, else the first media type it takes."""
    return JSON if JSON in scheme.media_types else min(scheme.media_types)


def _sample(scheme: str, conventions: Conventions, event_type: str | None, webhook_id: str) -> Any:
    """The sample for ``event_type``, as the delivery ``webhook_id`` (module docstring)."""
    payload = sample_payload(scheme, event_type or conventions.default_event_type)
    for path in conventions.event_hex_fields:
        _set(payload, path, _hex_of(webhook_id, len(_get(payload, path))))
    return _place(scheme, conventions, payload, None, webhook_id)


def _place(
    scheme: str,
    conventions: Conventions | None,
    payload: Any,
    event_type: str | None,
    webhook_id: str | None,
) -> Any:
    """``payload`` with the event type and the delivery id put where the provider carries them
    in the body (a header event type is set by :func:`signed_request`)."""
    if event_type is not None and not (conventions and conventions.event_header):
        _set(payload, _event_field(scheme, conventions), event_type)
    if webhook_id is not None and conventions is not None:
        value: str | int = _numeric(scheme, webhook_id) if conventions.numeric_id else webhook_id
        for path in conventions.id_fields:
            _set(payload, path, value)
    return payload


def _check_raw_body(
    scheme: str,
    conventions: Conventions | None,
    payload: Any,
    event_type: str | None,
    webhook_id: str | None,
) -> None:
    """Exact bytes are sent as they are: nothing can be placed in them."""
    if payload is not None:
        raise ValueError("Pass payload or body, not both.")
    if event_type is not None and not (conventions and conventions.event_header):
        raise ValueError(
            f"The {scheme!r} scheme reads the event type from the body: pass a payload."
        )
    if webhook_id is not None and conventions is not None and conventions.id_fields:
        raise ValueError(
            f"The {scheme!r} scheme reads the delivery id from the body: pass a payload."
        )


def _event_field(scheme: str, conventions: Conventions | None) -> str:
    if conventions is None or not conventions.event_field:
        raise ValueError(
            f"The {scheme!r} scheme reads the event type from the payload's own shape: "
            "leave event_type out."
        )
    return conventions.event_field


def _numeric(scheme: str, webhook_id: str) -> int:
    if not webhook_id.isascii() or not webhook_id.isdigit():
        raise ValueError(f"The {scheme!r} scheme's delivery id is an integer: pass digits.")
    return int(webhook_id)


def _hex_of(webhook_id: str, length: int) -> str:
    return hashlib.sha256(webhook_id.encode()).hexdigest()[:length]


def _encode(payload: Any, content_type: str) -> bytes:
    if content_type == FORM:
        return urllib.parse.urlencode(payload, doseq=True).encode()
    if content_type == JSON:
        return json.dumps(payload).encode()
    raise ValueError(f"Only JSON and form payloads are encoded here: pass the {content_type} body.")


def _get(payload: Any, path: str) -> Any:
    for part in path.split("."):
        payload = payload[int(part)] if isinstance(payload, list) else payload[part]
    return payload


def _set(payload: Any, path: str, value: Any) -> None:
    """Set the field at ``path``; ``ValueError`` if what holds it is not there."""
    *parents, last = path.split(".")
    try:
        container = _get(payload, ".".join(parents)) if parents else payload
        if isinstance(container, list):
            container[int(last)] = value
        else:
            container[last] = value
    except (KeyError, IndexError, TypeError, ValueError):
        raise ValueError(f"The payload has no place for {path!r}.") from None


def _path(source: str) -> str:
    try:
        return reverse("webhooks_app:receive", kwargs={"source": source})
    except NoReverseMatch:
        raise ImproperlyConfigured(
            "webhooks_app.urls is not in this project's URLconf (ROOT_URLCONF): include it, "
            "or pass url=."
        ) from None


def _default_url(source: SourceConfig) -> str:
    return source.public_url or TEST_CLIENT_ORIGIN + _path(source.name)
