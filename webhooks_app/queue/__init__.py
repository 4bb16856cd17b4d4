"""The only place that talks to the task runner: enqueue an event (now, at a time, or as a
retry), report depth, hook the workers' start, trim the runner's result rows.

``WEBHOOKS["TASK_RUNNER"]`` picks the runner, and one adapter module per runner, with the same
functions, does what only that runner can: :mod:`.django_q` (django-q2's qcluster, the
default) and :mod:`.django_tasks` (Django's Tasks framework). Each is imported on its first
use, so a project on one runner need not install the other; what is the same for both (the
outbox rule, logged enqueues, the in-process timer) lives here.

Delivery guarantees differ by broker, and the callers rely on :func:`enqueue_in_transaction`
to pick the safe option: where queued tasks are rows of the caller's database (django-q2's ORM
broker, django-tasks-db's backend) the task is written inside the caller's transaction (the
event and its task commit or roll back together: a free outbox); any other broker is called
after commit, and a failure there only logs, because the committed event stays ``pending`` and
recovery enqueues it again.
"""

from __future__ import annotations

import heapq
import importlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

from webhooks_app.conf import TASK_RUNNERS, webhook_settings

logger = logging.getLogger("webhooks_app")

_ADAPTERS = {name: f"webhooks_app.queue.{name}" for name in TASK_RUNNERS}
#: django-q2's own names (its task options, schedules, cluster status), for the code that deals
#: with django-q2 itself: imported on first use, like the adapter they come from.
_DJANGO_Q_NAMES = frozenset(
    {
        "PROCESS_EVENT",
        "TASK_OPTIONS",
        "RECOVERY_SCHEDULE",
        "CLEANUP_SCHEDULE",
        "ALERTS_SCHEDULE",
        "Stat",
    }
)


def __getattr__(name: str) -> Any:
    if name in _DJANGO_Q_NAMES:
        return getattr(importlib.import_module(_ADAPTERS["django_q"]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Broker(Protocol):
    """Where tasks wait, as health, the dashboard and the tests see it (django-q2's brokers
    have these methods; the Django Tasks adapter gives its backend the same three)."""

    def queue_size(self) -> int: ...

    def purge_queue(self) -> Any: ...

    def ping(self) -> bool: ...


def runner() -> ModuleType:
    """The adapter of the configured ``TASK_RUNNER``."""
    name = webhook_settings.TASK_RUNNER
    if name not in _ADAPTERS:
        raise ImproperlyConfigured(
            f"WEBHOOKS['TASK_RUNNER'] is {name!r}; use one of {', '.join(map(repr, TASK_RUNNERS))} "
            "(system check webhooks_app.E011)."
        )
    return importlib.import_module(_ADAPTERS[name])


def broker() -> Broker:
    """The runner's broker, one per process."""
    adapter_broker: Broker = runner().broker()
    return adapter_broker


def uses_orm_broker(using: str = DEFAULT_DB_ALIAS) -> bool:
    """True when queued tasks are rows of the ``using`` database, so they can share its
    transaction."""
    return bool(runner().uses_orm_broker(using))


def enqueue(event_id: int, workflow: str = "") -> None:
    """Put one ``process_event`` task on the queue now; with the event's ``workflow``, if the
    caller has it at hand: the claim of a limited workflow's event is shorter for it."""
    runner().enqueue(event_id, workflow)


def _logged(event_id: int, enqueue: Callable[[], None]) -> None:
    try:
        enqueue()
    except Exception:
        logger.exception(
            "Could not enqueue webhook event %s; it stays pending until recovery picks it up.",
            event_id,
        )


def _enqueue_logged(event_id: int, workflow: str = "") -> None:
    _logged(event_id, lambda: enqueue(event_id, workflow))


def enqueue_in_transaction(
    event_id: int, using: str = DEFAULT_DB_ALIAS, *, workflow: str = ""
) -> None:
    """Enqueue as part of the caller's open transaction (ORM) or right after it commits."""
    if uses_orm_broker(using):
        enqueue(event_id, workflow)
    else:
        transaction.on_commit(lambda: _enqueue_logged(event_id, workflow), using=using)


def enqueue_replay(replay_id: int, after: int, using: str = DEFAULT_DB_ALIAS) -> None:
    """Put the background job of bulk replay ``replay_id`` on the queue (it resumes after event
    ``after``: :func:`webhooks_app.replays.run_replay`), with the outbox rule of
    :func:`enqueue_in_transaction`. A job that could not be enqueued only logs: the replay stays
    ``running`` and the periodic recovery enqueues it again."""
    adapter = runner()
    if uses_orm_broker(using):
        adapter.enqueue_replay(replay_id, after)
        return

    def logged() -> None:
        try:
            adapter.enqueue_replay(replay_id, after)
        except Exception:
            logger.exception(
                "Could not enqueue bulk replay %s; it stays running until recovery enqueues it.",
                replay_id,
            )

    transaction.on_commit(logged, using=using)


def schedule_retry(event_id: int, attempt: int, at: datetime) -> None:
    """Run the event again at ``at`` (attempt number ``attempt``), from inside the transaction
    that records the failed attempt."""
    runner().schedule_retry(event_id, attempt, at)


class _Timer:
    """Enqueue events at given times from one daemon thread of this process.

    For a runner that cannot defer a task finely enough (django-q2's scheduler runs every
    30 s, far too coarse for a rate of a few per second). A timer lives as long as its
    process: an event whose wake dies with it is ``pending`` with its start time as its queue
    time, and recovery enqueues it after ``RECOVERY_GRACE``.
    """

    def __init__(self) -> None:
        self._due: list[tuple[datetime, int]] = []
        self._changed = threading.Condition()
        self._pid: int | None = None

    def add(self, when: datetime, event_id: int) -> None:
        with self._changed:
            heapq.heappush(self._due, (when, event_id))
            if self._pid != os.getpid():  # not started in this process (or started before a fork)
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="webhooks-timer", daemon=True).start()
            self._changed.notify()

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._due or self._due[0][0] > timezone.now():
                    wait = (self._due[0][0] - timezone.now()).total_seconds() if self._due else None
                    self._changed.wait(wait)
                _, event_id = heapq.heappop(self._due)
            _enqueue_logged(event_id)
            connections.close_all()  # this thread's own connection (ORM broker), not kept open


_timer = _Timer()


def enqueue_at(when: datetime, event_id: int) -> None:
    """Put one ``process_event`` task on the queue at ``when``: deferred by the runner where it
    can (Django Tasks' ``run_after``, kept by the backend), else by this process's
    :class:`_Timer`."""
    adapter = runner()
    if when <= timezone.now() + timedelta(milliseconds=5):
        _enqueue_logged(event_id)
    elif adapter.defers():
        _logged(event_id, lambda: adapter.enqueue(event_id, run_after=when))
    else:
        _timer.add(when, event_id)


def task_timeout() -> float | None:
    """How long one task may run before the runner stops it (None: no limit)."""
    timeout: float | None = runner().task_timeout()
    return timeout


def on_worker_start(callback: Callable[[], None]) -> None:
    """Call ``callback`` in every worker process as it starts, before its first task."""
    runner().on_worker_start(callback)


def trim_results(before: datetime, batch_size: int) -> None:
    """Delete the runner's own result rows older than ``before``, in batches."""
    runner().trim_results(before, batch_size)


def delete_in_batches(rows: Any, batch_size: int) -> None:
    """Delete the rows of a queryset one batch of primary keys at a time (short transactions,
    bounded memory): what each adapter's :func:`trim_results` does with its rows."""
    while ids := list(rows.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        rows.model.objects.filter(pk__in=ids).delete()


def ensure_schedules(using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """Set up the runner's periodic recovery, cleanup and alert evaluation, where it has a
    scheduler (``post_migrate``)."""
    runner().ensure_schedules(using)


def broker_reachable() -> bool:
    """Whether the broker answers, in one cheap round trip (Redis ``PING``; the ORM broker is the
    database): what the anonymous health check needs, without :func:`queue_info`'s scan of the
    clusters (a ``KEYS`` over the Redis database) that anyone polling could otherwise trigger."""
    try:
        return bool(broker().ping())
    except Exception:
        return False


def queue_info() -> dict[str, Any]:
    """Broker name and how many tasks wait in it, and what the runner knows of its workers
    (for health and the dashboard)."""
    info: dict[str, Any] = runner().queue_info()
    return info
