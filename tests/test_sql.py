"""The hand-written hot-path statements decide exactly like their ORM fallbacks (the path a
database without ``RETURNING`` takes), on the real database of the run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

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
    from django.db import connection

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
    assert ingest._stored("generic", "evt") == ingest.StoredRow(
        event.pk, fields["status"], stranded
    )
    assert ingest._stored("github", "evt") is None
