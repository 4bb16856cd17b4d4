"""The processing lifecycle of an event, in one place: claim an attempt, hold its lease, record
its outcome, hand on what it held back, and take back what a lost worker left.

All state lives on database rows (the event, and a :class:`~webhooks_app.models.ProcessingControl`
per paused source or workflow and per limited workflow), so any number of processes and nodes
share it, and a node joining or dying changes nothing. The claim is one conditional UPDATE
with every rule in its ``WHERE``: of two tasks for one event only one gets it, and a paused,
key-held or limited event is refused without using an attempt. Whatever refuses an event also
says how it will be woken: ``waiting_for`` marks it, and ``waited_on`` flags what it waits on
(its key's events, or its workflow's running attempts), whose end looks for it; a rate-limited one takes a start time and its
worker's heartbeat wakes it then; resuming requeues a paused backlog. Recovery is the safety
net for a wake that was lost with its process.

Each statement sits beside the function that runs it. They interpolate only quoted
identifiers and constants, bind every value, and are built once per process and vendor.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Q
from django.utils import timezone

from webhooks_app import queue, registry, signals, sql
from webhooks_app.conf import Rate, webhook_settings
from webhooks_app.logutil import printable
from webhooks_app.models import (
    UNFINISHED_STATUSES,
    ControlKind,
    EventStatus,
    ProcessingControl,
    WebhookEvent,
)

logger = logging.getLogger("webhooks_app")

TRACEBACK_FRAMES = 5
#: Recovery handles at most this many events of each kind per pass (bounded work per run).
RECOVERY_BATCH = 500
#: Events per transaction when a resume puts a paused backlog back on the queue.
REQUEUE_BATCH = 500

PENDING, RUNNING, FAILED = (
    s.value for s in (EventStatus.PENDING, EventStatus.RUNNING, EventStatus.FAILED)
)


def lease_duration() -> timedelta:
    return timedelta(seconds=webhook_settings.LEASE_SECONDS)


def _connection() -> Any:
    return connections[DEFAULT_DB_ALIAS]


def _adapt(value: datetime | None) -> Any:
    return _connection().ops.adapt_datetimefield_value(value)


def _col(alias: str, name: str) -> str:
    return f"{alias}.{sql.quote(name)}"


def _controls_table() -> str:
    return sql.quote(ProcessingControl._meta.db_table)


# The rules, written once, as conditions on the event row ``alias``. ``due`` and ``lapsed``
# take one parameter: now.


def _due(alias: str) -> str:
    """Its turn has come: ``pending``, or ``failed`` with its retry time reached."""
    status, next_at = _col(alias, "status"), _col(alias, "next_attempt_at")
    return f"({status} = '{PENDING}' OR ({status} = '{FAILED}' AND {next_at} <= %s))"


def _pausing(alias: str) -> str:
    """The paused controls of its source and its workflow (a ``FROM … WHERE`` clause)."""
    kind, name = sql.quote("kind"), sql.quote("name")
    return (
        f"FROM {_controls_table()} c WHERE c.{sql.quote('paused')} AND ("
        f"(c.{kind} = '{ControlKind.SOURCE.value}' AND c.{name} = {_col(alias, 'source')}) OR "
        f"(c.{kind} = '{ControlKind.WORKFLOW.value}' AND c.{name} = {_col(alias, 'workflow_name')})"
        ")"
    )


def _not_paused(alias: str) -> str:
    """Neither its source nor its workflow is paused."""
    return f"NOT EXISTS (SELECT 1 {_pausing(alias)})"


def _key_holders(alias: str) -> str:
    """The other events of its key that hold it back (a ``FROM … WHERE`` clause over ``k``)."""
    return f"FROM {sql.table()} k WHERE " + _holds(
        "k", _col(alias, "source"), _col(alias, "order_key"), _col(alias, "id")
    )


def _holds(holder: str, source: str, key: str, pk: str) -> str:
    """The event row ``holder`` holds back the event ``pk`` of ``source`` and ``key`` (SQL
    expressions: another row's columns, or parameters): it is running, or was received
    before it and is unfinished (a ``failed`` one waiting for its retry holds the key;
    ``dead`` releases it)."""
    status, pk_col = _col(holder, "status"), _col(holder, "id")
    return (
        f"{_col(holder, 'source')} = {source} AND {_col(holder, 'order_key')} = {key} "
        f"AND {_unfinished(holder)} AND {pk_col} <> {pk} AND ({status} = '{RUNNING}' "
        f"OR ({pk_col} < {pk} AND {status} IN ('{PENDING}', '{FAILED}')))"
    )


def _unfinished(alias: str) -> str:
    """Spelt as the partial index ``webhooks_ev_order_key_idx`` is, so that SQLite's planner
    (which matches the terms as written) uses it too."""
    statuses = ", ".join(f"'{status.value}'" for status in UNFINISHED_STATUSES)
    return f"{_col(alias, 'status')} IN ({statuses})"


def _key_free(alias: str) -> str:
    """Unordered, or nothing of its key holds it back."""
    return f"({_col(alias, 'order_key')} IS NULL OR NOT EXISTS (SELECT 1 {_key_holders(alias)}))"


def _lapsed(alias: str) -> str:
    """``running`` and its lease has lapsed: the worker is gone. (No lease at all: an attempt
    claimed before leases existed.)"""
    lease = _col(alias, "lease_expires_at")
    return f"({_col(alias, 'status')} = '{RUNNING}' AND ({lease} IS NULL OR {lease} < %s))"


# Claim

#: How many times one task tries an event again when what refused it ended meanwhile (a holder
#: that finished between the refusal and the flag that would have woken the event): bounded,
#: and recovery remains the safety net.
CLAIM_ROUNDS = 3


def claim(event_id: int, now: datetime, workflow: str = "") -> WebhookEvent | None:
    """Start an attempt of event ``event_id`` if every rule allows it; returns the claimed
    event (``running``, attempts counted, lease taken) or None.

    The common case is one statement. ``workflow`` is the event's, when whoever queued it knew
    it: an event of a limited workflow then goes straight to the locked claim. Only a refused
    claim reads the row to learn why: to take over a lapsed lease, to wait for its key or a
    slot, or to take the limited path.
    """
    limited = registry.limited_workflows()
    if workflow in limited:
        return _claim_limited(event_id, workflow, now)
    return _claim(event_id, now, exclude=limited) or _claim_refused(event_id, now)


def _running_count() -> str:
    """The running attempts of a workflow, by the partial index of running events. Parameters:
    the workflow."""
    return (
        f"(SELECT COUNT(*) FROM {sql.table()} r WHERE r.{sql.quote('workflow_name')} = %s "  # noqa: S608
        f"AND r.{sql.quote('status')} = '{RUNNING}')"
    )


@functools.cache
def _claim_statement(
    vendor: str, excluded: int, returning: bool, counted: bool, target: str = "id"
) -> str:
    """Parameters: started_at (now), lease end, the event (its id; or, ``target`` "slot", the
    workflow and now: the oldest event waiting for a slot of it), now, then ``excluded``
    workflow names (the limited ones, which only the locked path may claim), or, ``counted``,
    the event's workflow twice and its concurrency: the locked path claims while fewer
    attempts run."""
    events, status = sql.table(), sql.quote("status")
    attempts = sql.quote("attempts")
    columns = ", ".join(sql.quote(str(f.column)) for f in WebhookEvent._meta.concrete_fields)
    not_limited = (
        f" AND {sql.quote('workflow_name')} NOT IN ({', '.join(['%s'] * excluded)})"
        if excluded
        else ""
    )
    within = (
        f" AND {sql.quote('workflow_name')} = %s AND {_running_count()} < %s" if counted else ""
    )
    event = "%s" if target == "id" else f"({_next_for_slot_statement(vendor)})"
    return (
        f"UPDATE {events} SET {status} = '{RUNNING}', {sql.quote('started_at')} = %s, "  # noqa: S608
        f"{sql.quote('finished_at')} = NULL, {sql.quote('lease_expires_at')} = %s, "
        f"{sql.quote('waiting_for')} = '', {attempts} = {attempts} + 1 "
        f"WHERE {sql.quote('id')} = {event} AND {_due(events)} AND {_not_paused(events)} "
        f"AND {_key_free(events)}{not_limited}{within}"
        + (f" RETURNING {columns}" if returning else "")
    )


def _claim(
    event_id: int,
    now: datetime,
    exclude: Iterable[str] = (),
    within: tuple[str, int] | None = None,
) -> WebhookEvent | None:
    """The claim statement; with ``RETURNING`` the row comes back from it, else it is read.
    ``within``: the event's workflow and its concurrency, for the locked path (the caller
    holds the lock)."""
    connection = _connection()
    statement, params, returning = _claim_query(event_id, now, exclude, within)
    with sql.prepared_cursor(connection) as cursor:
        cursor.execute(statement, params)
        if returning:
            row = cursor.fetchone()
            return None if row is None else sql.event_from_row(row, connection)
        claimed = cursor.rowcount
    return WebhookEvent.objects.get(pk=event_id) if claimed else None


def _claim_query(
    event_id: int,
    now: datetime,
    exclude: Iterable[str] = (),
    within: tuple[str, int] | None = None,
) -> tuple[str, list[Any], bool]:
    """The claim statement and its parameters, and whether it returns the row."""
    vendor = _connection().vendor
    excluded = sorted(exclude)
    returning = sql.supports_returning(vendor)
    params = [_adapt(now), _adapt(now + lease_duration()), event_id, _adapt(now), *excluded]
    if within is not None:
        params += [within[0], *within]
    return _claim_statement(vendor, len(excluded), returning, within is not None), params, returning


def _claim_within(
    event_id: int, now: datetime, workflow: str, concurrency: int
) -> tuple[WebhookEvent | None, Refusal | None]:
    """The locked claim of a concurrency-limited workflow's event, and, refused, why (read
    after it: refusals are the rare case)."""
    if not sql.supports_returning(_connection().vendor):
        with transaction.atomic():
            _lock_workflow(workflow, read=False)
            event = _claim(event_id, now, within=(workflow, concurrency))
        return event, None if event is not None else _refusal(event_id, now)
    statement, params, _ = _claim_query(event_id, now, within=(workflow, concurrency))
    row = _locked_claim(workflow, statement, params)
    if row is not None:
        return sql.event_from_row(row, _connection()), None
    return None, _refusal(event_id, now)


def _locked_claim(workflow: str, statement: str, params: list[Any]) -> Sequence[Any] | None:
    """A claim statement with ``RETURNING``, run under the workflow's lock in a transaction of
    its own: on PostgreSQL one round trip for all of it (:func:`sql.locked_rows`). SQLite has
    no such locks: its one writer at a time is the lock, and one statement needs no
    transaction around it. Returns the claimed row, or None."""
    connection = _connection()
    if connection.vendor != "postgresql":
        with sql.prepared_cursor(connection) as cursor:
            cursor.execute(statement, params)
            return cursor.fetchone()
    lock = [(_advisory_lock_statement(connection.vendor), [workflow])]
    [row] = sql.locked_rows(connection, lock, [(statement, params)])
    return row


class Refusal(NamedTuple):
    """What a refused claim reads of its event (:func:`_refusal`)."""

    workflow: str
    source: str
    key: str | None
    key_held: bool
    paused: bool
    waiting_for: str
    lapsed: bool
    due: bool

    @classmethod
    def of(cls, row: Sequence[Any]) -> Refusal:
        """From a row of :func:`_refusal_statement` (the database's booleans as Python's)."""
        workflow, source, key, key_held, paused, waiting_for, lapsed, due = row
        return cls(
            workflow,
            source,
            key,
            bool(key_held),
            bool(paused),
            waiting_for,
            bool(lapsed),
            bool(due),
        )

    def turn_of(self, workflow: str) -> bool:
        """Nothing but a limit of ``workflow`` can hold it back now."""
        return (
            self.due
            and not (self.lapsed or self.key_held or self.paused)
            and self.workflow == workflow
        )


@functools.cache
def _refusal_statement(vendor: str) -> str:
    """Parameters: now, now, id."""
    events = sql.table()
    key = _col(events, "order_key")
    return (
        f"SELECT {sql.quote('workflow_name')}, {sql.quote('source')}, {key}, "  # noqa: S608
        f"{key} IS NOT NULL AND NOT {_key_free(events)}, NOT {_not_paused(events)}, "
        f"{sql.quote('waiting_for')}, {_lapsed(events)}, {_due(events)} "
        f"FROM {events} WHERE {sql.quote('id')} = %s"
    )


def _refusal(event_id: int, now: datetime) -> Refusal | None:
    with sql.prepared_cursor(_connection()) as cursor:
        cursor.execute(
            _refusal_statement(_connection().vendor), [_adapt(now), _adapt(now), event_id]
        )
        row = cursor.fetchone()
    return None if row is None else Refusal.of(row)


def _claim_refused(event_id: int, now: datetime, rounds: int = CLAIM_ROUNDS) -> WebhookEvent | None:
    """Why the claim refused event ``event_id``, and what follows from it."""
    if rounds <= 0:  # what refused it kept ending before it was flagged: round the queue
        _wake(event_id, "")
        return None
    why = _refusal(event_id, now)
    if why is None:
        return None
    if why.lapsed:
        # A redelivered task for an attempt whose worker is gone: take it back, then claim.
        if take_back(event_id, now, enqueue=False) == "running":
            return claim(event_id, timezone.now())
        return None
    if not why.due or why.paused:  # running, finished, its retry is later, or paused (a
        return None  # resume queues it again): this task has nothing to do
    if why.key_held:
        if _wait(event_id, "key", now, why):  # what holds it will wake it
            return None
    elif why.workflow in registry.limited_workflows():
        return _claim_limited(event_id, why.workflow, now, why=why, rounds=rounds)
    # What held it back ended since the claim (and found nothing to wake): once more.
    now = timezone.now()
    limited = registry.limited_workflows()
    return _claim(event_id, now, exclude=limited) or _claim_refused(event_id, now, rounds - 1)


@functools.cache
def _mark_statement(vendor: str) -> str:
    """Parameters: the reason, next_attempt_at (kept when NULL), id, now."""
    events, next_at = sql.table(), sql.quote("next_attempt_at")
    return (
        f"UPDATE {events} SET {sql.quote('waiting_for')} = %s, "  # noqa: S608
        f"{next_at} = COALESCE(%s, {next_at}) "
        f"WHERE {sql.quote('id')} = %s AND {_due(events)} AND {_not_paused(events)}"
    )


def _mark_waiting(
    event_id: int, reason: str, now: datetime, *, until: datetime | None = None
) -> bool:
    """Record why a due, unpaused event waits (and, for a rate, its start time)."""
    with sql.prepared_cursor(_connection()) as cursor:
        cursor.execute(
            _mark_statement(_connection().vendor), [reason, _adapt(until), event_id, _adapt(now)]
        )
        return bool(cursor.rowcount)


@functools.cache
def _flag_statement(vendor: str, reason: str) -> str:
    """Flag what holds an event back ``waited_on``: the events ahead of it, as a line. For its
    key, the events holding it (parameters: source, key, id, id); for a slot, its workflow's
    running attempts and the events waiting for a slot before it (parameters: the workflow,
    id): the slot passes down the line, each one handed it looking at its end for the next.
    Where rows are locked, they are locked in id order: two events waiting on overlapping
    holders never deadlock."""
    events = sql.table()
    if reason == "key":
        held = _holds("h", "%s", "%s", "%s")
    else:
        status, pk_col = _col("h", "status"), _col("h", "id")
        held = (
            f"h.{sql.quote('workflow_name')} = %s AND ({status} = '{RUNNING}' OR "
            f"({_col('h', 'waiting_for')} = 'concurrency' AND {pk_col} < %s))"
        )
    lock = " FOR UPDATE" if vendor == "postgresql" else ""
    pk = sql.quote("id")
    return (
        f"UPDATE {events} SET {sql.quote('waited_on')} = TRUE WHERE {pk} IN ("  # noqa: S608
        f"SELECT h.{pk} FROM {events} h WHERE {held} ORDER BY h.{pk}{lock})"
    )


def _wait(event_id: int, reason: str, now: datetime, why: Refusal) -> bool:
    """Mark the due event waiting for its key or for a concurrency slot, then flag what it
    waits on ``waited_on`` (:func:`_flag_statement`): the end of each of those looks for the
    events marked so (:func:`hand_on`). Returns whether
    anything was flagged; False when what it waited on ended meanwhile (or it was no longer
    due to be marked): the caller claims it once more.

    The mark is committed before the flag, and the flag and an outcome serialize on the
    flagged row: an outcome written first leaves its event out of the flag (no longer running,
    or finished), one written after the flag reads it back and then finds the mark. So each
    holder is either flagged, or had ended. Two statements in autocommit, outside any lock, so
    no transaction holds one event's row while it waits for another's.
    """
    if not _mark_waiting(event_id, reason, now):
        return False
    holders: list[Any] = (
        [why.source, why.key, event_id, event_id] if reason == "key" else [why.workflow, event_id]
    )
    with sql.prepared_cursor(_connection()) as cursor:
        cursor.execute(_flag_statement(_connection().vendor, reason), holders)
        return bool(cursor.rowcount)


def _claim_limited(
    event_id: int,
    workflow: str,
    now: datetime,
    *,
    why: Refusal | None = None,
    rounds: int = CLAIM_ROUNDS,
) -> WebhookEvent | None:
    """Claim an event of a workflow with a concurrency or rate limit.

    The workflow is locked for the decision (:func:`_lock_workflow`), so claims across all
    workers and nodes count running attempts (in the claim statement itself) and record
    starts one at a time. Refused for want of a slot, the event waits (:func:`_wait`, after the lock) for a
    running attempt's end to hand the slot on (:func:`hand_on`). One held back by the rate is
    given a wake time when the window will have room, spread ``1/N`` of the period apart so
    waiting events do not wake together. ``why``: the refusal already read, if any.
    """
    if rounds <= 0:  # what refused it kept ending before it was flagged: round the queue
        _wake(event_id, workflow)
        return None
    limits = registry.limits(workflow)
    if limits.rate is None and limits.concurrency is not None:
        event, why = _claim_within(event_id, now, workflow, limits.concurrency)
    else:
        with transaction.atomic():
            event, why = _rate_claim(event_id, workflow, now, why)
    if event is not None or why is None:
        return event
    if not why.turn_of(workflow):  # lapsed, held by its key, paused, or not due: not the lock's
        return _claim_refused(event_id, timezone.now(), rounds - 1)
    if limits.concurrency is None or _wait(event_id, "concurrency", now, why):
        return None
    # The running attempts ended between the count and the flag: once more.
    return _claim_limited(event_id, workflow, timezone.now(), rounds=rounds - 1)


def _rate_claim(
    event_id: int, workflow: str, now: datetime, why: Refusal | None
) -> tuple[WebhookEvent | None, Refusal | None]:
    """The claim of a rate-limited workflow's event, under the workflow's lock, in the
    caller's transaction (its window is read and written there). Returns the claimed event,
    or None and the refusal for the caller to act on; no refusal: it waits for the rate, or
    is gone."""
    limits = registry.limits(workflow)
    rate = limits.rate
    assert rate is not None
    control = _lock_workflow(workflow, read=True)
    assert control is not None
    # Judged no earlier than the lock is held: a claim that waited for it behind others would
    # otherwise judge (and record) its start at the time it began to wait, in a window that
    # others have filled since, and a later claim would let that early start leave the window
    # too soon.
    now = max(now, timezone.now())
    why = why or _refusal(event_id, now)
    if why is None or not why.turn_of(workflow):
        return None, why
    starts = [t for t in control.rate_starts if t > now.timestamp() - rate.per_seconds]
    if len(starts) >= rate.count:
        _defer_for_rate(control, starts, rate, event_id, now, woken=why.waiting_for == "rate")
        return None, None
    within = None if limits.concurrency is None else (workflow, limits.concurrency)
    if (event := _claim(event_id, now, within=within)) is not None:
        control.rate_starts = [*starts, now.timestamp()]
        control.save(update_fields=["rate_starts"])
        return event, None
    return None, _refusal(event_id, now)


def _defer_for_rate(
    control: ProcessingControl,
    starts: list[float],
    rate: Rate,
    event_id: int,
    now: datetime,
    *,
    woken: bool,
) -> None:
    """Mark the event to wait for the rate and wake it when a start leaves the window. A fresh
    event queues behind those already waiting (``rate_next_at``); a woken one that found the
    window full again (another took the start) only waits for the next start to leave."""
    room_at = datetime.fromtimestamp(starts[-rate.count] + rate.per_seconds, tz=UTC)
    wake = room_at if woken else max(room_at, control.rate_next_at or room_at)
    if not _mark_waiting(event_id, "rate", now, until=wake):
        return
    if not woken:
        control.rate_next_at = wake + timedelta(seconds=rate.interval)
        control.save(update_fields=["rate_next_at"])
    transaction.on_commit(lambda: queue.enqueue_at(wake, event_id))


def _lock_workflow(workflow: str, *, read: bool) -> ProcessingControl | None:
    """Lock the workflow until the transaction ends.

    Without ``read`` (the claims of a concurrency limit): on PostgreSQL a transaction-level
    advisory lock on the workflow's name (:func:`_advisory_lock_statement`), on SQLite the write
    transaction itself (``IMMEDIATE``: one at a time). With ``read`` (the claims of a rate,
    which read and write its window): the workflow's control row, locked and returned (made
    on first use). A workflow's claims all take the same one of the two.
    """
    if not read:
        if _connection().vendor == "postgresql":
            with sql.prepared_cursor(_connection()) as cursor:
                cursor.execute(_advisory_lock_statement(_connection().vendor), [workflow])
        return None
    locked = ProcessingControl.objects.select_for_update()
    try:
        return locked.get(kind=ControlKind.WORKFLOW, name=workflow)
    except ProcessingControl.DoesNotExist:
        ProcessingControl.objects.get_or_create(kind=ControlKind.WORKFLOW, name=workflow)
        return locked.get(kind=ControlKind.WORKFLOW, name=workflow)


#: The first key of the advisory locks on workflows ("whks"), so that they do not meet the
#: project's own advisory locks.
LOCK_NAMESPACE = int.from_bytes(b"whks", "big")


@functools.cache
def _advisory_lock_statement(vendor: str) -> str:
    """Lock a workflow's claims until the transaction ends. An advisory lock, not the control
    row's: it needs no row to exist first (a statement less in every claim) and writes
    nothing. Two workflows whose names hash alike share a lock: their claims wait for each
    other, nothing else. Parameters: the workflow."""
    return f"SELECT pg_advisory_xact_lock({LOCK_NAMESPACE}, hashtext(%s))"


@functools.cache
def _running_statement(vendor: str) -> str:
    """Parameters: the workflow."""
    return f"SELECT {_running_count()}"


def _running(workflow: str) -> int:
    with sql.prepared_cursor(_connection()) as cursor:
        cursor.execute(_running_statement(_connection().vendor), [workflow])
        return int(cursor.fetchone()[0])


# Outcomes


def attempt_entry(
    event: WebhookEvent, finished: datetime, outcome: str, **extra: Any
) -> dict[str, Any]:
    """The attempt's line in the event's history."""
    started = event.started_at or finished
    return {
        "attempt": event.attempts,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "duration_ms": round((finished - started).total_seconds() * 1000, 1),
        "outcome": outcome,
        **extra,
    }


#: What an attempt's outcome writes, in the order of :func:`_finish_statement`'s values.
FINISH_FIELDS = [
    f
    for f in WebhookEvent._meta.concrete_fields
    if f.name
    in {
        "status",
        "result",
        "error",
        "finished_at",
        "next_attempt_at",
        "history",
        "lease_expires_at",
    }
]


@functools.cache
def _finish_statement(vendor: str, returning: bool) -> str:
    """Record an attempt's outcome, unless its lease was taken back (the event is no longer
    ``running`` with this attempt number).

    On PostgreSQL the transaction that writes it commits without waiting for the WAL flush
    (``synchronous_commit`` off for it alone, set by the statement itself: no extra round
    trip). That halves the flushes an attempt waits for, and costs nothing the lifecycle
    promises: the claim, which is what keeps a second worker off a running event, is flushed
    before the workflow starts; an outcome lost with a crashed database server (the last
    fraction of a second of them, unless a later commit flushed it) leaves the event
    ``running`` with a lease that lapses, and it runs again, as after a worker killed between
    its workflow's end and this write. The next commit on the server flushes it in any case.

    Parameters: the values of :data:`FINISH_FIELDS`, id, attempts.
    """
    assignments = ", ".join(f"{sql.quote(str(f.column))} = %s" for f in FINISH_FIELDS)
    statement = (
        f"UPDATE {sql.table()} SET {assignments} "  # noqa: S608
        f"WHERE {sql.quote('id')} = %s AND {sql.quote('status')} = '{RUNNING}' "
        f"AND {sql.quote('attempts')} = %s"
    )
    if vendor == "postgresql":
        statement = (
            "WITH unflushed AS (SELECT set_config('synchronous_commit', 'off', true)) "  # noqa: S608
            f"{statement} AND EXISTS (SELECT 1 FROM unflushed)"
        )
    if returning:
        statement += f" RETURNING {sql.quote('waited_on')}"
    return statement


def _finish(event: WebhookEvent, **fields: Any) -> bool:
    """Write the attempt's outcome (one precompiled UPDATE); False if it was taken back. Reads
    back ``waited_on``, which tells :func:`hand_on` whether to look (where the database cannot
    return it, it looks)."""
    for name, value in {**fields, "lease_expires_at": None}.items():
        setattr(event, name, value)
    connection = _connection()
    values = [f.get_db_prep_save(getattr(event, f.attname), connection) for f in FINISH_FIELDS]
    returning = sql.supports_returning(connection.vendor)
    with sql.prepared_cursor(connection) as cursor:
        statement = _finish_statement(connection.vendor, returning)
        cursor.execute(statement, [*values, event.pk, event.attempts])
        if not returning:
            event.waited_on = True
            return bool(cursor.rowcount)
        row = cursor.fetchone()
    if row is not None:
        event.waited_on = bool(row[0])
    return row is not None


#: What recording an outcome returns when the attempt's lease had been taken back meanwhile:
#: nothing was written, and nothing is handed on.
TAKEN_BACK = "taken back"


def record_success(event: WebhookEvent, result: Any) -> str:
    """Store what the workflow returned; returns ``"succeeded"``, ``"dead"`` when the result
    cannot be stored (:func:`why_unstorable`), or :data:`TAKEN_BACK`. The caller hands on
    (:func:`hand_on`).

    An unstorable result ends the event ``dead`` at once, not ``failed`` with a retry: the
    workflow has finished and done its work, and running it again would repeat its effects
    only to return the same value. (Left to the final UPDATE, PostgreSQL's refusal would leave
    the event ``running`` and it would be taken back and run again and again.)
    """
    problem = why_unstorable(result)
    if problem is not None:
        message = (
            f"The workflow finished, but its result cannot be stored: {problem}. It is not run "
            "again, so that its effects are not repeated; fix what it returns, then replay the "
            "event."
        )
        return _record_failed_attempt(event, error=message, summary=message, will_retry=False)
    finished = timezone.now()
    if not _finish(
        event,
        status=EventStatus.SUCCEEDED,
        result=result,
        error="",
        finished_at=finished,
        next_attempt_at=None,
        history=[*event.history, attempt_entry(event, finished, "succeeded")],
    ):
        return TAKEN_BACK
    signals.event_succeeded.send(sender=WebhookEvent, event=event, result=result)
    return "succeeded"


#: A NUL character as ``json.dumps`` writes it: ``\u0000`` after an even number of backslashes
#: (an odd number means the text held a backslash followed by the letters ``u0000``).
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def why_unstorable(result: Any) -> str | None:
    """Why ``result`` cannot be stored as the event's JSON, or None if it can.

    One rule for every supported database, so a workflow that works on the embedded SQLite
    does not start failing on PostgreSQL: JSON without NaN or Infinity (``jsonb`` refuses them),
    and no string holding a NUL character or a lone surrogate (neither ``jsonb`` nor UTF-8 can).
    """
    try:
        # ensure_ascii=False keeps every character but the control ones as itself, so a lone
        # surrogate fails the encoding below and a NUL shows as its escape.
        text = json.dumps(result, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"it is not JSON ({printable(f'{type(exc).__name__}: {exc}')})"
    if _ESCAPED_NUL.search(text):
        return "a string in it holds a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a string in it holds a lone surrogate, which is not valid Unicode"
    return None


def _storable_text(text: str) -> str:
    """``text`` with what no database text column holds (NUL, lone surrogates) escaped.

    An exception's message is the workflow's (or its inputs') text: stored unescaped, a NUL
    in it would make PostgreSQL refuse the failure itself and strand the event ``running``.
    """
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def retry_delay(attempt: int) -> float:
    """``RETRY_BACKOFF`` doubled per attempt, with ±20 % jitter so retries do not stampede."""
    base = float(webhook_settings.RETRY_BACKOFF) * 2 ** (attempt - 1)
    return base * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


def record_failure(event: WebhookEvent, exc: BaseException) -> str:
    """A raising workflow: ``failed`` and retried after the backoff, or ``dead`` when that was
    the last attempt; returns which (or :data:`TAKEN_BACK`). The caller hands on."""
    return _record_failed_attempt(
        event,
        error=_storable_text("".join(traceback.format_exception(exc, limit=-TRACEBACK_FRAMES))),
        summary=f"{type(exc).__name__}: {exc}",
        will_retry=event.attempts < webhook_settings.MAX_ATTEMPTS,
    )


def _record_failed_attempt(
    event: WebhookEvent, *, error: str, summary: str, will_retry: bool
) -> str:
    """End the attempt ``failed``: a retry scheduled (or queued at once), or the event ``dead``.

    ``error`` (stored as the event's error) must be storable text; ``summary`` goes into the
    attempt's history entry and the log line, escaped here.
    """
    finished = timezone.now()
    summary = printable(summary, limit=500)
    delay = retry_delay(event.attempts) if will_retry else 0.0
    if delay < 1:  # below the scheduler's resolution: straight back on the queue
        delay = 0.0
    next_attempt = finished + timedelta(seconds=delay) if will_retry else None
    with transaction.atomic():
        finished_ok = _finish(
            event,
            status=EventStatus.FAILED if will_retry else EventStatus.DEAD,
            error=error,
            finished_at=finished,
            next_attempt_at=next_attempt,
            history=[*event.history, attempt_entry(event, finished, "failed", error=summary)],
        )
        if finished_ok and next_attempt is not None:
            if delay == 0:
                queue.enqueue_in_transaction(event.pk, workflow=event.workflow_name)
            else:
                queue.schedule_retry(event.pk, event.attempts + 1, next_attempt)
    if not finished_ok:
        return TAKEN_BACK
    logger.warning(
        "Webhook event %s (%s:%s) attempt %s failed: %s%s",
        event.pk,
        printable(event.source),
        printable(event.webhook_id),
        event.attempts,
        summary,
        f"; retry in {delay:.0f}s" if will_retry else "; now dead",
    )
    signals.event_failed.send(sender=WebhookEvent, event=event, error=error, will_retry=will_retry)
    return "failed" if will_retry else "dead"


# Handing on: what the end of an attempt lets start


def hand_on(
    event: WebhookEvent, *, take: bool = False, always: bool = False
) -> WebhookEvent | None:
    """Start what waited for this attempt to end: the next event of its key (once the event is
    finished: a ``failed`` one keeps holding its key) and, for a concurrency-limited workflow,
    the oldest event waiting for a slot. One each: no herd of re-enqueues. Only where a
    waiting event flagged this one (``waited_on``, read back with the outcome), or ``always``
    (a take-back, which does not read the flag): an attempt nobody waited on looks for
    nothing.

    With ``take``, the first of them is claimed here and returned, for the caller's worker to
    run next: a key's events then follow one another without going round the queue (where
    each would wait behind the whole backlog). The other is woken: put on the queue.
    """
    if not (event.waited_on or always):
        return None
    taken = None
    if event.order_key is not None and event.status in (EventStatus.SUCCEEDED, EventStatus.DEAD):
        taken = _next_of_key(event.source, event.order_key, take=take)
    if registry.limits(event.workflow_name).concurrency is not None:
        taken = _next_for_slot(event.workflow_name, take=take and taken is None) or taken
    return taken


@functools.cache
def _next_of_key_statement(vendor: str) -> str:
    """The key's oldest unfinished event, if a refused claim marked it. Parameters: source,
    key, now."""
    events = sql.table()
    return (
        f"SELECT {sql.quote('id')}, {sql.quote('workflow_name')} FROM {events} "  # noqa: S608
        f"WHERE {sql.quote('id')} = (SELECT {sql.quote('id')} FROM {events} k "
        f"WHERE k.{sql.quote('source')} = %s AND k.{sql.quote('order_key')} = %s "
        f"AND {_unfinished('k')} ORDER BY {sql.quote('id')} LIMIT 1) "
        f"AND {sql.quote('waiting_for')} <> '' AND {_due(events)}"
    )


def _next_of_key(source: str, key: str, *, take: bool) -> WebhookEvent | None:
    """Claim (with ``take``) or wake the key's next event. A claim refused here (its
    workflow's limit is reached, it is paused) left it waiting as any refusal does."""
    with sql.prepared_cursor(_connection()) as cursor:
        cursor.execute(
            _next_of_key_statement(_connection().vendor), [source, key, _adapt(timezone.now())]
        )
        row = cursor.fetchone()
    if row is None:
        return None
    event_id, workflow = row
    if take:
        return claim(event_id, timezone.now(), workflow)
    _wake(event_id, workflow)
    return None


@functools.cache
def _next_for_slot_statement(vendor: str) -> str:
    """The oldest event of a workflow marked for a concurrency slot that nothing else holds
    back. Parameters: workflow, now."""
    events = sql.table()
    return (
        f"SELECT {sql.quote('id')} FROM {events} WHERE {sql.quote('workflow_name')} = %s "  # noqa: S608
        f"AND {sql.quote('waiting_for')} = 'concurrency' AND {_due(events)} "
        f"AND {_not_paused(events)} AND {_key_free(events)} ORDER BY {sql.quote('id')} LIMIT 1"
    )


def _next_for_slot(workflow: str, *, take: bool) -> WebhookEvent | None:
    """The oldest event marked for a slot of the workflow, claimed for this worker with
    ``take`` (where the workflow has no rate: a start would need its window), else woken.

    The take is one locked claim of whichever event is oldest then (on PostgreSQL one round
    trip). What it did not claim (another claim took the slot first, or nothing waits) is
    looked for under the lock and woken, so that the slot goes to exactly one.
    """
    limits = registry.limits(workflow)
    connection = _connection()
    if (
        take
        and limits.rate is None
        and limits.concurrency is not None
        and sql.supports_returning(connection.vendor)
    ):
        now = _adapt(timezone.now())
        lease_end = _adapt(timezone.now() + lease_duration())
        params = [now, lease_end, workflow, now, now, workflow, workflow, limits.concurrency]
        statement = _claim_statement(connection.vendor, 0, True, True, "slot")
        row = _locked_claim(workflow, statement, params)
        if row is not None:
            return sql.event_from_row(row, connection)
    with transaction.atomic():
        _lock_workflow(workflow, read=False)
        with sql.prepared_cursor(connection) as cursor:
            cursor.execute(
                _next_for_slot_statement(connection.vendor), [workflow, _adapt(timezone.now())]
            )
            row = cursor.fetchone()
        if row is not None:
            _wake(row[0], workflow)
    return None


def _wake(event_id: int, workflow: str) -> None:
    """Clear a waiting event's mark and put it on the queue (once: the mark is the token)."""
    with transaction.atomic():
        woken = (
            WebhookEvent.objects.filter(pk=event_id)
            .exclude(waiting_for="")
            .update(waiting_for="", next_attempt_at=timezone.now())
        )
        if woken:
            queue.enqueue_in_transaction(event_id, workflow=workflow)


# Leases


@functools.cache
def _renew_statement(vendor: str) -> str:
    """Parameters: the new lease end, id, attempts."""
    return (
        f"UPDATE {sql.table()} SET {sql.quote('lease_expires_at')} = %s "  # noqa: S608
        f"WHERE {sql.quote('id')} = %s AND {sql.quote('status')} = '{RUNNING}' "
        f"AND {sql.quote('attempts')} = %s"
    )


def renew_leases(held: dict[int, int], now: datetime) -> list[int]:
    """Extend the lease of each attempt in ``held`` (event id → attempt number); returns the
    events whose lease was no longer theirs to renew (finished meanwhile, or taken back)."""
    until = _adapt(now + lease_duration())
    lost = []
    with sql.prepared_cursor(_connection()) as cursor:
        for event_id, attempts in held.items():
            cursor.execute(_renew_statement(_connection().vendor), [until, event_id, attempts])
            if not cursor.rowcount:
                lost.append(event_id)
    return lost


@functools.cache
def _take_back_statement(vendor: str) -> str:
    """Parameters: status, finished_at, next_attempt_at, error, history, id, attempts, now."""
    events = sql.table()
    assignments = ", ".join(
        f"{sql.quote(name)} = %s"
        for name in ("status", "finished_at", "next_attempt_at", "error", "history")
    )
    return (
        f"UPDATE {events} SET {assignments}, {sql.quote('lease_expires_at')} = NULL "  # noqa: S608
        f"WHERE {sql.quote('id')} = %s AND {sql.quote('attempts')} = %s AND {_lapsed(events)}"
    )


def take_back(event_id: int, now: datetime, *, enqueue: bool = True) -> str | None:
    """A ``running`` event whose lease lapsed: its worker is gone (killed, crashed, its node
    lost). Back to ``pending`` (and on the queue, unless the caller claims it at once), or
    ``dead`` if that was its last attempt; the lost attempt goes into its history. Returns
    ``"running"`` or ``"dead"``, or None if the lease was live or the attempt ended meanwhile.
    """
    event = WebhookEvent.objects.filter(pk=event_id, status=EventStatus.RUNNING).first()
    if event is None:
        return None
    out_of_attempts = event.attempts >= webhook_settings.MAX_ATTEMPTS
    entry = attempt_entry(
        event,
        now,
        "lost",
        error="Its worker stopped renewing the lease (killed, crashed or cut off).",
        lease_lapsed=True,
    )
    connection = _connection()
    history = WebhookEvent._meta.get_field("history").get_db_prep_save(
        [*event.history, entry], connection
    )
    error = (
        "The worker running the last attempt stopped (killed or crashed)."
        if out_of_attempts
        else event.error
    )
    status = EventStatus.DEAD if out_of_attempts else EventStatus.PENDING
    params = [
        status.value,
        _adapt(now if out_of_attempts else None),
        _adapt(None if out_of_attempts else now),
        error,
        history,
        event_id,
        event.attempts,
        _adapt(now),
    ]
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_take_back_statement(connection.vendor), params)
            taken = bool(cursor.rowcount)
        if taken and enqueue and not out_of_attempts:
            queue.enqueue_in_transaction(event_id)
    if not taken:
        return None
    logger.warning(
        "Webhook event %s attempt %s lost its worker (lease lapsed): %s.",
        event_id,
        event.attempts,
        "now dead" if out_of_attempts else "running it again",
    )
    event.status = status
    hand_on(event, always=True)  # its slot is free; a dead event releases its key
    return "dead" if out_of_attempts else "running"


@functools.cache
def _lapsed_statement(vendor: str) -> str:
    """Parameters: now, the most ids to return."""
    events = sql.table()
    return (
        f"SELECT {sql.quote('id')} FROM {events} WHERE {_lapsed(events)} "  # noqa: S608
        f"ORDER BY {sql.quote('id')} LIMIT %s"
    )


def lapsed_events(now: datetime, limit: int = RECOVERY_BATCH) -> list[int]:
    with _connection().cursor() as cursor:
        cursor.execute(_lapsed_statement(_connection().vendor), [_adapt(now), limit])
        return [row[0] for row in cursor.fetchall()]


def take_back_lapsed(now: datetime) -> dict[str, int]:
    """Take back every lapsed lease (a worker's heartbeat, a starting cluster, recovery)."""
    counts = {"running": 0, "dead": 0}
    for event_id in lapsed_events(now):
        if outcome := take_back(event_id, now):
            counts[outcome] += 1
    return counts


# Recovery and requeueing


@functools.cache
def _stranded_statement(vendor: str, status: str) -> str:
    """Claimable events of ``status`` whose task is overdue: ``pending`` and last queued (or
    received) before the cutoff, or ``failed`` with its retry time before it. Parameters: the
    cutoff, the most ids to return."""
    events = sql.table()
    queued = sql.queued_at() if status == PENDING else sql.quote("next_attempt_at")
    return (
        f"SELECT {sql.quote('id')} FROM {events} WHERE {sql.quote('status')} = '{status}' "  # noqa: S608
        f"AND {queued} < %s AND {_not_paused(events)} AND {_key_free(events)} "
        f"ORDER BY {sql.quote('id')} LIMIT %s"
    )


def stranded_events(status: str, cutoff: datetime) -> list[int]:
    with _connection().cursor() as cursor:
        cursor.execute(
            _stranded_statement(_connection().vendor, status), [_adapt(cutoff), RECOVERY_BATCH]
        )
        return [row[0] for row in cursor.fetchall()]


def recover(dry_run: bool = False) -> dict[str, int]:
    """Put events that fell between the queue's cracks back on it; returns counts per kind.

    - ``pending`` longer than ``RECOVERY_GRACE`` since it was (last) queued, with nothing
      holding it back: the enqueue was lost (broker down after commit, a Redis task popped by
      a worker that died), or the wake of a waiting event died with its process;
    - ``failed`` whose retry is overdue by the grace: its schedule was lost;
    - ``running`` whose lease lapsed: its worker is gone. Run again, or ``dead`` if that was
      the last attempt (workers take these back within seconds; this is the safety net).
    """
    now = timezone.now()
    overdue = now - timedelta(seconds=webhook_settings.RECOVERY_GRACE)
    pending, failed = stranded_events(PENDING, overdue), stranded_events(FAILED, overdue)
    if dry_run:
        return {
            "pending": len(pending),
            "failed": len(failed),
            "running": len(lapsed_events(now)),
            "dead": 0,
        }
    counts = {
        "pending": sum(requeue(event_id, PENDING, now) for event_id in pending),
        "failed": sum(requeue(event_id, FAILED, now) for event_id in failed),
        **take_back_lapsed(now),
    }
    if any(counts.values()):
        logger.warning("Recovered stranded webhook events: %s", counts)
    return counts


def requeue(event_id: int, status: str, now: datetime) -> bool:
    """Enqueue a ``pending`` or overdue ``failed`` event again, at most once per grace period.

    The conditional UPDATE moves ``next_attempt_at`` to ``now`` only if the event is still
    overdue by the grace, so concurrent recoveries (every worker's heartbeat, the schedule, a
    burst of duplicate deliveries) enqueue it once: the first one moves it, the others find
    it no longer overdue.
    """
    overdue = now - timedelta(seconds=webhook_settings.RECOVERY_GRACE)
    still_overdue = Q(next_attempt_at__lt=overdue)
    if status == PENDING:
        still_overdue |= Q(next_attempt_at__isnull=True, received_at__lt=overdue)
    with transaction.atomic():
        updated = WebhookEvent.objects.filter(still_overdue, pk=event_id, status=status).update(
            next_attempt_at=now, waiting_for=""
        )
        if updated:
            queue.enqueue_in_transaction(event_id)
    return bool(updated)


def requeue_waiting(kind: str, name: str) -> int:
    """Put every due event of a source or workflow back on the queue, oldest first (a resume);
    returns how many. In batches: a long pause may have left a large backlog."""
    field = "source" if kind == ControlKind.SOURCE else "workflow_name"
    now = timezone.now()
    due = WebhookEvent.objects.filter(**{field: name}).filter(
        status__in=[EventStatus.PENDING, EventStatus.FAILED]
    )
    ids = [
        pk
        for pk, status, next_at in due.order_by("pk").values_list("pk", "status", "next_attempt_at")
        if status == PENDING or (next_at is not None and next_at <= now)
    ]
    for start in range(0, len(ids), REQUEUE_BATCH):
        batch = ids[start : start + REQUEUE_BATCH]
        with transaction.atomic():
            WebhookEvent.objects.filter(pk__in=batch).update(next_attempt_at=now, waiting_for="")
            for event_id in batch:
                queue.enqueue_in_transaction(event_id)
    return len(ids)


# What the operator sees


@functools.cache
def _reason_statement(vendor: str) -> str:
    """What holds event ``e`` back: the first paused control of its source or workflow, the
    oldest event holding its key, and what the last refused claim marked. Parameters: id."""
    pk = sql.quote("id")
    return (
        f"SELECT (SELECT c.{sql.quote('kind')} || ' ' || c.{sql.quote('name')} {_pausing('e')} "  # noqa: S608
        f"ORDER BY c.{sql.quote('kind')} LIMIT 1), "
        f"(SELECT k.{pk} {_key_holders('e')} ORDER BY k.{pk} LIMIT 1), "
        f"e.{sql.quote('waiting_for')} FROM {sql.table()} e WHERE e.{pk} = %s"
    )


def waiting_reason(event: WebhookEvent) -> str | None:
    """Why a ``pending`` or ``failed`` event is not running, in words; None when nothing holds
    it back (it is queued, or waits for its retry time)."""
    if event.status not in (EventStatus.PENDING, EventStatus.FAILED):
        return None
    with _connection().cursor() as cursor:
        cursor.execute(_reason_statement(_connection().vendor), [event.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    pause, holder, waiting_for = row
    if pause is not None:
        kind, name = pause.split(" ", 1)
        return f"paused: {kind} {name!r}"
    if holder is not None:
        return f"held by event {holder} (key {event.order_key!r})"
    limits = registry.limits(event.workflow_name)
    if waiting_for == "concurrency" and limits.concurrency is not None:
        running = _running(event.workflow_name)
        if running >= limits.concurrency:
            return (
                f"waiting for the concurrency limit of {event.workflow_name!r} ({running} running)"
            )
    if waiting_for == "rate" and limits.rate is not None:
        return f"waiting for the rate limit of {event.workflow_name!r}"
    return None
