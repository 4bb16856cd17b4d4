"""django-q2 as the task runner (``WEBHOOKS["TASK_RUNNER"] = "django_q"``, the default): its
broker, task options and schedules, and its workers' ``post_spawn``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf
from django_q.models import Schedule, Task
from django_q.signals import post_spawn
from django_q.status import Stat
from django_q.tasks import async_task

from webhooks_app import queue

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
    return using == Conf.ORM


def enqueue(event_id: int, workflow: str = "") -> None:
    async_task(
        PROCESS_EVENT,
        event_id,
        *([workflow] if workflow else []),
        task_name=f"webhook-event-{event_id}",
        broker=broker(),
        q_options=dict(TASK_OPTIONS),
    )


RUN_REPLAY = "webhooks_app.tasks.run_replay"


def enqueue_replay(replay_id: int, after: int) -> None:
    """The job of a bulk replay, with the events' task options: it counts its own progress."""
    async_task(
        RUN_REPLAY,
        replay_id,
        after,
        task_name=f"webhook-replay-{replay_id}",
        broker=broker(),
        q_options=dict(TASK_OPTIONS),
    )


def defers() -> bool:
    """django-q2 defers only through its scheduler (about 30 s resolution): too coarse for a
    rate limit's wake, which the façade's in-process timer does."""
    return False


def schedule_retry(event_id: int, attempt: int, at: datetime) -> None:
    """A one-off django-q2 schedule (about 30 s resolution), a row written in the caller's
    transaction whatever the broker.

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


def task_timeout() -> float | None:
    """django-q2's ``timeout``: how long one task may run before its worker is stopped."""
    return float(Conf.TIMEOUT) if Conf.TIMEOUT else None


def on_worker_start(callback: Callable[[], None]) -> None:
    """Every qcluster worker process as it spawns: django-q2's ``post_spawn``."""

    def receiver(**kwargs: Any) -> None:
        callback()

    post_spawn.connect(receiver, weak=False, dispatch_uid="webhooks_app.worker_start")


def trim_results(before: datetime, batch_size: int) -> None:
    """django-q2's own result rows (failures; successes are not saved)."""
    queue.delete_in_batches(Task.objects.filter(stopped__lt=before), batch_size)


RECOVERY_SCHEDULE = "webhooks_app:recover"
CLEANUP_SCHEDULE = "webhooks_app:cleanup"
ALERTS_SCHEDULE = "webhooks_app:alerts"
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
    # Alert rules (contract §11): every minute, like recovery, with no Task row each time.
    ALERTS_SCHEDULE: {
        "func": "webhooks_app.tasks.evaluate_alerts",
        "schedule_type": Schedule.MINUTES,
        "minutes": 1,
        "kwargs": repr({"q_options": {"save": False}}),
    },
}


def ensure_schedules(using: str = DEFAULT_DB_ALIAS) -> None:
    """Create the periodic recovery, cleanup and alert schedules once.

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


def queue_info() -> dict[str, Any]:
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
