"""Django's Tasks framework as the task runner (``WEBHOOKS["TASK_RUNNER"] = "django_tasks"``):
``django.tasks`` on Django 6, the ``django-tasks`` backport on 5.2 (the same preference as
django-tasks-db's, so that its worker and this module mean the same ``Task`` class), on the
configured ``TASKS`` backend.

As with django-q2, the event row owns the state machine (attempts, backoff, leases): a task only
says "run one attempt of event N", and the framework never retries it. With django-tasks-db's
``DatabaseBackend`` a task is a row of the app's database, written in the caller's transaction
(the outbox), and a delay is the row's ``run_after``, kept by the database: the retries and a
rate limit's wakes outlive every process. Other backends get their tasks after commit.

Differences from django-q2 that the rest of the app allows for:

- ``db_worker`` runs a task to its end: there is no timeout (:func:`task_timeout` is None), and
  one worker process runs one task at a time.
- The framework has no signal for a worker's start, so ``manage.py db_worker`` is
  webhooks_app's own (``management/commands/db_worker.py``: django-tasks-db's, which first runs
  what :func:`on_worker_start` registered: the heartbeat, which renews leases and recovers).
  No scheduler either: recovery is every worker's heartbeat's, cleanup and alert evaluation
  cron jobs'.
- The database backend keeps a result row per task; cleanup trims them (:func:`trim_results`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, router, transaction

from webhooks_app import queue, tasks

try:
    from django.tasks import TaskResultStatus, task, task_backends
except ImportError:  # Django 5.2: the backport
    from django_tasks import TaskResultStatus, task, task_backends  # type: ignore[no-redef,assignment]

RUNNER = "django_tasks"


@task()
def process_event(event_id: int, workflow: str = "") -> str:
    """What the worker runs: one attempt of the event (:func:`webhooks_app.tasks.process_event`).

    Its dotted path is stored in every queued task row: keep it where it is.
    """
    return tasks.process_event(event_id, workflow)


@task()
def run_replay(replay_id: int, after: int) -> str:
    """A bulk replay's job (:func:`webhooks_app.tasks.run_replay`); its path is stored too."""
    return tasks.run_replay(replay_id, after)


def _backend() -> Any:
    return task_backends[process_event.backend]


def _task_rows() -> Any:
    """django-tasks-db's task rows of the configured backend, or None for any other backend."""
    try:
        from django_tasks_db import DatabaseBackend
    except ImportError:
        return None
    backend = _backend()
    if not isinstance(backend, DatabaseBackend):
        return None
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(backend_name=backend.alias)


def uses_orm_broker(using: str = DEFAULT_DB_ALIAS) -> bool:
    rows = _task_rows()
    return rows is not None and router.db_for_write(rows.model) == using


def enqueue(event_id: int, workflow: str = "", run_after: datetime | None = None) -> None:
    deferred = process_event if run_after is None else process_event.using(run_after=run_after)
    deferred.enqueue(event_id, *([workflow] if workflow else []))


def enqueue_replay(replay_id: int, after: int) -> None:
    run_replay.enqueue(replay_id, after)


def defers() -> bool:
    """Whether the backend keeps a task until its ``run_after`` (django-tasks-db's does)."""
    return bool(_backend().supports_defer)


def schedule_retry(event_id: int, attempt: int, at: datetime) -> None:
    """A task deferred to ``at``: with the database backend, a row written with the failed
    attempt's outcome; with another, enqueued after commit (deferred if it can, else by this
    process's timer), and recovery covers a lost one."""
    if uses_orm_broker():
        enqueue(event_id, run_after=at)
    else:
        transaction.on_commit(lambda: queue.enqueue_at(at, event_id))


def task_timeout() -> float | None:
    """``db_worker`` runs a task to its end."""
    return None


_worker_start: list[Callable[[], None]] = []


def on_worker_start(callback: Callable[[], None]) -> None:
    """Run by webhooks_app's ``db_worker`` before its first task (:func:`worker_started`)."""
    if callback not in _worker_start:
        _worker_start.append(callback)


def worker_started() -> None:
    """A worker process starts: what :func:`on_worker_start` registered (the heartbeat, whose
    first beat takes back the lapsed leases a killed worker left)."""
    for callback in _worker_start:
        callback()


def trim_results(before: datetime, batch_size: int) -> None:
    """django-tasks-db's rows of tasks enqueued before ``before``: finished ones, and the
    ``RUNNING`` ones a killed worker left (their attempt's lease lapsed long ago, and it ran
    again on a task of its own). Other backends keep their results themselves."""
    rows = _task_rows()
    if rows is not None:
        finished = rows.exclude(status=TaskResultStatus.READY).filter(enqueued_at__lt=before)
        queue.delete_in_batches(finished, batch_size)


def ensure_schedules(using: str = DEFAULT_DB_ALIAS) -> None:
    """Nothing to set up: the framework has no scheduler. Every worker's heartbeat recovers
    (every ``LEASE_SECONDS`` / 3), the daily cleanup is ``manage.py cleanup_webhook_events``
    from cron, and so is the minutely ``manage.py check_webhook_alerts``."""


class BackendQueue:
    """The configured backend as a :class:`~webhooks_app.queue.Broker`: django-tasks-db's
    tasks are rows, to count and to delete; another backend tells nothing of its queue."""

    def _rows(self) -> Any:
        rows = _task_rows()
        if rows is None:
            raise NotImplementedError(
                f"The TASKS backend {type(_backend()).__name__} does not report its queue."
            )
        return rows

    def queue_size(self) -> int:
        """Tasks due now (not those deferred to later: retries, wakes)."""
        return int(self._rows().ready().count())

    def purge_queue(self) -> int:
        """Drop every task not started yet."""
        deleted, _ = self._rows().filter(status=TaskResultStatus.READY).delete()
        return int(deleted)

    def ping(self) -> bool:
        """One cheap query where the tasks are rows; any other backend is taken as up."""
        if _task_rows() is not None:
            self._rows().exists()
        return True


def broker() -> BackendQueue:
    return BackendQueue()


def queue_info() -> dict[str, Any]:
    """The runner, the backend and its due tasks; the framework knows no workers to show."""
    info: dict[str, Any] = {"runner": RUNNER}
    try:
        info["broker"] = type(_backend()).__name__
        info["queued"] = broker().queue_size()
    except NotImplementedError as exc:
        info["queued"] = None
        info["error"] = str(exc)
    except Exception:
        info["queued"] = None
        info["error"] = "broker unreachable"
    return info
