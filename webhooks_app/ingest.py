"""The ingestion core: verify → parse → store-or-duplicate → enqueue, in the contract's order.

The view only adapts HTTP to :func:`receive` and its result back to HTTP. Every refusal is a
:class:`~webhooks_app.exceptions.WebhookError` raised before anything is written, so a 4xx/5xx
never leaves a row or a task behind, and a 2xx is only returned once the row has committed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from django.db import DEFAULT_DB_ALIAS, DatabaseError, IntegrityError, connections, transaction
from django.utils import timezone

from webhooks_app import lifecycle, ordering, queue, registry, signals, sources, sql
from webhooks_app.conf import SourceConfig, env_secret_name, webhook_settings
from webhooks_app.exceptions import (
    InvalidPayload,
    InvalidSignature,
    MethodNotAllowed,
    NotConfigured,
    PayloadTooLarge,
    Unavailable,
    UnknownSource,
    UnknownWorkflow,
    UnsupportedMediaType,
    WebhookError,
)
from webhooks_app.logutil import printable
from webhooks_app.models import EventStatus, WebhookEvent
from webhooks_app.schemes import Delivery, InboundRequest, Scheme, get_scheme

logger = logging.getLogger("webhooks_app")

#: Request headers stored with every event (plus each scheme's own); anything else, and above
#: all every signature header, is dropped, so the admin can never show a credential.
BASE_STORED_HEADERS = frozenset({"content-type", "content-length", "user-agent", "x-request-id"})
MAX_STORED_HEADER_LENGTH = 512


@dataclass(frozen=True)
class Outcome:
    """What to answer: ``status_code`` and the JSON ``body``."""

    status_code: int
    body: dict[str, Any]
    event: WebhookEvent | None = None


def get_source(name: str) -> tuple[SourceConfig, Scheme]:
    try:
        source = sources.get_source(name)
    except DatabaseError:  # the database sources were never loaded here, and cannot be now
        raise Unavailable() from None
    if source is None:
        raise UnknownSource(f"No webhook source {printable(name)!r} is configured.")
    try:
        return source, get_scheme(source.scheme)
    except KeyError:
        # A misconfiguration (reported by `manage.py check` too): refuse, the sender retries.
        raise NotConfigured(f"Source {name!r} names an unknown scheme.") from None


def handshake(source: SourceConfig, scheme: Scheme, request: InboundRequest) -> str:
    """A provider's ``GET`` subscription check (WhatsApp/Meta); 405 for schemes without one."""
    if not scheme.has_handshake:
        raise MethodNotAllowed()
    if not source.verify_token:
        if source.stored:
            raise NotConfigured(f"Set the VERIFY_TOKEN option of webhook source {source.name!r}.")
        raise NotConfigured(f"Set WEBHOOKS['SOURCES'][{source.name!r}]['VERIFY_TOKEN'].")
    return scheme.handshake(request, source.verify_token)


def check_content_length(source: SourceConfig, content_length: str | None) -> None:
    """413 from the declared length alone, before a byte of the body is read."""
    try:
        declared = int(content_length or 0)
    except ValueError:
        declared = 0
    if declared > source.max_body_bytes:
        raise PayloadTooLarge(f"The body is larger than {source.max_body_bytes} bytes.")


def receive(source: SourceConfig, scheme: Scheme, request: InboundRequest) -> Outcome:
    """Run one POSTed delivery through every check and store it; raise ``WebhookError`` to refuse.

    The caller has already answered what comes before the body: the source exists
    (:func:`get_source`), the method is POST, and the declared length is within the limit.
    """
    if len(request.body) > source.max_body_bytes:
        raise PayloadTooLarge(f"The body is larger than {source.max_body_bytes} bytes.")
    media_type = (request.header("content-type") or "").split(";", 1)[0].strip().lower()
    if media_type not in scheme.media_types:
        raise UnsupportedMediaType(f"Send the body as {' or '.join(sorted(scheme.media_types))}.")
    if webhook_settings.REQUIRE_SIGNATURE:
        if not source.secrets:
            raise NotConfigured(_missing_secret_detail(source))
        with _scheme_errors_become(InvalidSignature, source):
            scheme.verify(
                request, source.secrets, now=time.time(), tolerance=source.timestamp_tolerance
            )
    with _scheme_errors_become(InvalidPayload, source):
        delivery = scheme.parse(request)
    if delivery.reply is not None:
        return Outcome(200, dict(delivery.reply))
    workflow_name = delivery.workflow_name or source.route(delivery.event_type)
    if workflow_name is not None and not registry.is_registered(workflow_name):
        raise UnknownWorkflow(f"No workflow is registered as {printable(workflow_name)!r}.")
    with _scheme_errors_become(InvalidPayload, source):
        content_key = scheme.content_key(request)
    return store(source, scheme, delivery, workflow_name, request.headers, content_key)


def _missing_secret_detail(source: SourceConfig) -> str:
    if source.stored:
        return f"Add a secret to webhook source {source.name!r}: it has none that is valid."
    return (
        f"Set WEBHOOKS['SOURCES'][{source.name!r}]['SECRETS'] or the environment variable "
        f"{env_secret_name(source.name)}."
    )


@contextmanager
def _scheme_errors_become(error: type[WebhookError], source: SourceConfig) -> Iterator[None]:
    """A scheme that crashes (a bug in a project's own scheme, say) refuses the request with
    ``error`` instead of answering 500 with a traceback; the crash is logged for its author."""
    try:
        yield
    except WebhookError:
        raise
    except Exception:
        logger.exception(
            "The %r scheme of source %s crashed; answered %s.",
            source.scheme,
            source.name,
            error.error,
        )
        raise error() from None


def store(
    source: SourceConfig,
    scheme: Scheme,
    delivery: Delivery,
    workflow_name: str | None,
    headers: Mapping[str, str],
    content_key: str | None,
) -> Outcome:
    """Store the delivery unless it is a duplicate, and enqueue it; 503 if the database fails.

    A duplicate is a delivery whose id *or* whose ``content_key`` (the digest of its signed
    content, :meth:`Scheme.content_key`) is already stored for the source: a captured request
    re-sent under a new unsigned id or event type is answered ``200 duplicate`` and does not
    run again.

    A connection the server dropped while it sat idle (a restart, a failover, an idle timeout)
    is reopened and the store tried once more, so the first delivery after it is not refused
    (:func:`sql.retrying_lost_connection`). Trying again is safe: the unique constraint still
    decides.
    """
    try:
        outcome = sql.retrying_lost_connection(
            lambda: _store_or_duplicate(
                source, scheme, delivery, workflow_name, headers, content_key
            )
        )
    except DatabaseError as exc:
        logger.warning(
            "Webhook from source %s not stored (database unavailable: %s); answered 503.",
            source.name,
            printable(type(exc).__name__),
        )
        raise Unavailable() from None
    if outcome.event is not None:
        signals.event_received.send(sender=WebhookEvent, event=outcome.event)
    return outcome


def _store_or_duplicate(
    source: SourceConfig,
    scheme: Scheme,
    delivery: Delivery,
    workflow_name: str | None,
    headers: Mapping[str, str],
    content_key: str | None,
) -> Outcome:
    """Insert the event (the unique constraints decide duplicates) and enqueue it.

    A redelivery is answered from one indexed read, without a write transaction (on SQLite that
    would queue behind every writer), and before the event is even built: by its id, which a
    sender's retry repeats, else by its content key. The read only shortcuts the common case:
    when it finds nothing, the insert still decides (both unique constraints), so two racing
    first deliveries store one row, and a captured request replayed under a new id is caught
    there and answered from both keys.
    """
    existing = None
    if delivery.webhook_id is not None:
        existing = _stored(source.name, "webhook_id", delivery.webhook_id)
    elif content_key is not None:
        existing = _stored(source.name, "content_key", content_key)
    if existing is not None:
        return duplicate(existing)
    event = WebhookEvent(
        source=source.name,
        webhook_id=delivery.webhook_id or str(uuid.uuid4()),  # as send_test_webhook makes them
        content_key=content_key,
        event_type=delivery.event_type[:255],
        workflow_name=workflow_name or "",
        payload=delivery.payload,
        headers=stored_headers(headers, scheme),
        status=EventStatus.PENDING if workflow_name else EventStatus.IGNORED,
        order_key=ordering.order_key(source, delivery) if workflow_name else None,
    )
    with transaction.atomic():
        inserted = insert_unless_duplicate(event)
        if inserted and event.status == EventStatus.PENDING:
            queue.enqueue_in_transaction(event.pk, workflow=event.workflow_name)
    if not inserted:
        existing = _stored(event.source, "webhook_id", event.webhook_id)
        if existing is None and content_key is not None:
            existing = _stored(event.source, "content_key", content_key)
        if existing is None:  # deleted between the insert attempt and now: retry later
            raise Unavailable()
        return duplicate(existing)
    if event.status == EventStatus.IGNORED:
        return Outcome(200, {"status": "ignored", "webhook_id": event.webhook_id}, event)
    return Outcome(
        202, {"status": "accepted", "webhook_id": event.webhook_id, "event_id": event.pk}, event
    )


class StoredRow(NamedTuple):
    pk: int
    status: str
    #: Still ``pending`` although it was queued more than ``RECOVERY_GRACE`` ago.
    stranded: bool
    webhook_id: str


def _stored(source: str, key: str, value: str) -> StoredRow | None:
    """The stored row of ``source`` whose ``key`` (``webhook_id`` or ``content_key``) is
    ``value``: every duplicate is answered from this precompiled read."""
    connection = connections[DEFAULT_DB_ALIAS]
    stranded_before = timezone.now() - timedelta(seconds=webhook_settings.RECOVERY_GRACE)
    with connection.cursor() as cursor:
        cursor.execute(
            sql.stored(connection.vendor, key),
            [connection.ops.adapt_datetimefield_value(stranded_before), source, value],
        )
        row = cursor.fetchone()
    return None if row is None else StoredRow(row[0], row[1], bool(row[2]), row[3])


def duplicate(existing: StoredRow) -> Outcome:
    """Answer a repeated delivery with the stored event's id; re-enqueue the event if it has
    been stranded in ``pending``."""
    if existing.stranded:
        lifecycle.requeue(existing.pk, EventStatus.PENDING, timezone.now())
    return Outcome(
        200,
        {
            "status": "duplicate",
            "webhook_id": existing.webhook_id,
            "event_status": existing.status,
        },
    )


def insert_unless_duplicate(event: WebhookEvent) -> bool:
    """Insert ``event`` in one statement; ``False`` if its ``(source, webhook_id)`` or its
    ``(source, content_key)`` already exists.

    PostgreSQL and SQLite (3.35+) do it with ``INSERT … ON CONFLICT DO NOTHING RETURNING``: no
    exception, no savepoint, and no ERROR line in PostgreSQL's log per duplicate. Other
    databases fall back to a savepoint around a plain insert.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    if not sql.supports_returning(connection.vendor):
        try:
            with transaction.atomic():
                event.save(force_insert=True)
        except IntegrityError:
            return False
        return True
    params = [
        f.get_db_prep_save(f.pre_save(event, add=True), connection) for f in sql.INSERT_FIELDS
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql.insert_unless_duplicate(connection.vendor), params)
        row = cursor.fetchone()
    if row is None:
        return False
    event.pk = row[0]
    event._state.adding = False
    event._state.db = DEFAULT_DB_ALIAS
    return True


def stored_headers(headers: Mapping[str, str], scheme: Scheme) -> dict[str, str]:
    keep = (BASE_STORED_HEADERS | scheme.stored_headers) - scheme.signature_headers
    return {
        name: value[:MAX_STORED_HEADER_LENGTH] for name, value in headers.items() if name in keep
    }
