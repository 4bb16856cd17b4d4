from django.db import models


class NaiveEvent(models.Model):
    """The hand-written receiver's table: unique webhook_id, the payload, a timestamp."""

    webhook_id = models.CharField(max_length=255, unique=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.webhook_id
