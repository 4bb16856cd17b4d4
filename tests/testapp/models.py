from django.db import models


class Execution(models.Model):
    """One row per workflow run, written by the test workflows from whatever process runs them."""

    webhook_id = models.CharField(max_length=255)
    workflow = models.CharField(max_length=100)
    pid = models.IntegerField()
    at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.workflow}:{self.webhook_id}@{self.pid}"


class Span(models.Model):
    """One execution of a steering test workflow, from its own start to its own end: what
    the ordering, limit and lease tests measure overlaps and order with."""

    webhook_id = models.CharField(max_length=255)
    workflow = models.CharField(max_length=100)
    order_key = models.CharField(max_length=255, blank=True)
    attempt = models.IntegerField()
    pid = models.IntegerField()
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True)

    def __str__(self) -> str:
        return f"{self.workflow}:{self.webhook_id}#{self.attempt}@{self.pid}"
