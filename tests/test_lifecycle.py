"""The processing lifecycle on the real database of the run: the claim's rules (due, paused,
key-held, limited, lapsed lease), outcomes, hand-on, take-back and recovery. Every rule the
hand-written claim has is run on both paths: ``RETURNING`` and the fallback of a database
without it (the same statement, then a read)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from tests.conftest import Ago, ago, queued_tasks, resolved
from webhooks_app import lifecycle, services
from webhooks_app.models import ControlKind, EventStatus, ProcessingControl, WebhookEvent

pytestmark = pytest.mark.django_db


def make_event(webhook_id: str, **fields) -> WebhookEvent:
    fields = {"source": "generic", "workflow_name": "record", **fields}
    return WebhookEvent.objects.create(
        webhook_id=webhook_id, payload={"n": 1, "nested": {"ok": True}},
        history=[{"attempt": 0}], **fields,
    )  # fmt: skip


def status_of(event: WebhookEvent) -> str:
    return WebhookEvent.objects.get(pk=event.pk).status


MAX = settings.WEBHOOKS["MAX_ATTEMPTS"]
LIVE, LAPSED = Ago(-60), Ago(1)

CLAIMS = {
    "pending": ({"status": EventStatus.PENDING}, True),
    "failed, retry due": ({"status": EventStatus.FAILED, "next_attempt_at": Ago(1)}, True),
    "failed, retry later": ({"status": EventStatus.FAILED, "next_attempt_at": Ago(-3600)}, False),
    "running, lease live": (
        {
            "status": EventStatus.RUNNING,
            "started_at": Ago(86400),
            "attempts": 1,
            "lease_expires_at": LIVE,
        },
        False,
    ),
    "running, lease lapsed": (
        {
            "status": EventStatus.RUNNING,
            "started_at": Ago(5),
            "attempts": 1,
            "lease_expires_at": LAPSED,
        },
        True,
    ),
    "running, lease lapsed, last attempt": (
        {
            "status": EventStatus.RUNNING,
            "started_at": Ago(5),
            "attempts": MAX,
            "lease_expires_at": LAPSED,
        },
        False,
    ),
    "succeeded": ({"status": EventStatus.SUCCEEDED}, False),
    "dead": ({"status": EventStatus.DEAD}, False),
    "ignored": ({"status": EventStatus.IGNORED}, False),
}


@pytest.mark.parametrize("case", CLAIMS)
def test_claim(statements, case):
    fields, claimable = CLAIMS[case]
    event = make_event("evt", **resolved(fields))
    now = timezone.now()
    claimed = lifecycle.claim(event.pk, now)
    stored = WebhookEvent.objects.get(pk=event.pk)
    if not claimable:
        assert claimed is None
        assert stored.attempts == event.attempts
        if case.endswith("last attempt"):  # taken back, and out of attempts
            assert stored.status == EventStatus.DEAD
            assert stored.history[-1]["outcome"] == "lost" and stored.history[-1]["lease_lapsed"]
        else:
            assert stored.status == fields["status"]
        return
    assert claimed is not None
    assert (claimed.pk, claimed.status, claimed.attempts) == (
        event.pk,
        "running",
        event.attempts + 1,
    )
    assert claimed.finished_at is None
    assert claimed.lease_expires_at is not None and claimed.lease_expires_at > now
    assert claimed.payload == {"n": 1, "nested": {"ok": True}}  # JSON converted back
    assert claimed.received_at == event.received_at and timezone.is_aware(claimed.received_at)
    assert (stored.status, stored.attempts) == ("running", claimed.attempts)
    if "lapsed" in case:  # the lost attempt is in the history
        assert claimed.history[-1]["outcome"] == "lost"
        assert claimed.history[-1]["lease_lapsed"] is True
    else:
        assert claimed.history == [{"attempt": 0}]
    assert lifecycle.claim(event.pk, timezone.now()) is None  # a second task gets nothing


def test_a_paused_source_or_workflow_is_refused_without_using_an_attempt(statements):
    by_source = make_event("s")
    by_workflow = make_event("w", source="github")
    services.pause(ControlKind.SOURCE, "generic")
    services.pause(ControlKind.WORKFLOW, "record")
    for event in (by_source, by_workflow):
        assert lifecycle.claim(event.pk, timezone.now()) is None
        assert lifecycle.waiting_reason(event) is not None
    assert lifecycle.waiting_reason(by_source) == "paused: source 'generic'"
    assert services.resume(ControlKind.SOURCE, "generic") == 1
    assert lifecycle.claim(by_source.pk, timezone.now()) is None  # the workflow is still paused
    assert lifecycle.waiting_reason(by_source) == "paused: workflow 'record'"
    assert services.resume(ControlKind.WORKFLOW, "record") == 2
    assert lifecycle.claim(by_source.pk, timezone.now()) is not None
    assert lifecycle.claim(by_workflow.pk, timezone.now()) is not None
    assert WebhookEvent.objects.filter(attempts=1).count() == 2


def test_resume_of_what_is_not_paused_requeues_nothing():
    make_event("p")
    assert services.resume(ControlKind.SOURCE, "generic") == 0
    assert queued_tasks() == 0


def test_unknown_source_or_workflow_cannot_be_paused():
    with pytest.raises(services.UnknownTarget, match="Known sources: generic, github"):
        services.pause(ControlKind.SOURCE, "nope")
    with pytest.raises(services.UnknownTarget):
        services.resume(ControlKind.WORKFLOW, "nope")
    assert not ProcessingControl.objects.exists()


def test_controls_list_every_source_with_its_backlog():
    make_event("a", status=EventStatus.PENDING)
    make_event("b", status=EventStatus.FAILED, next_attempt_at=ago(-60))
    make_event("c", status=EventStatus.SUCCEEDED)
    services.pause(ControlKind.SOURCE, "generic", by="ops")
    states = {state.name: state for state in services.controls(ControlKind.SOURCE)}
    assert set(states) == {"generic", "github", "ordered"}
    assert (states["generic"].paused, states["generic"].waiting) == (True, 2)
    assert states["generic"].changed_by == "ops"
    assert (states["github"].paused, states["github"].waiting) == (False, 0)


def keyed(webhook_id: str, key: str = "c1", **fields) -> WebhookEvent:
    return make_event(webhook_id, source="ordered", order_key=key, **fields)


@pytest.mark.django_db(transaction=True)  # wakes go to Redis after commit
def test_events_of_one_key_run_one_at_a_time_in_received_order(statements):
    first, second, third = keyed("1"), keyed("2"), keyed("3")
    other = keyed("x", key="c2")
    # Tasks arrive out of order: the later events are refused and marked for a wake.
    assert lifecycle.claim(second.pk, timezone.now()) is None
    assert lifecycle.claim(third.pk, timezone.now()) is None
    assert WebhookEvent.objects.get(pk=second.pk).waiting_for == "key"
    assert lifecycle.waiting_reason(second) == f"held by event {first.pk} (key 'c1')"
    assert lifecycle.claim(other.pk, timezone.now()) is not None  # other keys are not held
    running = lifecycle.claim(first.pk, timezone.now())
    assert running is not None
    assert lifecycle.claim(second.pk, timezone.now()) is None  # still held while it runs
    before = queued_tasks()
    lifecycle.record_success(running, None)
    assert lifecycle.hand_on(running) is None  # woken, not taken
    assert queued_tasks() == before + 1  # the next of the key was woken, once
    assert WebhookEvent.objects.get(pk=second.pk).waiting_for == ""
    assert lifecycle.claim(third.pk, timezone.now()) is None  # the second goes first
    assert lifecycle.claim(second.pk, timezone.now()) is not None


def test_a_failed_event_holds_its_key_until_it_is_dead(statements):
    first, second = keyed("1"), keyed("2")
    running = lifecycle.claim(first.pk, timezone.now())
    assert running is not None
    lifecycle.record_failure(running, ValueError("downstream down"))
    assert status_of(first) == EventStatus.FAILED
    assert lifecycle.claim(second.pk, timezone.now()) is None  # held by the retry
    for _ in range(MAX - 1):
        running = lifecycle.claim(first.pk, timezone.now())
        assert running is not None
        lifecycle.record_failure(running, ValueError("still down"))
    assert status_of(first) == EventStatus.DEAD
    assert lifecycle.hand_on(running) is None
    assert lifecycle.claim(second.pk, timezone.now()) is not None


def test_a_replayed_older_event_does_not_run_beside_a_later_one_of_its_key():
    old, new = keyed("old", status=EventStatus.SUCCEEDED), keyed("new")
    running = lifecycle.claim(new.pk, timezone.now())
    assert running is not None
    services.replay_events(WebhookEvent.objects.filter(pk=old.pk))
    assert lifecycle.claim(old.pk, timezone.now()) is None
    lifecycle.record_success(running, None)
    assert lifecycle.hand_on(running) is None  # woken, not taken
    assert lifecycle.claim(old.pk, timezone.now()) is not None


def test_unordered_events_are_never_held_by_one_another():
    events = [make_event(str(n)) for n in range(3)]
    assert all(lifecycle.claim(e.pk, timezone.now()) is not None for e in reversed(events))


def limited(webhook_id: str, workflow: str, **fields) -> WebhookEvent:
    return make_event(webhook_id, workflow_name=workflow, **fields)


@pytest.mark.django_db(transaction=True)  # wakes go to Redis after commit
def test_concurrency_limit_refuses_and_hands_the_slot_on(statements):
    events = [limited(str(n), "two_at_a_time") for n in range(4)]
    claimed = [lifecycle.claim(e.pk, timezone.now()) for e in events]
    assert [c is not None for c in claimed] == [True, True, False, False]
    assert [WebhookEvent.objects.get(pk=e.pk).waiting_for for e in events[2:]] == [
        "concurrency"
    ] * 2
    assert lifecycle.waiting_reason(events[2]) == (
        "waiting for the concurrency limit of 'two_at_a_time' (2 running)"
    )
    assert WebhookEvent.objects.filter(attempts=0).count() == 2  # waiting uses no attempt
    before = queued_tasks()
    assert claimed[0] is not None
    lifecycle.record_success(claimed[0], None)
    assert lifecycle.hand_on(claimed[0]) is None  # woken, not taken
    assert queued_tasks() == before + 1  # one wake, the oldest waiting event
    assert WebhookEvent.objects.get(pk=events[2].pk).waiting_for == ""
    assert WebhookEvent.objects.get(pk=events[3].pk).waiting_for == "concurrency"
    assert lifecycle.claim(events[2].pk, timezone.now()) is not None
    assert lifecycle.claim(events[3].pk, timezone.now()) is None


def test_the_running_count_reads_only_what_runs_now():
    """A concurrency limit counts running attempts at each claim: by the partial index of
    running events, not by every event of the workflow nor by every one that ever ran."""
    from django.db import connection

    make_event("done", workflow_name="two_at_a_time", status=EventStatus.SUCCEEDED)
    make_event("running", workflow_name="two_at_a_time", status=EventStatus.RUNNING)
    make_event("other", workflow_name="record", status=EventStatus.RUNNING)
    assert lifecycle._running("two_at_a_time") == 1
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small would be read whole
        statement = lifecycle._running_statement(connection.vendor)
        cursor.execute(f"EXPLAIN {statement}", ["two_at_a_time"])
        plan = " ".join(row[0] for row in cursor.fetchall())
    assert "webhooks_ev_running_idx" in plan, plan


def test_rate_limit_holds_a_window_and_defers_without_an_attempt(statements):
    events = [limited(str(n), "five_per_second") for n in range(7)]
    now = timezone.now()
    assert all(lifecycle.claim(e.pk, now) is not None for e in events[:5])
    # The starts are recorded as the claims took the lock, a little after ``now``.
    first = datetime.fromtimestamp(
        ProcessingControl.objects.get(name="five_per_second").rate_starts[0], tz=UTC
    )
    assert lifecycle.claim(events[5].pk, now) is None  # the window holds 5 starts
    deferred = WebhookEvent.objects.get(pk=events[5].pk)
    assert deferred.waiting_for == "rate" and deferred.attempts == 0
    assert deferred.next_attempt_at == first + timedelta(seconds=1)  # when a start leaves it
    assert lifecycle.waiting_reason(deferred) == "waiting for the rate limit of 'five_per_second'"
    assert lifecycle.claim(events[6].pk, now) is None
    # The next one waiting wakes 1/5 s later: waiting events do not wake all at once.
    waiting = WebhookEvent.objects.get(pk=events[6].pk)
    assert waiting.next_attempt_at == first + timedelta(seconds=1.2)
    # (a claim passed a later time than the clock's is judged at that time)
    assert lifecycle.claim(deferred.pk, first + timedelta(seconds=0.99)) is None  # still full
    assert lifecycle.claim(deferred.pk, first + timedelta(seconds=1)) is not None
    assert WebhookEvent.objects.filter(attempts=1).count() == 6


def test_a_rate_limited_claim_that_waited_for_the_lock_records_when_it_really_started():
    """A claim that began (and read its clock) before waiting behind others for the workflow's
    lock: had it recorded that earlier time, the start would leave the window early, and the
    window would hold one start too many (seen on two nodes: 7 starts in a second at 5/s)."""
    event = limited("late", "five_per_second")
    began_waiting = timezone.now() - timedelta(seconds=0.9)
    assert lifecycle.claim(event.pk, began_waiting) is not None
    [start] = ProcessingControl.objects.get(name="five_per_second").rate_starts
    assert start >= timezone.now().timestamp() - 0.1


def test_finish_writes_nothing_once_the_attempt_was_taken_back():
    event = lifecycle.claim(make_event("evt").pk, timezone.now())
    assert event is not None
    # The lease lapsed and the event was started over (attempt 2 under way).
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=2)
    lifecycle.record_success(event, {"late": True})
    stored = WebhookEvent.objects.get(pk=event.pk)
    assert (stored.status, stored.result, stored.history) == ("running", None, [{"attempt": 0}])


def test_finish_stores_json_and_null_as_the_orm_would():
    event = lifecycle.claim(make_event("evt").pk, timezone.now())
    assert event is not None
    lifecycle.record_success(event, None)
    stored = WebhookEvent.objects.get(pk=event.pk)
    assert stored.status == "succeeded" and stored.result is None
    assert stored.lease_expires_at is None
    assert WebhookEvent.objects.filter(pk=event.pk, result__isnull=True).exists()
    assert [entry.get("outcome") for entry in stored.history] == [None, "succeeded"]


def test_a_renewed_lease_is_not_taken_back():
    event = lifecycle.claim(make_event("evt").pk, timezone.now())
    assert event is not None
    later = timezone.now() + timedelta(seconds=settings.WEBHOOKS["LEASE_SECONDS"] * 2)
    assert lifecycle.renew_leases({event.pk: event.attempts}, later) == []
    assert lifecycle.take_back_lapsed(later) == {"running": 0, "dead": 0}
    assert lifecycle.renew_leases({event.pk: event.attempts + 1}, later) == [event.pk]
    much_later = later + timedelta(seconds=settings.WEBHOOKS["LEASE_SECONDS"] + 1)
    assert lifecycle.take_back_lapsed(much_later) == {"running": 1, "dead": 0}
    assert status_of(event) == EventStatus.PENDING


def test_recovery_leaves_held_and_paused_events_alone():
    first = keyed("1", status=EventStatus.FAILED, next_attempt_at=ago(-3600))
    keyed("2", received_at=ago(600))  # held by the first
    make_event("paused", source="github", received_at=ago(600))
    services.pause(ControlKind.SOURCE, "github")
    stranded = make_event("stranded", received_at=ago(600))
    assert lifecycle.recover(dry_run=True) == {"pending": 1, "failed": 0, "running": 0, "dead": 0}
    assert lifecycle.recover() == {"pending": 1, "failed": 0, "running": 0, "dead": 0}
    assert WebhookEvent.objects.get(pk=stranded.pk).next_attempt_at is not None
    assert status_of(first) == EventStatus.FAILED


@pytest.mark.django_db(transaction=True)  # autocommit, as in a worker
def test_the_unflushed_outcome_does_not_leak_into_the_session():
    """The outcome's commit skips the WAL flush for its own transaction only: the next claim
    and every delivery stored on this connection must still wait for theirs."""
    from django.db import connection

    event = lifecycle.claim(make_event("evt").pk, timezone.now())
    assert event is not None
    lifecycle.record_success(event, None)
    assert status_of(event) == EventStatus.SUCCEEDED
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"


def test_an_event_whose_key_was_freed_between_the_claim_and_the_read_is_claimed(statements):
    """The race the drain benchmark found: the claim saw the key held, its holder finished and
    found nothing marked to wake, then the refusal's read saw the key free. The event must be
    claimed then, not left for recovery."""
    keyed("1", status=EventStatus.SUCCEEDED)  # the holder, finished meanwhile
    second = keyed("2")
    event = lifecycle._claim_refused(second.pk, timezone.now())
    assert event is not None and event.pk == second.pk and event.status == EventStatus.RUNNING


def test_the_key_and_slot_lookups_use_their_partial_indexes():
    """Neither the key's holders nor the events waiting for a slot are found by reading a
    key's or a workflow's whole history."""
    from django.db import connection

    keyed("1")
    second = keyed("2")
    limited("w", "two_at_a_time", waiting_for="concurrency")
    plans = {}
    with connection.cursor() as cursor:
        for name, statement, params in [
            ("key", lifecycle._reason_statement(connection.vendor), [second.pk]),
            ("slot", lifecycle._next_for_slot_statement(connection.vendor), ["two_at_a_time", timezone.now()]),
        ]:  # fmt: skip
            explain = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(explain + statement, params)
            plans[name] = " ".join(str(part) for row in cursor.fetchall() for part in row)
    assert "webhooks_ev_order_key_idx" in plans["key"]
    assert "webhooks_ev_waiting_slot_idx" in plans["slot"]


def test_a_finished_attempt_hands_its_key_and_its_slot_to_the_same_worker():
    """With ``take`` the next event is claimed for the caller's worker instead of going round
    the queue."""
    first, second = keyed("1"), keyed("2")
    assert lifecycle.claim(second.pk, timezone.now()) is None  # marked behind the first
    running = lifecycle.claim(first.pk, timezone.now())
    assert running is not None and lifecycle.record_success(running, None) == "succeeded"
    taken = lifecycle.hand_on(running, take=True)
    assert taken is not None and taken.pk == second.pk and taken.status == EventStatus.RUNNING
    assert queued_tasks() == 0
    slot_events = [limited(str(n), "one_at_a_time") for n in range(2)]
    holder = lifecycle.claim(slot_events[0].pk, timezone.now())
    assert holder is not None and lifecycle.claim(slot_events[1].pk, timezone.now()) is None
    assert lifecycle.record_success(holder, None) == "succeeded"
    taken = lifecycle.hand_on(holder, take=True)
    assert taken is not None and taken.pk == slot_events[1].pk
    assert queued_tasks() == 0


def test_an_outcome_of_a_taken_back_attempt_is_not_recorded_nor_handed_on():
    event = lifecycle.claim(make_event("evt").pk, timezone.now())
    assert event is not None
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=2)
    assert lifecycle.record_success(event, None) == lifecycle.TAKEN_BACK
    assert lifecycle.record_failure(event, ValueError("late")) == lifecycle.TAKEN_BACK


def test_a_limited_workflow_never_steered_shows_no_change():
    assert lifecycle.claim(limited("1", "five_per_second").pk, timezone.now()) is not None
    assert ProcessingControl.objects.filter(name="five_per_second").exists()  # its rate's row
    state = {s.name: s for s in services.controls(ControlKind.WORKFLOW)}["five_per_second"]
    assert (state.paused, state.changed_at, state.changed_by) == (False, None, "")


def test_an_attempt_nobody_waited_on_looks_for_nothing(statements):
    """A key's event and a limited workflow's event that nobody waited on end with the
    outcome's one statement: the flag read back with it says there is nothing to hand on.
    (A database without ``RETURNING`` cannot read it back, and looks.)"""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for event in (keyed("1"), limited("w", "two_at_a_time")):
        running = lifecycle.claim(event.pk, timezone.now(), event.workflow_name)
        assert running is not None and not running.waited_on
        with CaptureQueriesContext(connection) as queries:
            assert lifecycle.record_success(running, None) == "succeeded"
            assert lifecycle.hand_on(running, take=True) is None
        looked = [q["sql"] for q in queries if q["sql"].startswith("SELECT")]
        assert (looked == []) == (statements == "returning"), looked


def test_a_waiting_event_flags_what_holds_it_back(statements):
    """Refused, an event is marked and flags its holders ``waited_on``: the events of its key
    before it and running, or the running attempts of its workflow; nothing else."""
    first, second, third = keyed("1"), keyed("2"), keyed("3")
    other_key = keyed("other", key="c2")
    assert lifecycle.claim(first.pk, timezone.now()) is not None
    assert lifecycle.claim(third.pk, timezone.now()) is None
    flagged = set(WebhookEvent.objects.filter(waited_on=True).values_list("pk", flat=True))
    assert flagged == {first.pk, second.pk}
    assert WebhookEvent.objects.get(pk=third.pk).waiting_for == "key"
    assert not WebhookEvent.objects.get(pk=other_key.pk).waited_on
    slot = [limited(str(n), "two_at_a_time") for n in range(3)]
    WebhookEvent.objects.update(waited_on=False)
    assert [lifecycle.claim(e.pk, timezone.now()) is not None for e in slot] == [True, True, False]
    flagged = set(WebhookEvent.objects.filter(waited_on=True).values_list("pk", flat=True))
    assert flagged == {slot[0].pk, slot[1].pk}


def test_a_wait_whose_holders_ended_before_the_flag_claims_again():
    """The mark is made, but what held the event back ended before the flag reached it:
    nothing is flagged, and the caller must claim once more (its end found no mark)."""
    keyed("1", status=EventStatus.SUCCEEDED)
    second = keyed("2")
    why = lifecycle._refusal(second.pk, timezone.now())
    assert why is not None and not why.key_held
    assert lifecycle._wait(second.pk, "key", timezone.now(), why) is False
    assert lifecycle._wait(second.pk, "concurrency", timezone.now(), why) is False
    assert not WebhookEvent.objects.filter(waited_on=True).exists()


@pytest.mark.django_db(transaction=True)  # the wake goes to Redis after commit
def test_an_event_whose_holders_keep_ending_before_the_flag_goes_round_the_queue(monkeypatch):
    """Each round, the attempts that refused it end before the flag (the race, forced): after
    the last round the event is put back on the queue, not left marked with nothing to wake
    it until recovery."""
    holders = [lifecycle.claim(limited(str(n), "two_at_a_time").pk, timezone.now()) for n in "ab"]
    assert all(holders)
    waiting = limited("c", "two_at_a_time")
    flag = lifecycle._flag_statement
    monkeypatch.setattr(lifecycle, "_flag_statement", lambda *key: flag(*key) + " AND 1 = 0")
    before = queued_tasks()
    assert lifecycle.claim(waiting.pk, timezone.now(), "two_at_a_time") is None
    stored = WebhookEvent.objects.get(pk=waiting.pk)
    assert (stored.status, stored.waiting_for, stored.attempts) == ("pending", "", 0)
    assert queued_tasks() == before + 1


def test_the_workflow_known_to_the_queue_takes_the_locked_claim_at_once():
    """A task that says its event's workflow is limited skips the claim that excludes limited
    workflows (and the read of why it refused): one claim statement, the locked one."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    hinted, unhinted = limited("1", "two_at_a_time"), limited("2", "two_at_a_time")
    with CaptureQueriesContext(connection) as queries:
        assert lifecycle.claim(hinted.pk, timezone.now(), "two_at_a_time") is not None
    assert sum(q["sql"].startswith("UPDATE") for q in queries) == 1
    with CaptureQueriesContext(connection) as queries:
        assert lifecycle.claim(unhinted.pk, timezone.now()) is not None
    assert sum(q["sql"].startswith("UPDATE") for q in queries) == 2
    # A wrong workflow is no shortcut: the event is claimed by its own rules.
    other = make_event("3")
    assert lifecycle.claim(other.pk, timezone.now(), "two_at_a_time") is not None


def test_the_slot_passes_down_a_line_of_waiting_events():
    """Two events wait for the one slot, both having flagged only the attempt then running:
    the event handed the slot looks at its end too, and hands it to the second (the hole the
    drain benchmark found: the second waited for recovery)."""
    holder = lifecycle.claim(limited("a", "one_at_a_time").pk, timezone.now(), "one_at_a_time")
    first, second = limited("b", "one_at_a_time"), limited("c", "one_at_a_time")
    assert holder is not None
    assert lifecycle.claim(first.pk, timezone.now(), "one_at_a_time") is None
    assert lifecycle.claim(second.pk, timezone.now(), "one_at_a_time") is None
    assert lifecycle.record_success(holder, None) == "succeeded"
    taken = lifecycle.hand_on(holder, take=True)
    assert taken is not None and taken.pk == first.pk
    assert lifecycle.record_success(taken, None) == "succeeded"
    taken = lifecycle.hand_on(taken, take=True)
    assert taken is not None and taken.pk == second.pk
