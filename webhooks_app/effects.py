"""Exactly-once side effects inside at-least-once workflows.

A workflow can run more than once for one event (a retry after an exception, a redelivery after
a worker died). Wrapping a database side effect in :func:`once` records it in the same
transaction as the effect, keyed on the event: a second run finds the record and skips it, and
an effect that raises rolls its record back, so the retry does it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import IntegrityError, transaction

from webhooks_app.models import EventEffect, WebhookEvent


@contextmanager
def once(event: WebhookEvent, key: str = "default") -> Iterator[bool]:
    """``with once(event, "credit") as first: if first: ...``: ``first`` is True exactly once.

    Only effects on the same database are covered by the transaction; for an external call
    (an e-mail, an HTTP API) pass an idempotency key derived from ``event.webhook_id`` to the
    other system instead.
    """
    with transaction.atomic():
        try:
            # A savepoint, so a concurrent duplicate's IntegrityError leaves the outer block usable.
            with transaction.atomic():
                EventEffect.objects.create(event=event, key=key)
            first = True
        except IntegrityError:
            first = False
        yield first
