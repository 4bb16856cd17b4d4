"""The heartbeat of a worker process (a qcluster worker or a ``db_worker``): renew the lease of
the attempt it runs, take back the attempts of workers that are gone, and put back on the
queue what the queue lost.

It is a thread of the very process that runs the workflow, so a lease is renewed exactly as
long as that process lives: a worker whose cluster's master was killed keeps its lease while
it finishes (an orphan is alive, and its attempt is never taken over), and one that is killed
stops renewing at once. A workflow that swallows django-q2's timeout keeps its lease too,
until django-q2's guard kills its process.

Started by every worker as it spawns (django-q2's ``post_spawn``; webhooks_app's
``db_worker``), so a starting worker takes back lapsed leases before its first task, and only
there: a web process or a test that calls ``process_event`` itself holds no heartbeat, and its
lease is only the first ``LEASE_SECONDS``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.db import connections
from django.utils import timezone

from webhooks_app import lifecycle, replays
from webhooks_app.conf import webhook_settings
from webhooks_app.models import WebhookEvent

logger = logging.getLogger("webhooks_app")


class Heartbeat:
    def __init__(self) -> None:
        self._held: dict[int, int] = {}
        self._lock = threading.Lock()
        self._pid: int | None = None

    @property
    def running(self) -> bool:
        return self._pid == os.getpid()

    def start(self) -> None:
        """Start the thread in this process (once; again in a forked child)."""
        with self._lock:
            if self.running:
                return
            self._pid = os.getpid()
            self._held.clear()  # a forked child holds none of its parent's attempts
        threading.Thread(target=self._run, name="webhooks-heartbeat", daemon=True).start()

    def hold(self, event: WebhookEvent) -> None:
        """Renew this attempt's lease until :meth:`release`."""
        if self.running:
            with self._lock:
                self._held[event.pk] = event.attempts

    def release(self, event: WebhookEvent) -> None:
        with self._lock:
            self._held.pop(event.pk, None)

    def _run(self) -> None:
        while True:
            try:
                self.beat()
            except Exception:  # the database is away: try again next beat
                logger.exception("The webhooks heartbeat could not reach the database.")
                connections.close_all()
            time.sleep(webhook_settings.LEASE_SECONDS / 3)

    def beat(self) -> None:
        """Renew what this process holds, then recover what lost workers and a lost queue
        left: lapsed leases, events whose task is overdue (a Redis restarted empty, an
        enqueue that failed) and bulk replays whose job was lost. Every worker does it every beat, so recovery takes seconds, not
        the minute of the recovery schedule; the conditional updates make it happen once."""
        now = timezone.now()
        with self._lock:
            held = dict(self._held)
        for event_id in lifecycle.renew_leases(held, now) if held else ():
            with self._lock:
                still_held = self._held.get(event_id) == held[event_id]
            if still_held:
                logger.error(
                    "Webhook event %s: the lease of attempt %s was taken back while its "
                    "workflow still runs (the heartbeat was held up longer than LEASE_SECONDS).",
                    event_id,
                    held[event_id],
                )
        lifecycle.recover()
        replays.resume_stalled()


heartbeat = Heartbeat()
