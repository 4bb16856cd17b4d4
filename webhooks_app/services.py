"""Operator actions shared by the admin, the API and the management commands."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from webhooks_app import crypto, lifecycle, queue, registry, sources
from webhooks_app.models import (
    FINISHED_STATUSES,
    ControlKind,
    EventStatus,
    ProcessingControl,
    WebhookEvent,
    WebhookSourceSecret,
)


def replay_events(events: QuerySet[WebhookEvent]) -> int:
    """Run the selected events' workflows once more; returns how many were queued.

    Events that are running, or have no workflow (ignored), are left alone. The attempt count
    keeps growing, so a replayed dead event that fails again is dead again after one attempt.
    """
    replayable = events.exclude(status__in=[EventStatus.RUNNING]).exclude(workflow_name="")
    with transaction.atomic():
        ids = list(replayable.select_for_update().values_list("pk", flat=True))
        WebhookEvent.objects.filter(pk__in=ids).update(
            status=EventStatus.PENDING,
            next_attempt_at=timezone.now(),
            finished_at=None,
            waiting_for="",
        )
        for pk in ids:
            queue.enqueue_in_transaction(pk)
    return len(ids)


#: Senders redeliver for days (Stripe 3, GitHub manual redelivery 3, some 7): deleting an event
#: younger than this would let a redelivery run again.
MIN_CLEANUP_DAYS = 7


#: Rows per delete transaction (cleanup and purge): short locks, bounded memory.
DELETE_BATCH_SIZE = 1000


class CleanupRefused(ValueError):
    """A cleanup that would break idempotency or delete unfinished events."""


def cleanup_events(
    *,
    days: int,
    statuses: Sequence[str] = FINISHED_STATUSES,
    batch_size: int = DELETE_BATCH_SIZE,
    dry_run: bool = False,
    force: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete finished events received more than ``days`` ago, in batches; returns the count.

    ``progress`` is called with the running total after each batch. django-q2's own Task rows
    older than the window are trimmed too.
    """
    unfinished = set(statuses) - set(FINISHED_STATUSES)
    if unfinished:
        raise CleanupRefused(
            f"Only finished events can be cleaned up, not {', '.join(sorted(unfinished))}."
        )
    if days < MIN_CLEANUP_DAYS and not force:
        raise CleanupRefused(
            f"Refusing to delete events younger than {MIN_CLEANUP_DAYS} days: senders still "
            "redeliver them and they would run again. Use --force to do it anyway."
        )
    if batch_size < 1:
        raise CleanupRefused("The batch size must be at least 1.")
    cutoff = timezone.now() - timedelta(days=days)
    old = WebhookEvent.objects.filter(status__in=list(statuses), received_at__lt=cutoff)
    if dry_run:
        return old.count()
    deleted = _delete_in_batches(old, batch_size, progress)
    queue.trim_results(cutoff, batch_size)
    return deleted


def _delete_in_batches(
    events: QuerySet[WebhookEvent],
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Delete ``events`` one batch of primary keys at a time; returns how many events went.

    Each batch is its own short transaction (bounded memory and lock time, ingest keeps
    flowing), and only keys are read: the effects' CASCADE makes Django load the rows it
    deletes, and their payloads and histories would be most of the time and memory otherwise.
    """
    deleted = 0
    while ids := list(events.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        with transaction.atomic():
            _, per_model = WebhookEvent.objects.filter(pk__in=ids).only("pk").delete()
        deleted += per_model.get(WebhookEvent._meta.label, 0)
        if progress:
            progress(deleted)
    return deleted


def purge_events(events: QuerySet[WebhookEvent], *, batch_size: int = DELETE_BATCH_SIZE) -> int:
    """Delete the selected events (admin *Purge*), in batches as cleanup does; returns how many
    went. A purge of "all N matching" on a large table must not read every row into one
    transaction."""
    return _delete_in_batches(events, batch_size)


class UnknownTarget(LookupError):
    """Pausing or resuming a source or workflow that is not configured."""


@dataclass(frozen=True)
class ControlState:
    """One source or workflow as the controls page, the API and the commands show it."""

    name: str
    paused: bool
    #: Its events not finished and not running: the backlog a pause holds (or would hold).
    waiting: int
    changed_at: datetime | None
    changed_by: str


def known_names(kind: str) -> list[str]:
    """The sources served (settings and enabled database ones), or the workflows registered."""
    if kind == ControlKind.SOURCE:
        return sorted(sources.all_sources())
    if kind == ControlKind.WORKFLOW:
        return registry.workflow_names()
    raise ValueError(f"Not a control kind: {kind!r}")


def _known(kind: str, name: str) -> None:
    names = known_names(kind)
    if name not in names:
        raise UnknownTarget(
            f"No {kind} is named {name!r}. Known {kind}s: {', '.join(names) or 'none'}."
        )


def pause(kind: str, name: str, *, by: str = "") -> None:
    """Stop new attempts of a source's or a workflow's events, on every node at once (the claim
    reads the row). Deliveries are still verified, stored and answered; their events wait
    ``pending`` without using an attempt; running attempts finish normally."""
    _known(kind, name)
    ProcessingControl.objects.update_or_create(
        kind=kind,
        name=name,
        defaults={"paused": True, "changed_at": timezone.now(), "changed_by": by},
    )


def resume(kind: str, name: str, *, by: str = "") -> int:
    """Lift a pause and put the backlog it held back on the queue, oldest first; returns how
    many events were requeued. Resuming what is not paused requeues nothing."""
    _known(kind, name)
    with transaction.atomic():
        lifted = ProcessingControl.objects.filter(kind=kind, name=name, paused=True).update(
            paused=False, changed_at=timezone.now(), changed_by=by
        )
    return lifecycle.requeue_waiting(kind, name) if lifted else 0


def paused_sentence(kind: str, name: str) -> str:
    """What a pause did, as the commands print it and the admin says it."""
    return f"Paused {kind} {name!r}."


def resumed_sentence(kind: str, name: str, requeued: int) -> str:
    """What a resume did, as the commands print it and the admin says it."""
    events = "event" if requeued == 1 else "events"
    return f"Resumed {kind} {name!r}: {requeued} waiting {events} put back on the queue."


def controls(kind: str) -> list[ControlState]:
    """Every source (or workflow) with its pause state and its waiting backlog, in two
    queries."""
    field = "source" if kind == ControlKind.SOURCE else "workflow_name"
    names = known_names(kind)
    rows = {c.name: c for c in ProcessingControl.objects.filter(kind=kind, name__in=names)}
    waiting = dict(
        WebhookEvent.objects.filter(
            status__in=[EventStatus.PENDING, EventStatus.FAILED], **{f"{field}__in": names}
        )
        .values_list(field)
        .annotate(n=Count("pk"))
        .values_list(field, "n")
    )
    return [
        ControlState(
            name=name,
            paused=bool(rows.get(name) and rows[name].paused),
            waiting=waiting.get(name, 0),
            changed_at=rows[name].changed_at if name in rows else None,
            changed_by=rows[name].changed_by if name in rows else "",
        )
        for name in names
    ]


@dataclass(frozen=True)
class Reencrypted:
    """What :func:`reencrypt_secrets` did."""

    #: Secrets now encrypted under the current key.
    moved: int
    #: Secrets that no configured key decrypts, left as they were (check E030).
    unreadable: int


def reencrypt_secrets() -> Reencrypted:
    """Encrypt every database source's secret under the current key (the first of
    ``ENCRYPTION_KEYS``), so that the older keys can be dropped. One transaction: a secret is
    never half moved. Fingerprints stay as they were made."""
    moved = unreadable = 0
    with transaction.atomic():
        for pk, token in WebhookSourceSecret.objects.select_for_update().values_list(
            "pk", "ciphertext"
        ):
            try:
                rotated = crypto.reencrypt(token)
            except crypto.Undecryptable:
                unreadable += 1
                continue
            WebhookSourceSecret.objects.filter(pk=pk).update(ciphertext=rotated)
            moved += 1
        if moved:
            sources.changed()  # update() tells no process itself
    return Reencrypted(moved, unreadable)
