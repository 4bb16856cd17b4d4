"""The hand-written hot-path statements decide exactly like their ORM fallbacks (the path a
database without ``RETURNING`` takes), on the real database of the run."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, transaction

from tests.conftest import Ago, envelope, resolved
from webhooks_app import ingest, sql, tasks
from webhooks_app.models import EventStatus, WebhookEvent

pytestmark = pytest.mark.django_db


def make_event(webhook_id: str, **fields) -> WebhookEvent:
    return WebhookEvent.objects.create(
        source="generic", webhook_id=webhook_id, workflow_name="record",
        payload={"n": 1, "nested": {"ok": True}}, history=[{"attempt": 0}], **fields,
    )  # fmt: skip


def test_returning_is_used_on_the_databases_ci_runs():
    assert sql.supports_returning(connection.vendor)


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


# -- prepared statements: the lifecycle's, planned once per connection on PostgreSQL ----------

on_postgres = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="prepared statements are PostgreSQL's"
)


def prepared_like(fragment: str) -> int:
    """How many statements this connection holds prepared whose text contains ``fragment``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{fragment}%"]
        )
        return cursor.fetchone()[0]


@on_postgres
@pytest.mark.django_db(transaction=True)
def test_an_attempts_statements_are_planned_once_per_connection():
    connection.close()  # a new session: nothing prepared yet
    tasks.process_event(make_event("first").pk)
    claims, finishes = prepared_like("SET \"status\" = 'running'"), prepared_like("unflushed")
    assert claims == 1 and finishes >= 1
    for n in range(5):
        assert tasks.process_event(make_event(f"then-{n}").pk) == "succeeded"
    assert (prepared_like("SET \"status\" = 'running'"), prepared_like("unflushed")) == (
        claims,
        finishes,
    )


@on_postgres
def test_only_the_prepared_cursor_prepares(monkeypatch):
    for _ in range(10):  # Django's own cursors: as many times as psycopg's default threshold
        with sql.prepared_cursor(connection), connection.cursor() as cursor:
            cursor.execute("SELECT 1 AS webhooks_by_django")
    assert prepared_like("webhooks_by_django") == 0
    with sql.prepared_cursor(connection) as cursor:
        cursor.execute("SELECT 1 AS webhooks_by_the_app")
    assert prepared_like("webhooks_by_the_app") == 1
    # Behind a transaction-pooling PgBouncer, Django is told DISABLE_SERVER_SIDE_CURSORS.
    monkeypatch.setitem(connection.settings_dict, "DISABLE_SERVER_SIDE_CURSORS", True)
    with sql.prepared_cursor(connection) as cursor:
        cursor.execute("SELECT 1 AS webhooks_behind_a_pooler")
    assert prepared_like("webhooks_behind_a_pooler") == 0


def test_the_prepared_cursor_goes_through_djangos_wrapper():
    """Execute wrappers (the fault tests use them) see its statements; the query log, when
    Django keeps one, shows them with their values, as any other."""
    from django.test.utils import CaptureQueriesContext

    seen = []

    def wrapper(execute, sql_text, params, many, context):
        seen.append(sql_text)
        return execute(sql_text, params, many, context)

    with connection.execute_wrapper(wrapper), sql.prepared_cursor(connection) as cursor:
        cursor.execute("SELECT %s AS webhooks_wrapped", [7])
        assert cursor.fetchone() == (7,)
    assert seen == ["SELECT %s AS webhooks_wrapped"]
    if connection.vendor == "postgresql":
        assert prepared_like("webhooks_wrapped") == 1
    with CaptureQueriesContext(connection) as logged, sql.prepared_cursor(connection) as cursor:
        cursor.execute("SELECT %s AS webhooks_logged", [7])
    assert [query["sql"] for query in logged.captured_queries] == ["SELECT 7 AS webhooks_logged"]


@pytest.mark.django_db(transaction=True)  # the pipeline runs only outside a transaction
def test_a_locked_row_is_one_transaction_that_commits_or_rolls_back_whole():
    """The lock and the statement commit together (on PostgreSQL sent as one pipeline); a
    failing statement rolls back what the lock statements did, and leaves the connection
    usable, out of any transaction, its error a Django one."""
    from django.db import IntegrityError

    table = sql.quote(WebhookEvent._meta.db_table)
    event = make_event("locked")
    column = sql.quote("event_type")
    touch = (f"UPDATE {table} SET {column} = %s WHERE id = %s", ["touched", event.pk])
    read = (f"SELECT {column} FROM {table} WHERE id = %s", [event.pk])
    nothing = ("SELECT 1 WHERE 1 = %s", [0])
    assert sql.locked_rows(connection, [touch], [read, nothing]) == [("touched",), None]
    rolled_back = (touch[0], ["lost", event.pk])
    with pytest.raises(IntegrityError):  # a NOT NULL column set to NULL
        sql.locked_rows(
            connection, [rolled_back], [(touch[0].replace("%s", "NULL", 1), [event.pk])]
        )
    assert WebhookEvent.objects.get(pk=event.pk).event_type == "touched"
    assert connection.get_autocommit() and not connection.in_atomic_block
    if connection.vendor == "postgresql":
        from psycopg.pq import TransactionStatus

        assert connection.connection.info.transaction_status == TransactionStatus.IDLE
