"""The hand-written hot-path statements decide exactly like their ORM fallbacks (the path a
database without ``RETURNING`` takes), on the real database of the run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone

from tests.conftest import envelope
from webhooks_app import ingest, sql, tasks
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["returning", "orm-fallback"])
def statements(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "orm-fallback":
        monkeypatch.setattr(sql, "supports_returning", lambda vendor: False)
    return str(request.param)


def ago(seconds: float):
    return timezone.now() - timedelta(seconds=seconds)


class Ago(float):
    """Seconds before the test runs (cases are built at collection, maybe seconds earlier)."""


def resolved(fields: dict) -> dict:
    return {name: ago(v) if isinstance(v, Ago) else v for name, v in fields.items()}


def make_event(webhook_id: str, **fields) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source="generic", webhook_id=webhook_id, workflow_name="record",
        payload={"n": 1, "nested": {"ok": True}}, history=[{"attempt": 0}], **fields,
    )  # fmt: skip


def test_returning_is_used_on_the_databases_ci_runs():
    assert sql.supports_returning(connection.vendor)


CLAIMS = {
    "pending": ({"status": EventStatus.PENDING}, True),
    "failed, retry due": ({"status": EventStatus.FAILED, "next_attempt_at": Ago(1)}, True),
    "failed, retry later": (
        {"status": EventStatus.FAILED, "next_attempt_at": timezone.now() + timedelta(hours=1)},
        False,
    ),
    "running": ({"status": EventStatus.RUNNING, "started_at": Ago(1), "attempts": 1}, False),
    "running past the deadline": (
        {"status": EventStatus.RUNNING, "started_at": Ago(86400), "attempts": 1},
        True,
    ),
    "running past the deadline, last attempt": (
        {
            "status": EventStatus.RUNNING,
            "started_at": Ago(86400),
            "attempts": settings.WEBHOOKS["MAX_ATTEMPTS"],
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
    claimed = tasks.claim(event.pk, now)
    stored = WebhookEvent.objects.get(pk=event.pk)
    if not claimable:
        assert claimed is None
        assert stored.status == fields["status"] and stored.attempts == event.attempts
        return
    assert claimed is not None
    assert (claimed.pk, claimed.status, claimed.attempts) == (
        event.pk,
        "running",
        event.attempts + 1,
    )
    assert claimed.started_at == now and claimed.finished_at is None
    assert claimed.payload == {"n": 1, "nested": {"ok": True}}  # JSON converted back
    assert claimed.history == [{"attempt": 0}]
    assert claimed.received_at == event.received_at and timezone.is_aware(claimed.received_at)
    assert (stored.status, stored.attempts, stored.started_at) == ("running", claimed.attempts, now)
    assert tasks.claim(event.pk, now) is None  # a second task for the same attempt gets nothing


def test_insert_unless_duplicate(statements):
    first = WebhookEvent(source="generic", webhook_id="once", workflow_name="record")
    assert ingest.insert_unless_duplicate(first)
    assert first.pk == WebhookEvent.objects.get(webhook_id="once").pk
    again = WebhookEvent(source="generic", webhook_id="once", workflow_name="record")
    assert not ingest.insert_unless_duplicate(again)
    other_source = WebhookEvent(source="github", webhook_id="once", workflow_name="record")
    assert ingest.insert_unless_duplicate(other_source)
    assert WebhookEvent.objects.count() == 2


def test_insert_unless_duplicate_also_refuses_the_same_signed_content(statements):
    """The second unique constraint: a new webhook id does not make stored content new."""
    first = WebhookEvent(source="generic", webhook_id="a", content_key="k" * 64)
    assert ingest.insert_unless_duplicate(first)
    replay = WebhookEvent(source="generic", webhook_id="b", content_key="k" * 64)
    assert not ingest.insert_unless_duplicate(replay)
    keyless = [WebhookEvent(source="generic", webhook_id=f"n{i}") for i in range(2)]
    assert all(ingest.insert_unless_duplicate(event) for event in keyless)  # NULL keys differ
    other_source = WebhookEvent(source="github", webhook_id="a", content_key="k" * 64)
    assert ingest.insert_unless_duplicate(other_source)
    assert WebhookEvent.objects.count() == 4


@pytest.mark.parametrize(
    ("fields", "stranded"),
    [
        ({"status": EventStatus.PENDING}, False),
        ({"status": EventStatus.PENDING, "received_at": Ago(3600)}, True),
        (
            {"status": EventStatus.PENDING, "received_at": Ago(3600), "next_attempt_at": Ago(0)},
            False,
        ),
        (
            {"status": EventStatus.PENDING, "received_at": Ago(3600), "next_attempt_at": Ago(3600)},
            True,
        ),
        ({"status": EventStatus.SUCCEEDED, "received_at": Ago(3600)}, False),
        ({"status": EventStatus.FAILED, "received_at": Ago(3600)}, False),
    ],
)
def test_stored_row_says_whether_a_pending_event_is_stranded(fields, stranded):
    event = make_event("evt", **resolved(fields))
    assert ingest._stored("generic", "webhook_id", "evt") == ingest.StoredRow(
        event.pk, fields["status"], stranded, "evt"
    )
    assert ingest._stored("github", "webhook_id", "evt") is None


def test_stored_row_is_found_by_webhook_id_or_by_content_key(statements):
    event = make_event("evt", content_key="c" * 64)
    found = ingest.StoredRow(event.pk, EventStatus.PENDING, False, "evt")
    assert ingest._stored("generic", "webhook_id", "evt") == found
    assert ingest._stored("generic", "content_key", "c" * 64) == found
    assert ingest._stored("generic", "content_key", "d" * 64) is None
    assert ingest._stored("github", "content_key", "c" * 64) is None


def _terminate_this_connection_from_the_server() -> None:
    """What a PostgreSQL restart or an idle timeout does to a persistent connection."""
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


needs_a_server = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite has no server that could drop a connection"
)


@needs_a_server
@pytest.mark.django_db(transaction=True)
def test_a_delivery_after_the_server_dropped_the_connection_is_stored(post_webhook):
    _terminate_this_connection_from_the_server()
    response = post_webhook(envelope("record", "after-drop"))
    assert response.status_code == 202, response.content
    assert WebhookEvent.objects.filter(webhook_id="after-drop").exists()


@needs_a_server
@pytest.mark.django_db(transaction=True)
def test_a_task_after_the_server_dropped_the_connection_runs():
    event = make_event("evt")
    _terminate_this_connection_from_the_server()
    assert tasks.process_event(event.pk) == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_a_failure_on_a_live_connection_is_not_retried():
    calls = []

    def failing() -> None:
        calls.append(1)
        raise OperationalError("database is locked")

    connection.ensure_connection()
    with pytest.raises(OperationalError):
        sql.retrying_lost_connection(failing)
    assert calls == [1]
    with transaction.atomic(), pytest.raises(OperationalError):
        sql.retrying_lost_connection(failing)  # inside a transaction: never
    assert calls == [1, 1]


def test_finish_writes_nothing_once_recovery_took_the_attempt_back():
    event = tasks.claim(make_event("evt").pk, timezone.now())
    assert event is not None
    # Recovery decided the worker was lost and started the event over (attempt 2 under way).
    WebhookEvent.objects.filter(pk=event.pk).update(attempts=2)
    tasks.record_success(event, {"late": True})
    stored = WebhookEvent.objects.get(pk=event.pk)
    assert (stored.status, stored.result, stored.history) == ("running", None, [{"attempt": 0}])


def test_finish_stores_json_and_null_as_the_orm_would():
    event = tasks.claim(make_event("evt").pk, timezone.now())
    assert event is not None
    tasks.record_success(event, None)
    stored = WebhookEvent.objects.get(pk=event.pk)
    assert stored.status == "succeeded" and stored.result is None
    assert WebhookEvent.objects.filter(pk=event.pk, result__isnull=True).exists()
    assert [entry.get("outcome") for entry in stored.history] == [None, "succeeded"]
