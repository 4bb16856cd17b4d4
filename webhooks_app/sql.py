"""Hand-written statements for ingestion (store a delivery, answer a duplicate) and the admin's
list filters on large tables, the helpers every hand-written statement uses (quoting, rows back
into events), and the recovery of a connection the server dropped. The processing lifecycle's
statements live beside the functions that run them, in :mod:`webhooks_app.lifecycle`.

Each runs once per request or per task, where building and compiling a queryset was most of
the cost (bench/RESULTS.md). They are generated from the model's metadata once per process and
database vendor, interpolate only quoted identifiers and constants, and bind every value. The
lifecycle's per-attempt statements run through :func:`prepared_cursor`: on PostgreSQL, planned
once per connection.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper
from django.db.models.expressions import Col

from webhooks_app.models import EventStatus, WebhookEvent

T = TypeVar("T")

#: The columns an insert writes: every concrete field but the auto primary key.
INSERT_FIELDS = [f for f in WebhookEvent._meta.concrete_fields if not f.primary_key]


def supports_returning(vendor: str) -> bool:
    """``INSERT … ON CONFLICT DO NOTHING`` and ``… RETURNING``: PostgreSQL, SQLite 3.35+."""
    return vendor == "postgresql" or (vendor == "sqlite" and sqlite3.sqlite_version_info >= (3, 35))


#: Where psycopg would prepare a statement by itself: never (only :func:`prepared_cursor` asks).
_NEVER_BY_COUNT = 2**31


@contextlib.contextmanager
def prepared_cursor(connection: BaseDatabaseWrapper) -> Iterator[CursorWrapper]:
    """Django's cursor, whose statements PostgreSQL plans once per connection: psycopg 3's
    prepared statements, where Django's default cursor has every statement planned anew.

    Planning the claim (its conditions on pauses, keys and limits, over the event table's
    indexes) cost more than running it: prepared, an attempt's two statements take about a third
    of a millisecond less (bench/RESULTS.md). For statements that run per attempt and look rows
    up by a key (an id, a workflow, an ordering key), which one plan serves for every value: a
    range scan, such as recovery's, is better planned for each value, and runs seldom enough.

    Where prepared statements could not outlive a transaction, this is Django's cursor: with
    psycopg2, and with ``DISABLE_SERVER_SIDE_CURSORS``, which Django asks for behind a
    transaction-pooling PgBouncer (whose versions before 1.21 lose them between transactions).

    The statement still goes through Django's cursor wrapper (its execute wrappers); only the
    psycopg cursor under it is a server-binding one that prepares. While Django logs queries
    (``DEBUG``, a test capturing them), it runs unprepared, so the log shows it with its values
    as it shows any other. A connection whose ``prepare_threshold`` Django left off (None:
    never prepare) is given one that nothing reaches, so that only these statements are
    prepared.
    """
    with connection.cursor() as cursor:
        raw = connection.connection
        if _prepares(connection, raw):
            if raw.prepare_threshold is None:
                raw.prepare_threshold = _NEVER_BY_COUNT
            cursor.cursor.close()
            cursor.cursor = _preparing_cursor_class()(raw)
        yield cursor


def _prepares(connection: BaseDatabaseWrapper, raw: Any) -> bool:
    return (
        connection.vendor == "postgresql"
        and not connection.queries_logged
        and not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
        and hasattr(raw, "prepare_threshold")  # psycopg 3, not psycopg2
    )


Statement = tuple[str, Sequence[Any]]


def locked_rows(
    connection: BaseDatabaseWrapper, lock: Sequence[Statement], statements: Sequence[Statement]
) -> list[Sequence[Any] | None]:
    """The first row of each of ``statements``, run after the ``lock`` statements in a
    transaction of their own (prepared, as :func:`prepared_cursor`'s).

    With psycopg 3 outside any transaction (a worker between attempts), ``BEGIN``, the lock,
    the statements and ``COMMIT`` go to the server as one pipeline: one round trip where there
    would be one for each, each waiting for the one before. The server still runs them in
    order and holds the lock until the ``COMMIT``, as in any transaction; a failing statement
    aborts the rest, and the transaction is rolled back before the error goes on. Elsewhere,
    and inside a transaction, an atomic block runs them one by one.
    """
    connection.ensure_connection()
    raw = connection.connection
    if connection.in_atomic_block or not _prepares(connection, raw):
        rows = []
        with transaction.atomic(using=connection.alias), prepared_cursor(connection) as cursor:
            for statement, params in lock:
                cursor.execute(statement, params)
            for statement, params in statements:
                cursor.execute(statement, params)
                rows.append(cursor.fetchone())
        return rows
    with contextlib.ExitStack() as cursors:
        control = cursors.enter_context(prepared_cursor(connection))
        results = [cursors.enter_context(prepared_cursor(connection)) for _ in statements]
        try:
            with connection.wrap_database_errors, raw.pipeline():
                control.execute("BEGIN")
                for statement, params in lock:
                    control.execute(statement, params)
                for cursor, (statement, params) in zip(results, statements, strict=True):
                    cursor.execute(statement, params)
                control.execute("COMMIT")
        except Exception:
            from psycopg.pq import TransactionStatus

            if not raw.closed and raw.info.transaction_status != TransactionStatus.IDLE:
                raw.rollback()  # the transaction a failing statement aborted
            raise
        return [cursor.fetchone() for cursor in results]


@functools.cache
def _preparing_cursor_class() -> type:
    """A psycopg 3 cursor that prepares every statement it runs (imported on first use: the
    app runs without psycopg on SQLite)."""
    import psycopg

    class PreparingCursor(psycopg.Cursor):
        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, **{**kwargs, "prepare": True})

    return PreparingCursor


def retrying_lost_connection(operation: Callable[[], T]) -> T:
    """Run ``operation``; if it failed because the server had dropped the connection (a
    restart, a failover, an idle timeout), run it once more on a new one.

    This is what Django's ``CONN_HEALTH_CHECKS`` does for every request, with a ``SELECT 1``
    round trip each time; here the cost is paid only when a connection was actually lost. Only
    for operations that are safe to repeat, and never inside an outer transaction (the lost
    connection took it with it).
    """
    try:
        return operation()
    except (OperationalError, InterfaceError):
        connection = connections[DEFAULT_DB_ALIAS]
        if connection.in_atomic_block or connection.is_usable():
            raise
        connection.close()
    return operation()


def event_from_row(row: Sequence[Any], connection: BaseDatabaseWrapper) -> WebhookEvent:
    """The event from a row of all its concrete columns (as ``lifecycle.claim`` returns them), with
    the database's values converted as a queryset would (JSON, datetimes)."""
    values = [
        functools.reduce(lambda value, convert: convert(value, col, connection), converters, value)
        for value, (col, converters) in zip(row, _converters(connection), strict=True)
    ]
    return WebhookEvent.from_db(connection.alias, _ATTNAMES, values)


_ATTNAMES = [f.attname for f in WebhookEvent._meta.concrete_fields]


def _converters(connection: BaseDatabaseWrapper) -> list[tuple[Col, list[Callable[..., Any]]]]:
    """Per column, what Django's compiler applies to a fetched value: the backend's converters,
    then the field's (``from_db_value``). Looked up once per connection and kept on it, so the
    list lives exactly as long as the connection (a module-level cache would keep every
    thread's connection wrapper alive)."""
    cached: list[tuple[Col, list[Callable[..., Any]]]] | None = getattr(
        connection, _CONVERTERS_ATTRIBUTE, None
    )
    if cached is None:
        table = WebhookEvent._meta.db_table
        columns = [f.get_col(table) for f in WebhookEvent._meta.concrete_fields]
        cached = [
            (col, connection.ops.get_db_converters(col) + col.field.get_db_converters(connection))
            for col in columns
        ]
        setattr(connection, _CONVERTERS_ATTRIBUTE, cached)
    return cached


_CONVERTERS_ATTRIBUTE = "_webhooks_app_event_converters"


def quote(name: str) -> str:
    return str(connections[DEFAULT_DB_ALIAS].ops.quote_name(name))


def table() -> str:
    return quote(WebhookEvent._meta.db_table)


def queued_at() -> str:
    """When a ``pending`` event was last put on the queue (or received): what says that its task
    is overdue, for the duplicate that re-enqueues it and for recovery."""
    return f"COALESCE({quote('next_attempt_at')}, {quote('received_at')})"


@functools.cache
def insert_unless_duplicate(vendor: str) -> str:
    """Insert one event, or nothing if its ``(source, webhook_id)`` or its ``(source,
    content_key)`` exists (either unique constraint: no conflict target); returns the new id.

    Parameters: the values of :data:`INSERT_FIELDS`, in order.
    """
    columns = ", ".join(quote(str(f.column)) for f in INSERT_FIELDS)
    return (
        f"INSERT INTO {table()} ({columns}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(INSERT_FIELDS))}) "
        f"ON CONFLICT DO NOTHING RETURNING {quote('id')}"
    )


@functools.cache
def stored(vendor: str, key: str) -> str:
    """The event stored under a key of a delivery (``key``: the ``webhook_id`` or the
    ``content_key`` column), by that key's unique index: its id, status, whether it is
    stranded (``pending`` and queued before a time; the database compares the timestamps, so no
    value needs converting back) and its webhook id (a replay under a new id is answered with
    the stored one). One probe per key rather than an ``OR`` of both, which a planner without
    fresh statistics answers by reading every row of the source.

    Parameters: the stranded-before time, source, the key's value.
    """
    return (
        f"SELECT {quote('id')}, {quote('status')}, "  # noqa: S608
        f"{quote('status')} = '{EventStatus.PENDING.value}' AND {queued_at()} < %s, "
        f"{quote('webhook_id')} FROM {table()} "
        f"WHERE {quote('source')} = %s AND {quote(key)} = %s"
    )


@functools.cache
def distinct_values(vendor: str, column: str) -> str:
    """The distinct values of an indexed column, by a loose index scan: one index probe per
    value (``MIN(column) WHERE column > previous``) instead of ``SELECT DISTINCT`` reading every
    index entry (200 ms per admin list filter on a million events: bench/RESULTS.md).

    Parameters: the most values to return.
    """
    events, col = table(), quote(column)
    return (
        f"WITH RECURSIVE seen(value, n) AS ("  # noqa: S608
        f"SELECT MIN({col}), 1 FROM {events} "
        f"UNION ALL SELECT (SELECT MIN({col}) FROM {events} WHERE {col} > seen.value), n + 1 "
        f"FROM seen WHERE seen.value IS NOT NULL AND n < %s"
        f") SELECT value FROM seen WHERE value IS NOT NULL"
    )
