"""Prometheus metrics (contract §11): what ``GET /webhooks/metrics/`` exposes.

Each number is measured where it lives.

**State, read from the database at scrape time.** ``webhooks_events{source,workflow,status}``
(every status of each source and workflow stored, zeros included, so that no series vanishes
when its count drops to 0), ``webhooks_oldest_pending_seconds`` (how long the longest-waiting
``pending`` event has waited since it was queued, or received: the moment recovery measures
from too) and ``webhooks_queue_depth`` (tasks waiting in the broker: one ``queue_size`` call,
not the cluster scan of the health details). The database is the same for every process and
node, so these are right whichever process answers. Counting a million events still reads a
million index or table entries (bench/RESULTS.md, "Metrics scrape"), so the counts and the
oldest pending time are kept for :data:`STATE_SECONDS` in Django's default cache: concurrent
scrapers (two Prometheus replicas, one scrape per node) share one count per interval.

**Happenings, counted where they happen.** ``webhooks_received_total{source,outcome}`` in the
web process that answered the delivery, ``webhooks_attempt_seconds{workflow}`` in the worker
that ran the attempt (a histogram), with prometheus_client. A process's counts live in that
process, so a node's numbers are correct across its gunicorn workers and its qcluster workers
through prometheus_client's multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set for every
process of the node, each writes its counts to a memory-mapped file of its own there and a
scrape adds all the files up (docs/operating.md says how to set it up for gunicorn). Without
it, a process exposes only its own counts: right for ``runserver`` or a single worker.

Why not the database or the cache for those. Refusals must cost no database write (a flood of
forgeries would become a flood of writes), and a shared cache's increment is a network round
trip on every delivery (Redis) or is not shared at all (``LocMemCache``); the mmap write costs
a microsecond or two. And the database keeps only each event's last attempt
(``started_at``/``finished_at``) while cleanup deletes rows: a histogram derived from it would
forget attempts and go backwards, which Prometheus reads as a counter reset. Counts per node
are what Prometheus expects: it scrapes every node and ``sum()`` adds the nodes up.

Label values are bounded. ``outcome`` is ``accepted``, ``duplicate``, ``ignored``,
``handshake`` or a refusal's error code; ``workflow`` a workflow name events were stored for.
A refused delivery's source comes from the URL, which anyone can invent: an unknown source is
counted as ``(other)``, and so is every further name once :data:`MAX_REFUSED_SOURCES` have
been seen by one process (the ASGI body limit answers 413 to an unknown source too).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Count, DateTimeField, Min
from django.db.models.expressions import RawSQL
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from webhooks_app import queue, sql
from webhooks_app.exceptions import UnknownSource, WebhookError
from webhooks_app.models import EventStatus, WebhookEvent
from webhooks_app.refusals import OTHER_SOURCE

if TYPE_CHECKING:
    from webhooks_app.ingest import Outcome

logger = logging.getLogger("webhooks_app")

#: The variable that puts prometheus_client in multiprocess mode (it reads it when imported).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = MULTIPROC_ENV in os.environ
#: The text exposition format every Prometheus version reads (what ``generate_latest`` writes).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How long the event counts and the oldest pending time are shared between scrapes.
STATE_SECONDS = 30
#: Distinct source names one process counts refusals under; any further one is ``(other)``.
MAX_REFUSED_SOURCES = 100
#: A 2xx answer's outcome: ingest's ``status``, or (a Slack or WhatsApp check) ``handshake``.
STORED_OUTCOMES = frozenset({"accepted", "duplicate", "ignored"})
HANDSHAKE = "handshake"
#: Seconds; up to django-q2's usual timeouts, past which an attempt is one long tail.
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

RECEIVED = Counter(
    "webhooks_received",
    "Deliveries answered, by source and outcome: accepted, duplicate, ignored, handshake, "
    "or the refusal's error code.",
    ["source", "outcome"],
    registry=None,
)
ATTEMPT_SECONDS = Histogram(
    "webhooks_attempt_seconds",
    "How long each attempt of a workflow took, until its outcome was stored.",
    ["workflow"],
    buckets=ATTEMPT_BUCKETS,
    registry=None,
)

_refused_sources: set[str] = set()
_lock = threading.Lock()


def count_delivery(source: str, outcome: Outcome) -> None:
    """Count a delivery ``ingest.receive`` answered (accepted, duplicate, ignored, handshake)."""
    status = outcome.body.get("status")
    _count(source, status if status in STORED_OUTCOMES else HANDSHAKE)


def count_handshake(source: str) -> None:
    """Count a subscription check answered with its challenge (WhatsApp's ``GET``)."""
    _count(source, HANDSHAKE)


def count_refusal(source: str, error: WebhookError) -> None:
    """Count a refused request under its error code; no database, no cache."""
    _count(_refused_source(source, error), error.error)


def observe_attempt(workflow: str, seconds: float) -> None:
    """Record how long one attempt of ``workflow`` took (in the worker that ran it)."""
    try:
        ATTEMPT_SECONDS.labels(workflow).observe(seconds)
    except OSError as exc:
        _report_unwritable(str(exc))


def _refused_source(source: str, error: WebhookError) -> str:
    if isinstance(error, UnknownSource):
        return OTHER_SOURCE
    if source in _refused_sources:
        return source
    with _lock:
        if len(_refused_sources) >= MAX_REFUSED_SOURCES:
            return OTHER_SOURCE
        _refused_sources.add(source)
    return source


def _count(source: str, outcome: str) -> None:
    # A metric must never cost a delivery its answer: a 2xx is counted after the event
    # is stored, and a 500 then would make the sender deliver it again.
    try:
        RECEIVED.labels(source, outcome).inc()
    except OSError as exc:
        _report_unwritable(str(exc))


@functools.cache
def _report_unwritable(error: str) -> None:
    """Log once per process and error, not once per delivery, that counts are being lost."""
    logger.error(
        "Metrics are not counted: %s=%r is not a writable directory (%s); "
        "see system check webhooks_app.W009.",
        MULTIPROC_ENV,
        os.environ.get(MULTIPROC_ENV),
        error,
    )


def reset() -> None:
    """Forget every count of this process (tests; in multiprocess mode the files remain)."""
    RECEIVED.clear()
    ATTEMPT_SECONDS.clear()
    with _lock:
        _refused_sources.clear()


def multiproc_dir_problem() -> str | None:
    """Why ``PROMETHEUS_MULTIPROC_DIR`` cannot hold the counts, or None (also when unset)."""
    if MULTIPROC_ENV not in os.environ:
        return None
    path = os.environ[MULTIPROC_ENV]
    if not os.path.isdir(path):
        return "it is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return "this process cannot write to it"
    return None


def exposition() -> bytes:
    """One scrape: every family, in the Prometheus text format (:data:`CONTENT_TYPE`)."""
    registry = CollectorRegistry()
    if MULTIPROCESS:
        MultiProcessCollector(registry)  # every process's files, this one's included
    else:
        registry.register(RECEIVED)
        registry.register(ATTEMPT_SECONDS)
    registry.register(StateCollector())
    return generate_latest(registry)


class StateCollector(Collector):
    """The families read from the database and the broker at scrape time."""

    def collect(self) -> Iterable[Metric]:
        counts, oldest = stored_state()
        events = GaugeMetricFamily(
            "webhooks_events",
            "Stored events, by source, workflow and status.",
            labels=["source", "workflow", "status"],
        )
        for (source, workflow), by_status in sorted(counts.items()):
            for status in EventStatus.values:
                events.add_metric([source, workflow, status], by_status.get(status, 0))
        yield events
        waited = max((timezone.now() - oldest).total_seconds(), 0.0) if oldest else 0.0
        yield GaugeMetricFamily(
            "webhooks_oldest_pending_seconds",
            "How long the longest-waiting pending event has waited since it was queued "
            "(0 when none is pending).",
            value=waited,
        )
        depth = queue_depth()
        if depth is not None:  # broker unreachable: no sample, rather than a false 0
            yield GaugeMetricFamily(
                "webhooks_queue_depth", "Tasks waiting in the broker.", value=depth
            )


Counts = dict[tuple[str, str], dict[str, int]]


def stored_state() -> tuple[Counts, datetime | None]:
    """Events per (source, workflow) and status, and when the longest-waiting pending event
    was queued; from the cache while :data:`STATE_SECONDS` old at most."""
    key = state_cache_key()
    state: tuple[Counts, datetime | None] | None = cache.get(key)
    if state is None:
        state = (count_events(), oldest_pending())
        cache.set(key, state, STATE_SECONDS)
    return state


def state_cache_key() -> str:
    """Per database: projects (or test runs) that share a cache never read each other's counts."""
    name = str(connections[DEFAULT_DB_ALIAS].settings_dict["NAME"])
    return "webhooks_app:metrics:" + hashlib.sha256(name.encode()).hexdigest()[:16]


def count_events() -> Counts:
    counts: Counts = {}
    rows = (
        WebhookEvent.objects.values_list("source", "workflow_name", "status")
        .annotate(n=Count("*"))
        .order_by()
    )
    for source, workflow, status, n in rows:
        counts.setdefault((source, workflow), {})[status] = n
    return counts


def oldest_pending() -> datetime | None:
    """The earliest time a ``pending`` event was queued (or received): ``sql.queued_at``."""
    queued_at = RawSQL(sql.queued_at(), (), output_field=DateTimeField())  # noqa: S611 - names only
    oldest: datetime | None = WebhookEvent.objects.filter(status=EventStatus.PENDING).aggregate(
        oldest=Min(queued_at)
    )["oldest"]
    return oldest


def queue_depth() -> int | None:
    """Tasks waiting in the broker, in one call; None when it does not answer."""
    try:
        return int(queue.broker().queue_size())
    except Exception:
        return None
