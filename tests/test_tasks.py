"""The state machine the qcluster runs, called directly on real rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from django_q.models import Schedule

from tests.conftest import envelope, queued_tasks
from tests.testapp.models import Execution
from tests.testapp.workflows import UNSTORABLE_RESULTS
from webhooks_app import lifecycle, signals, tasks
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.django_db


def make_event(workflow: str = "record", **fields) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source="generic", webhook_id=fields.pop("webhook_id", "evt"), workflow_name=workflow,
        payload=fields.pop("payload", {"a": 1}), **fields,
    )  # fmt: skip


def test_success_records_result_timings_and_history():
    event = make_event()
    received = []
    signals.event_succeeded.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t1")
    try:
        assert tasks.process_event(event.pk) == "succeeded"
    finally:
        signals.event_succeeded.disconnect(dispatch_uid="t1")
    event.refresh_from_db()
    assert event.status == EventStatus.SUCCEEDED
    assert event.result == {"echo": {"a": 1}}
    assert event.attempts == 1
    assert event.started_at <= event.finished_at
    assert event.duration is not None
    assert event.history[0]["outcome"] == "succeeded"
    assert received and received[0]["event"].pk == event.pk


@pytest.mark.parametrize(
    "status", [EventStatus.RUNNING, EventStatus.SUCCEEDED, EventStatus.DEAD, EventStatus.IGNORED]
)
def test_a_redelivered_task_does_not_run_a_claimed_or_finished_event(status):
    # A running attempt holds a live lease (its worker renews it).
    event = make_event(status=status, lease_expires_at=timezone.now() + timedelta(minutes=1))
    assert tasks.process_event(event.pk).startswith("skipped")
    assert Execution.objects.count() == 0


def test_a_failed_event_waits_for_its_retry_time():
    event = make_event(
        status=EventStatus.FAILED, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    assert tasks.process_event(event.pk).startswith("skipped")
    WebhookEvent.objects.filter(pk=event.pk).update(next_attempt_at=timezone.now())
    assert tasks.process_event(event.pk) == "succeeded"


def test_failure_is_retried_then_dead(django_capture_on_commit_callbacks):
    event = make_event("fail")
    failures = []
    signals.event_failed.connect(lambda **kw: failures.append(kw), weak=False, dispatch_uid="t2")
    try:
        for attempt in range(1, settings.WEBHOOKS["MAX_ATTEMPTS"] + 1):
            last = attempt == settings.WEBHOOKS["MAX_ATTEMPTS"]
            assert tasks.process_event(event.pk) == ("dead" if last else "failed")
            event.refresh_from_db()
            assert event.attempts == attempt
    finally:
        signals.event_failed.disconnect(dispatch_uid="t2")
    assert event.status == EventStatus.DEAD
    assert event.next_attempt_at is None
    assert "ValueError: boom on attempt 3" in event.error
    assert "Traceback" in event.error
    assert [f["will_retry"] for f in failures] == [True, True, False]
    assert tasks.process_event(event.pk).startswith("skipped")  # dead stays dead
    assert Execution.objects.count() == 3


def test_a_retry_with_backoff_is_scheduled_with_literal_args():
    event = make_event("fail")
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "RETRY_BACKOFF": 30}):
        before = timezone.now()
        tasks.process_event(event.pk)
    event.refresh_from_db()
    assert event.status == EventStatus.FAILED
    assert timedelta(seconds=23) <= event.next_attempt_at - before <= timedelta(seconds=37)
    schedule = Schedule.objects.get(name__startswith="webhooks_app:retry:")
    assert schedule.func == "webhooks_app.tasks.process_event"
    assert schedule.args == f"({event.pk},)"  # a literal: anything else wedges the scheduler
    assert schedule.schedule_type == Schedule.ONCE
    assert schedule.next_run == event.next_attempt_at


@override_settings(WEBHOOKS={**settings.WEBHOOKS, "RETRY_BACKOFF": 10})
def test_backoff_doubles_with_bounded_jitter():
    for attempt in range(1, 6):
        base = 10 * 2 ** (attempt - 1)
        delays = [lifecycle.retry_delay(attempt) for _ in range(50)]
        assert all(0.8 * base <= d <= 1.2 * base for d in delays)
        assert len(set(delays)) > 1  # jittered
        assert min(delays) > 1.2 * base / 2  # always longer than the previous attempt's longest


@pytest.mark.django_db(transaction=True)
def test_zero_backoff_requeues_immediately():
    event = make_event("fail")
    tasks.process_event(event.pk)
    assert queued_tasks() == 1
    assert not Schedule.objects.filter(name__startswith="webhooks_app:retry:").exists()


def test_unregistered_workflow_fails_like_an_exception():
    event = make_event("vanished")
    assert tasks.process_event(event.pk) == "failed"
    event.refresh_from_db()
    assert event.status == EventStatus.FAILED
    assert "No workflow is registered as 'vanished'" in event.error


#: What the stored error says about each of tests.testapp.workflows.UNSTORABLE_RESULTS.
UNSTORABLE_BECAUSE = {
    "nul": "a string in it holds a NUL character (\\u0000), which PostgreSQL cannot store",
    "set": "it is not JSON (TypeError: Object of type set is not JSON serializable)",
    "object": "it is not JSON (TypeError: Object of type object is not JSON serializable)",
    "nan": "it is not JSON (ValueError: Out of range float values are not JSON compliant",
    "lone_surrogate": "a string in it holds a lone surrogate, which is not valid Unicode",
}


def delivered(post_webhook, workflow: str, webhook_id: str, **inputs) -> WebhookEvent:
    """An event stored through the real endpoint."""
    response = post_webhook(envelope(workflow, webhook_id, **inputs))
    assert response.status_code == 202, response.content
    return WebhookEvent.objects.get(webhook_id=webhook_id)


def test_every_unstorable_kind_is_tested():
    assert UNSTORABLE_BECAUSE.keys() == UNSTORABLE_RESULTS.keys()


@pytest.mark.parametrize("kind", UNSTORABLE_BECAUSE)
def test_an_unstorable_result_ends_the_event_dead_without_running_it_again(kind, post_webhook):
    """Finding 16: PostgreSQL refused the final UPDATE (NUL in jsonb), the event stayed
    ``running`` and recovery ran the finished workflow again. The same rule holds on SQLite."""
    event = delivered(post_webhook, "unstorable", f"unstorable-{kind}", kind=kind)
    failures = []
    signals.event_failed.connect(lambda **kw: failures.append(kw), weak=False, dispatch_uid="t3")
    try:
        assert tasks.process_event(event.pk) == "dead"
    finally:
        signals.event_failed.disconnect(dispatch_uid="t3")
    event.refresh_from_db()
    assert event.status == EventStatus.DEAD
    assert event.attempts == 1
    assert event.result is None
    assert event.error.startswith(
        f"The workflow finished, but its result cannot be stored: {UNSTORABLE_BECAUSE[kind]}"
    )
    assert "It is not run again" in event.error
    assert event.finished_at is not None and event.next_attempt_at is None
    assert [entry["outcome"] for entry in event.history] == ["failed"]
    assert [f["will_retry"] for f in failures] == [False]
    assert tasks.process_event(event.pk).startswith("skipped")
    assert Execution.objects.filter(workflow="unstorable").count() == 1


def test_an_error_with_a_nul_character_is_stored_escaped_and_retried_as_usual(post_webhook):
    """The failure itself must be storable: a NUL (or a lone surrogate) in the exception's
    message made the UPDATE that records the failure fail on PostgreSQL."""
    event = delivered(post_webhook, "fail_with_nul", "nul-error")
    max_attempts = settings.WEBHOOKS["MAX_ATTEMPTS"]
    for attempt in range(1, max_attempts + 1):
        assert tasks.process_event(event.pk) == ("failed" if attempt < max_attempts else "dead")
        event.refresh_from_db()
        assert event.attempts == attempt
        assert event.status == (EventStatus.FAILED if attempt < max_attempts else EventStatus.DEAD)
    assert f"ValueError: bad\\x00byte \\ud800 on attempt {max_attempts}" in event.error
    assert "\x00" not in event.error
    assert [entry["outcome"] for entry in event.history] == ["failed"] * max_attempts
    assert "bad\\x00byte" in event.history[-1]["error"]
    assert Execution.objects.filter(workflow="fail_with_nul").count() == max_attempts


def test_timeout_is_recorded_and_reraised(monkeypatch):
    """django-q2's timeout is a SystemExit raised inside the workflow."""
    from django_q.exceptions import TimeoutException

    from webhooks_app import registry

    def too_slow(inputs, event):
        raise TimeoutException("Task exceeded maximum timeout value (10 seconds)")

    monkeypatch.setitem(registry._decorated, "too_slow", too_slow)
    event = make_event("too_slow")
    with pytest.raises(TimeoutException):
        tasks.process_event(event.pk)
    event.refresh_from_db()
    assert event.status == EventStatus.FAILED
    assert "exceeded maximum timeout" in event.error


def test_a_task_runs_what_its_attempt_hands_on():
    """The next event of a key runs in the same task, without going round the queue."""
    first = make_event(webhook_id="first", order_key="k")
    second = make_event(webhook_id="second", order_key="k")
    assert tasks.process_event(second.pk).startswith("skipped")  # held, and marked
    assert tasks.process_event(first.pk) == "succeeded (then 1 handed on)"
    second.refresh_from_db()
    assert (second.status, second.attempts) == (EventStatus.SUCCEEDED, 1)
    assert list(Execution.objects.values_list("webhook_id", flat=True).order_by("pk")) == [
        "first",
        "second",
    ]
