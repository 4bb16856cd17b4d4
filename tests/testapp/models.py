from django.db import models


class Execution(models.Model):
    """One row per workflow run, written by the test workflows from whatever process runs them."""

    webhook_id = models.CharField(max_length=255)
    workflow = models.CharField(max_length=100)
    pid = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.workflow}:{self.webhook_id}@{self.pid}"
