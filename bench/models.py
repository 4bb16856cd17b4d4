"""The naive receiver's table (``migrate --run-syncdb`` creates it: the bench has no migrations)."""

from __future__ import annotations

from django.db import models


class NaiveEvent(models.Model):
    """What the hand-written receiver stores: a unique webhook_id, the payload, a timestamp."""

    webhook_id = models.CharField(max_length=255, unique=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.webhook_id
