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


class SoakRun(models.Model):
    """One row per run of the ``soak`` workflow (bench/soak.py): a workflow may legitimately run
    more than once for one event (a worker killed mid-run), and the soak reports how often."""

    webhook_id = models.CharField(max_length=255, db_index=True)
    pid = models.IntegerField(help_text="The worker process: the soak kills the node running it.")
    started_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.webhook_id


class SoakEffect(models.Model):
    """The ``soak`` workflow's side effect, done inside ``once()``. Deliberately not unique on
    webhook_id: a doubled effect must show up as two rows for the soak to count, not be hidden
    by a constraint."""

    webhook_id = models.CharField(max_length=255, db_index=True)
    done_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.webhook_id


class RawCompletion(models.Model):
    """The drain's raw django-q2 floor (bench/drain.py): one row per finished task, written by
    the task itself in one autocommit INSERT, the least a task can do to be seen to finish.
    ``tag`` names the drain; no index but the primary key, so the INSERT stays that cheap."""

    tag = models.CharField(max_length=64)
    done_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.tag
