"""The only module that talks to django-q2: enqueue an event (now, at a time, or as a retry),
report depth, hook the cluster's workers, trim its result rows.

Keeping the queue behind these few functions means a move to another runner (a
``django.tasks`` backend, say) touches one file.

Delivery guarantees differ by broker, and the callers rely on :func:`enqueue_in_transaction`
to pick the safe option: the ORM broker's queue row is written inside the caller's transaction
(the event and its task commit or roll back together: a free outbox); any other broker is
called after commit, and a failure there only logs, because the committed event stays
``pending`` and recovery enqueues it again.
"""

from __future__ import annotations

import heapq
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.models import Schedule, Task
from django_q.signals import post_spawn
from django_q.status import Stat
from django_q.tasks import async_task

logger = logging.getLogger("webhooks_app")

PROCESS_EVENT = "webhooks_app.tasks.process_event"
#: django-q2 must neither retry (we count attempts ourselves, with backoff) nor keep a Task row
#: per success (the event row is the record; failures are still saved by django-q2).
TASK_OPTIONS: dict[str, Any] = {"ack_failure": True, "save": False}

_broker: tuple[int, Broker] | None = None


def broker() -> Broker:
    """One broker per process: django-q2 builds a new connection per call otherwise."""
    global _broker
    pid = os.getpid()
    if _broker is None or _broker[0] != pid:
        _broker = (pid, get_broker())
    return _broker[1]


def uses_orm_broker(using: str = DEFAULT_DB_ALIAS) -> bool:
    """True when queue rows live in the ``using`` database, so they can share its transaction."""
    return using == Conf.ORM


def enqueue(event_id: int) -> None:
    """Put one ``process_event`` task on the queue now."""
    async_task(
        PROCESS_EVENT,
        event_id,
        task_name=f"webhook-event-{event_id}",
        broker=broker(),
        q_options=dict(TASK_OPTIONS),
    )


def _enqueue_logged(event_id: int) -> None:
    try:
        enqueue(event_id)
    except Exception:
        logger.exception(
            "Could not enqueue webhook event %s; it stays pending until recovery picks it up.",
            event_id,
        )


def enqueue_in_transaction(event_id: int, using: str = DEFAULT_DB_ALIAS) -> None:
    """Enqueue as part of the caller's open transaction (ORM) or right after it commits."""
    if uses_orm_broker(using):
        enqueue(event_id)
    else:
        transaction.on_commit(lambda: _enqueue_logged(event_id), using=using)


def schedule_retry(event_id: int, attempt: int, at: datetime) -> None:
    """Run the event again at ``at`` (django-q2's scheduler: about 30 s resolution).

    Only literals go into a schedule's args: anything else breaks every scheduler pass.
    """
    Schedule.objects.create(
        name=f"webhooks_app:retry:{event_id}:{attempt}",
        func=PROCESS_EVENT,
        args=repr((int(event_id),)),
        kwargs=repr({"q_options": TASK_OPTIONS}),
        schedule_type=Schedule.ONCE,
        repeats=-1,
        next_run=at,
    )


class _Timer:
    """Enqueue events at given times from one daemon thread of this process.

    django-q2's scheduler runs every 30 s, far too coarse for a rate of a few per second. A
    timer lives as long as its process: an event whose wake dies with it is ``pending`` with
    its start time as its queue time, and recovery enqueues it after ``RECOVERY_GRACE``.
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
    """Put one ``process_event`` task on the queue at ``when`` (see :class:`_Timer`)."""
    if when <= timezone.now() + timedelta(milliseconds=5):
        _enqueue_logged(event_id)
    else:
        _timer.add(when, event_id)


def task_timeout() -> float | None:
    """django-q2's ``timeout``: how long one task may run before its worker is stopped."""
    return float(Conf.TIMEOUT) if Conf.TIMEOUT else None


def on_worker_start(callback: Callable[[], None]) -> None:
    """Call ``callback`` in every qcluster worker process as it starts (django-q2's
    ``post_spawn``): what a starting cluster must do before its first task."""

    def receiver(**kwargs: Any) -> None:
        callback()

    post_spawn.connect(receiver, weak=False, dispatch_uid="webhooks_app.worker_start")


def trim_results(before: datetime, batch_size: int) -> None:
    """Delete django-q2's own result rows (failures; successes are not saved) older than
    ``before``, in batches."""
    old = Task.objects.filter(stopped__lt=before)
    while ids := list(old.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        Task.objects.filter(pk__in=ids).delete()


RECOVERY_SCHEDULE = "webhooks_app:recover"
CLEANUP_SCHEDULE = "webhooks_app:cleanup"
_SCHEDULES: dict[str, dict[str, Any]] = {
    # Every minute, and not saved as a django-q2 Task row each time.
    RECOVERY_SCHEDULE: {
        "func": "webhooks_app.tasks.recover_stranded_events",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "kwargs": repr({"q_options": {"save": False}}),
    },
    CLEANUP_SCHEDULE: {
        "func": "webhooks_app.tasks.cleanup_expired_events",
        "schedule_type": Schedule.DAILY,
    },
}


def ensure_schedules(using: str = DEFAULT_DB_ALIAS, **kwargs: Any) -> None:
    """Create the periodic recovery and cleanup schedules once (``post_migrate``).

    An existing one is left as it is, so an operator may edit or disable it in the admin.
    """
    for name, fields in _SCHEDULES.items():
        Schedule.objects.using(using).get_or_create(name=name, defaults={"repeats": -1, **fields})


def broker_name() -> str:
    """Which broker the settings chose, without connecting to it."""
    for name, configured in [
        ("orm", Conf.ORM), ("sqs", Conf.SQS), ("mongo", Conf.MONGO), ("ironmq", Conf.IRON_MQ),
        ("custom", Conf.BROKER_CLASS),
    ]:  # fmt: skip
        if configured:
            return name
    return "redis"  # django-q2's default, also when Q_CLUSTER names none


def broker_reachable() -> bool:
    """Whether the broker answers, in one cheap round trip (Redis ``PING``; the ORM broker is the
    database): what the anonymous health check needs, without :func:`queue_info`'s scan of the
    clusters (a ``KEYS`` over the Redis database) that anyone polling could otherwise trigger."""
    try:
        return bool(broker().ping())
    except Exception:
        return False


def queue_info() -> dict[str, Any]:
    """Broker name and how many tasks wait in it (for health and the dashboard)."""
    info: dict[str, Any] = {"broker": broker_name()}
    try:
        # Even building the ORM broker touches the database: both belong inside the try.
        info["queued"] = broker().queue_size()
        # Clusters publish their state to the broker (Redis) or to the Django cache (ORM):
        # with a per-process cache such as LocMemCache, none is visible from the web process.
        info["clusters"] = [
            {"id": str(stat.cluster_id), "status": str(stat.status), "workers": len(stat.workers)}
            for stat in Stat.get_all(broker=broker())
        ]
    except Exception:
        info["queued"] = None
        info["error"] = "broker unreachable"
    return info
