"""The operator actions' service functions, where their behaviour is more than the command's."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from webhooks_app import services
from webhooks_app.effects import once
from webhooks_app.models import EventEffect, EventStatus, WebhookEvent

pytestmark = pytest.mark.django_db

EVENT_TABLE = WebhookEvent._meta.db_table


def event_deletes(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries if q["sql"].startswith(f'DELETE FROM "{EVENT_TABLE}"')]


def test_purge_reads_only_keys_and_deletes_in_batches():
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            source="generic", webhook_id=f"p{i}", status=EventStatus.DEAD,
            payload={"big": "x" * 1000}, history=[{"outcome": "failed"}],
        )
        for i in range(10)
    )  # fmt: skip
    WebhookEvent.objects.create(source="generic", webhook_id="kept")
    with once(WebhookEvent.objects.get(webhook_id="p0"), "charged"):
        pass
    with CaptureQueriesContext(connection) as queries:
        purged = services.purge_events(
            WebhookEvent.objects.filter(status=EventStatus.DEAD), batch_size=3
        )
    assert purged == 10
    assert list(WebhookEvent.objects.values_list("webhook_id", flat=True)) == ["kept"]
    assert not EventEffect.objects.exists()
    assert len(event_deletes(queries)) == 4  # 3 + 3 + 3 + 1, each its own short transaction
    assert not [q["sql"] for q in queries if "payload" in q["sql"] or "history" in q["sql"]]
