"""The queue façade (``webhooks_app.queue``): the runner ``TASK_RUNNER`` picks, and the Django
Tasks adapter on a backend that is not the database (the framework's ``DummyBackend``, which
keeps what it is given): its tasks go out after commit, and its delays are ``run_after``.

The database backend, its outbox and its real worker: tests/test_queue_django_tasks.py, on the
``make test-tasks`` leg.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import django
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from tests.testapp.models import Execution
from webhooks_app import queue
from webhooks_app.models import EventStatus, WebhookEvent

FRAMEWORK = "django.tasks" if django.VERSION >= (6,) else "django_tasks"
DUMMY_BACKEND = f"{FRAMEWORK}.backends.dummy.DummyBackend"


@pytest.fixture
def dummy_backend(settings: Any) -> Iterator[Any]:
    """TASK_RUNNER "django_tasks" on the DummyBackend; yields the backend, to read its results."""
    # The framework forgets its backends when TASKS changes, in a receiver of its signals module
    # (which Django 6 imports with django.tasks, the backport only from its app's ready()).
    importlib.import_module(f"{FRAMEWORK}.signals")
    settings.TASKS = {"default": {"BACKEND": DUMMY_BACKEND}}
    settings.WEBHOOKS = {**settings.WEBHOOKS, "TASK_RUNNER": "django_tasks"}
    from webhooks_app.queue import django_tasks

    yield django_tasks.task_backends["default"]


def queued(backend: Any) -> list[tuple[list[Any], Any]]:
    """What the backend was given: each task's arguments and its ``run_after``."""
    return [(list(result.args), result.task.run_after) for result in backend.results]


def make_event(**fields: Any) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source="generic", webhook_id=fields.pop("webhook_id", "evt"), workflow_name="record",
        **fields,
    )  # fmt: skip


@override_settings(WEBHOOKS={})
def test_the_default_runner_is_django_q():
    from webhooks_app.queue import django_q

    assert queue.runner() is django_q


@override_settings(WEBHOOKS={"TASK_RUNNER": "celery"})
def test_an_unknown_runner_is_refused_naming_the_setting():
    with pytest.raises(ImproperlyConfigured, match=r"WEBHOOKS\['TASK_RUNNER'\] is 'celery'"):
        queue.enqueue(1)


def test_django_q_names_come_from_its_adapter_and_others_do_not_exist():
    from webhooks_app.queue import django_q

    assert queue.TASK_OPTIONS is django_q.TASK_OPTIONS
    assert queue.RECOVERY_SCHEDULE == "webhooks_app:recover"
    with pytest.raises(AttributeError, match="no attribute 'Celery'"):
        queue.Celery  # noqa: B018


@pytest.mark.django_db(transaction=True)
def test_django_tasks_on_another_backend_enqueues_after_commit(dummy_backend):
    event = make_event()
    with transaction.atomic():
        queue.enqueue_in_transaction(event.pk)
        assert queued(dummy_backend) == []  # not the database's: never inside its transaction
    assert queued(dummy_backend) == [([event.pk], None)]
    assert queue.uses_orm_broker() is False
    assert queue.task_timeout() is None

    with transaction.atomic():
        queue.enqueue_in_transaction(make_event(webhook_id="rolled-back").pk)
        transaction.set_rollback(True)
    assert len(queued(dummy_backend)) == 1


@pytest.mark.django_db(transaction=True)
def test_django_tasks_defers_a_retry_and_a_wake_with_run_after(dummy_backend):
    """Delays are the backend's (kept by it), not this process's timer."""
    event = make_event()
    at = timezone.now() + timedelta(minutes=5)
    with transaction.atomic():
        queue.schedule_retry(event.pk, 2, at)
        assert queued(dummy_backend) == []
    assert queued(dummy_backend) == [([event.pk], at)]

    wake = timezone.now() + timedelta(seconds=30)
    queue.enqueue_at(wake, event.pk)
    queue.enqueue_at(timezone.now() - timedelta(seconds=1), event.pk)  # due: at once
    assert queued(dummy_backend)[1:] == [([event.pk], wake), ([event.pk], None)]
    assert not queue._timer._due


@pytest.mark.django_db(transaction=True)
def test_the_task_the_worker_runs_is_one_attempt_of_the_event(dummy_backend):
    from webhooks_app.queue import django_tasks

    event = make_event(payload={"n": 1})
    assert django_tasks.process_event.module_path == "webhooks_app.queue.django_tasks.process_event"
    assert django_tasks.process_event.call(event.pk) == "succeeded"
    assert django_tasks.process_event.call(event.pk).startswith("skipped")
    assert WebhookEvent.objects.get(pk=event.pk).status == EventStatus.SUCCEEDED
    assert Execution.objects.filter(webhook_id="evt").count() == 1


def test_django_tasks_queue_info_degrades_where_the_backend_tells_nothing(dummy_backend):
    assert queue.queue_info() == {
        "runner": "django_tasks",
        "broker": "DummyBackend",
        "queued": None,
        "error": "The TASKS backend DummyBackend does not report its queue.",
    }
    assert queue.broker_reachable() is True


def test_worker_start_callbacks_run_once_each(dummy_backend, monkeypatch):
    """What db_worker runs before its first task (not here the heartbeat apps.py registers)."""
    from webhooks_app.queue import django_tasks

    monkeypatch.setattr(django_tasks, "_worker_start", [])
    calls: list[str] = []

    def started() -> None:
        calls.append("started")

    queue.on_worker_start(started)
    queue.on_worker_start(started)
    django_tasks.worker_started()
    assert calls == ["started"]
