"""Bulk replay by filter (contract §10): one service behind ``manage.py replay_webhook_events``,
``POST /webhooks/api/replays/`` and the admin's *Replay all N matching*.

A replay is a :class:`~webhooks_app.models.WebhookReplay` record: its filters, the count they
matched when it was created and the highest matching id then (the selection), and how far it
has got. :func:`run_replay` works through the selection in batches of ascending id, each batch
a short transaction that reads ids only (bounded memory on any table) and hands them to
:func:`services.replay_events`, the same single-event replay the admin and the API use; so
replayed events go through the claim like any other and obey pause, ordering and limits.

Running it twice at once (a task delivered twice, the recovery's re-enqueue, a command and a
worker) queues nothing twice: each batch starts by locking the replay's row and reading its
cursor, and moves the cursor past the batch in the same transaction.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, Max, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from webhooks_app import queue, services
from webhooks_app.conf import webhook_settings
from webhooks_app.models import EventStatus, ReplayState, WebhookEvent, WebhookReplay

#: Events per batch: one transaction, one id list in memory, one progress update.
BATCH_SIZE = 1000
#: What a replay may select: everything but ``running`` (an attempt is still going on).
REPLAYABLE_STATUSES: tuple[str, ...] = tuple(
    status for status in EventStatus.values if status != EventStatus.RUNNING
)
DEFAULT_STATUSES = [EventStatus.DEAD.value]
#: The filters, each with the event field it compares (``since``/``until``: ``received_at``).
FILTER_NAMES = ("source", "workflow", "status", "event_type", "since", "until")
_TEXT_FIELDS = {"source": "source", "workflow": "workflow_name", "event_type": "event_type"}
MAX_TEXT_LENGTH = 255
_AGO = re.compile(r"([0-9]{1,9})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class InvalidFilter(ValueError):
    """Filters that select nothing well defined; the message names the filter and says why."""


def _shown(value: object) -> str:
    """A value as an error message quotes it: short, whatever was sent."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidFilter(f"{name}: expected a non-empty string, got {_shown(value)}.")
    # PostgreSQL refuses NUL in a string literal, and no driver can send a lone surrogate
    # (JSON's "\ud800"): a clear error here, not a DataError or UnicodeEncodeError later.
    if "\x00" in value or len(value) > MAX_TEXT_LENGTH or _unencodable(value):
        raise InvalidFilter(
            f"{name}: at most {MAX_TEXT_LENGTH} characters of text, without NUL: {_shown(value)}."
        )
    return value


def _unencodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _statuses(value: object) -> list[str]:
    given = [value] if isinstance(value, str) else value
    if not isinstance(given, list | tuple) or not given:
        raise InvalidFilter(f"status: expected one status or a list of them, got {_shown(value)}.")
    statuses: list[str] = []
    for status in given:
        if status == EventStatus.RUNNING:
            raise InvalidFilter(
                "status: running events are never replayed (their attempt is still going on)."
            )
        if not isinstance(status, str) or status not in REPLAYABLE_STATUSES:
            raise InvalidFilter(
                f"status: unknown status {_shown(status)}; use one or more of "
                f"{', '.join(REPLAYABLE_STATUSES)}."
            )
        if status not in statuses:
            statuses.append(status)
    return statuses


def parse_when(name: str, value: object, now: datetime | None = None) -> datetime:
    """``since``/``until`` as a time in UTC: ISO 8601 (a date is its midnight; without an
    offset, the current time zone) or a time ago: ``30s``, ``30m``, ``6h``, ``2d``."""
    if not isinstance(value, str):
        raise InvalidFilter(f"{name}: expected a string, got {_shown(value)}.")
    text = value.strip()
    if ago := _AGO.fullmatch(text):
        try:
            return (now or timezone.now()) - timedelta(seconds=int(ago[1]) * _UNIT[ago[2]])
        except OverflowError:
            raise InvalidFilter(
                f"{name}: {_shown(value)} reaches back before the year 1."
            ) from None
    try:
        moment = parse_datetime(text)
        if moment is None and (day := parse_date(text)) is not None:
            moment = datetime.combine(day, datetime.min.time())
    except ValueError:  # well formed but impossible: month 13, hour 25
        moment = None
    if moment is None:
        raise InvalidFilter(
            f"{name}: {_shown(value)} is neither an ISO 8601 time (2026-01-15T09:30:00Z, "
            "2026-01-15) nor a time ago (30m, 6h, 2d)."
        )
    aware = timezone.make_aware(moment) if timezone.is_naive(moment) else moment
    try:
        # In UTC, as stored: an offset that carries it past year 1 or 9999 is refused here, not
        # by the database driver.
        return aware.astimezone(UTC)
    except OverflowError:
        raise InvalidFilter(f"{name}: {_shown(value)} is out of range.") from None


def parse_filters(raw: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """Check and normalise filters as the command, the API and the admin receive them.

    Returns the form stored on the replay: ``status`` always (a list, default ``["dead"]``),
    the other filters only when given, times resolved to ISO 8601 (a relative ``6h`` means
    six hours before now, so the selection does not drift while the replay runs). ``None``
    means not given. Parsing the result again returns it unchanged.
    """
    if not isinstance(raw, Mapping):
        raise InvalidFilter(f"The filters must be a JSON object, got {_shown(raw)}.")
    unknown = sorted(str(name) for name in raw if name not in FILTER_NAMES)
    if unknown:
        raise InvalidFilter(
            f"Unknown filter {_shown(unknown[0])}; the filters are {', '.join(FILTER_NAMES)}."
        )
    given = {name: value for name, value in raw.items() if value is not None}
    filters: dict[str, Any] = {"status": _statuses(given.get("status", DEFAULT_STATUSES))}
    for name in _TEXT_FIELDS:
        if name in given:
            filters[name] = _text(name, given[name])
    now = now or timezone.now()
    times = {
        name: parse_when(name, given[name], now) for name in ("since", "until") if name in given
    }
    if "since" in times and "until" in times and times["until"] < times["since"]:
        raise InvalidFilter(
            f"until ({times['until'].isoformat()}) is before since ({times['since'].isoformat()})."
        )
    filters.update({name: moment.isoformat() for name, moment in times.items()})
    return filters


def matching_events(filters: Mapping[str, Any]) -> QuerySet[WebhookEvent]:
    """The events ``filters`` (as :func:`parse_filters` returns them) select now; what
    :func:`services.replay_events` would leave alone (no workflow) is not among them, so a
    count of this is the count a replay queues."""
    events = WebhookEvent.objects.filter(status__in=filters["status"]).exclude(workflow_name="")
    for name, field in _TEXT_FIELDS.items():
        if name in filters:
            events = events.filter(**{field: filters[name]})
    if "since" in filters:
        events = events.filter(received_at__gte=parse_datetime(filters["since"]))
    if "until" in filters:
        events = events.filter(received_at__lt=parse_datetime(filters["until"]))
    return events.order_by()


def count_matching(filters: Mapping[str, Any]) -> int:
    """The dry run: how many events a replay with these filters would queue now."""
    return matching_events(parse_filters(filters)).count()


def describe(filters: Mapping[str, Any]) -> str:
    """Normalised filters in a line, for the command's output and the admin's pages."""
    parts = [f"status {', '.join(filters['status'])}"]
    parts += [
        f"{name.replace('_', ' ')} {filters[name]}" for name in _TEXT_FIELDS if name in filters
    ]
    parts += [
        f"received {word} {filters[name]}"
        for name, word in (("since", "since"), ("until", "before"))
        if name in filters
    ]
    return "; ".join(parts)


def start_replay(
    filters: Mapping[str, Any], *, by: str = "", background: bool = True
) -> WebhookReplay:
    """Create the replay of what ``filters`` select now and, with ``background``, put its job
    on the queue (in the same transaction where the broker allows it); returns the record.

    A selection of nothing is a replay of 0, finished at once. Without ``background`` the
    caller runs it (:func:`run_replay`), as the command does in its own process.
    """
    normal = parse_filters(filters)
    # Counted outside the transaction: on SQLite it holds the write lock from its start.
    selected = matching_events(normal).aggregate(count=Count("pk"), last=Max("pk"))
    empty = not selected["count"]
    with transaction.atomic():
        replay = WebhookReplay.objects.create(
            filters=normal,
            count=selected["count"],
            last_event_id=selected["last"] or 0,
            created_by=by,
            state=ReplayState.FINISHED if empty else ReplayState.RUNNING,
            finished_at=timezone.now() if empty else None,
        )
        if background and not empty:
            queue.enqueue_replay(replay.pk, after=replay.cursor)
    return replay


def run_replay(
    replay_id: int,
    *,
    after: int | None = None,
    seconds: float | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Callable[[WebhookReplay], None] | None = None,
) -> WebhookReplay:
    """Queue the replay's events batch by batch until it is finished or cancelled; returns the
    record as it was left.

    ``seconds``: stop after the batch that passes this time and continue in a new job
    (:func:`queue.enqueue_replay`), so a task runner's timeout never stops a replay halfway
    through a batch; the new job waits behind the events just queued, which keeps the broker
    from holding much more than one slice's events at once. ``after``: the cursor the job was
    queued with; a job that finds the cursor moved since exits, because whoever moved it
    carries on (so duplicate jobs die out instead of multiplying). ``progress`` is called
    after each batch with the updated record.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    replay = WebhookReplay.objects.get(pk=replay_id)
    if after is not None and replay.cursor != after:
        return replay
    while replay.state == ReplayState.RUNNING:
        replay, queued_a_batch = _next_batch(replay_id, batch_size)
        if not queued_a_batch:
            break
        if progress:
            progress(replay)
        if deadline is not None and time.monotonic() >= deadline:
            queue.enqueue_replay(replay_id, after=replay.cursor)
            break
    return replay


def _next_batch(replay_id: int, batch_size: int) -> tuple[WebhookReplay, bool]:
    """Queue the next batch after the cursor, or finish the replay if none is left; returns
    the record and whether a batch was taken (not when it was finished or cancelled).

    The row lock makes concurrent runs take turns per batch, and the cursor moved under it is
    the one the next run reads: a batch is never taken twice. The batch's events are matched
    again as they are queued, so one that stopped matching meanwhile (it is running now, or
    someone else replayed it) is skipped, and ``done`` counts only what was queued.
    """
    with transaction.atomic():
        replay = WebhookReplay.objects.select_for_update().get(pk=replay_id)
        if replay.state != ReplayState.RUNNING:
            return replay, False
        selection = matching_events(replay.filters).filter(
            pk__gt=replay.cursor, pk__lte=replay.last_event_id
        )
        ids = list(selection.order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not ids:
            replay.state, replay.finished_at = ReplayState.FINISHED, timezone.now()
            replay.save(update_fields=["state", "finished_at"])
            return replay, False
        queued = services.replay_events(selection.filter(pk__in=ids).order_by("pk"))
        replay.cursor, replay.done = ids[-1], replay.done + queued
        replay.updated_at = timezone.now()
        replay.save(update_fields=["cursor", "done", "updated_at"])
    return replay, True


def cancel_replay(replay_id: int) -> WebhookReplay:
    """Stop a running replay before its next batch; returns the record (a finished or
    cancelled one is left as it is). What it has queued already still runs.
    ``WebhookReplay.DoesNotExist`` for an unknown id."""
    WebhookReplay.objects.filter(pk=replay_id, state=ReplayState.RUNNING).update(
        state=ReplayState.CANCELLED, finished_at=timezone.now()
    )
    return WebhookReplay.objects.get(pk=replay_id)


def resume_stalled(now: datetime | None = None) -> int:
    """Put the job of every running replay that has not moved on for ``RECOVERY_GRACE`` back on
    the queue; returns how many (recovery: the schedule and every worker's heartbeat).

    A job lost with its worker (the Redis broker has no acknowledgements, a killed db_worker
    leaves its task row running) would leave its replay running forever. The grace is the one
    events get: a live job writes its progress after every batch, and its continuation waits
    behind the batches it queued. The conditional UPDATE makes concurrent recoveries enqueue it
    once; should the old job be alive after all, the two take turns per batch
    (:func:`run_replay`), and the one whose cursor is stale exits.
    """
    now = now or timezone.now()
    stalled_before = now - timedelta(seconds=webhook_settings.RECOVERY_GRACE)
    stalled = WebhookReplay.objects.filter(state=ReplayState.RUNNING, updated_at__lt=stalled_before)
    resumed = 0
    for replay_id, cursor, updated_at in stalled.values_list("pk", "cursor", "updated_at"):
        with transaction.atomic():
            if WebhookReplay.objects.filter(
                pk=replay_id, state=ReplayState.RUNNING, updated_at=updated_at
            ).update(updated_at=now):
                queue.enqueue_replay(replay_id, after=cursor)
                resumed += 1
    return resumed
