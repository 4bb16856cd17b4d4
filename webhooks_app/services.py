"""Operator actions shared by the admin, the API and the management commands."""

from __future__ import annotations

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from webhooks_app import queue
from webhooks_app.models import EventStatus, WebhookEvent


def replay_events(events: QuerySet[WebhookEvent]) -> int:
    """Run the selected events' workflows once more; returns how many were queued.

    Events that are running, or have no workflow (ignored), are left alone. The attempt count
    keeps growing, so a replayed dead event that fails again is dead again after one attempt.
    """
    replayable = events.exclude(status__in=[EventStatus.RUNNING]).exclude(workflow_name="")
    count = 0
    now = timezone.now()
    with transaction.atomic():
        for pk in replayable.select_for_update().values_list("pk", flat=True):
            WebhookEvent.objects.filter(pk=pk).update(
                status=EventStatus.PENDING, next_attempt_at=now, finished_at=None
            )
            queue.enqueue_in_transaction(pk)
            count += 1
    return count
