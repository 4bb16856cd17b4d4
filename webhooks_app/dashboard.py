"""The numbers behind the admin dashboard, and which sources and workflows are paused.

Every query is bounded by a time window on an indexed column (``received_at``) or by a LIMIT,
so the page costs the same on ten events as on a million: no full-table COUNT(*).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Q
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from webhooks_app import alerts, checks, queue
from webhooks_app.models import EventStatus, ProcessingControl, WebhookEvent

#: Processing latencies are computed from at most this many recent successes.
LATENCY_SAMPLE = 1000
RECENT_FAILURES = 10


@dataclass(frozen=True)
class Bucket:
    start: datetime
    total: int
    failed: int


def counts_by_status(since: datetime) -> dict[str, int]:
    rows = (
        WebhookEvent.objects.filter(received_at__gte=since)
        .values("status")
        .annotate(n=Count("*"))
        .order_by()
    )
    counts = dict.fromkeys(EventStatus.values, 0)
    counts.update({row["status"]: row["n"] for row in rows})
    return counts


def failure_rate(counts: dict[str, int]) -> float | None:
    """Share of finished-or-failing events that failed (dead or waiting for a retry)."""
    bad = counts[EventStatus.DEAD] + counts[EventStatus.FAILED]
    judged = bad + counts[EventStatus.SUCCEEDED]
    return bad / judged if judged else None


def timeline(since: datetime, step: str) -> list[Bucket]:
    """Events per hour (``step="hour"``) or day, with empty buckets filled in."""
    trunc = TruncHour if step == "hour" else TruncDay
    delta = timedelta(hours=1) if step == "hour" else timedelta(days=1)
    per_bucket = (
        WebhookEvent.objects.filter(received_at__gte=since)
        .annotate(bucket=trunc("received_at"))
        .values("bucket")
        .order_by("bucket")
    )
    # Two COUNT(*)s, each answered from one index alone (received_at; status + received_at),
    # instead of one query fetching every row of the window for its status.
    totals = {row["bucket"]: row["n"] for row in per_bucket.annotate(n=Count("*"))}
    failures = per_bucket.filter(status__in=[EventStatus.DEAD, EventStatus.FAILED])
    failed = {row["bucket"]: row["n"] for row in failures.annotate(n=Count("*"))}
    # Buckets are truncated in the current time zone, like the database's Trunc*.
    start = timezone.localtime(since).replace(minute=0, second=0, microsecond=0)
    if step != "hour":
        start = start.replace(hour=0)
    buckets = []
    while start <= timezone.now():
        buckets.append(Bucket(start, totals.get(start, 0), failed.get(start, 0)))
        start += delta
    return buckets


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def latencies(since: datetime) -> dict[str, float | None]:
    """p50/p95 of processing time (start → finish) and of receipt → finish, in milliseconds."""
    rows = list(
        WebhookEvent.objects.filter(status=EventStatus.SUCCEEDED, received_at__gte=since)
        .order_by("-received_at")
        .values_list("received_at", "started_at", "finished_at")[:LATENCY_SAMPLE]
    )
    processing = sorted((f - s).total_seconds() * 1000 for _, s, f in rows if s and f)
    end_to_end = sorted((f - r).total_seconds() * 1000 for r, _, f in rows if f)
    return {
        "processing_p50": percentile(processing, 0.5),
        "processing_p95": percentile(processing, 0.95),
        "end_to_end_p50": percentile(end_to_end, 0.5),
        "end_to_end_p95": percentile(end_to_end, 0.95),
        "sample": len(rows),
    }


def breakdown(field: str, since: datetime) -> list[dict[str, Any]]:
    """Per source or per workflow: totals and failures in the window."""
    return list(
        WebhookEvent.objects.filter(received_at__gte=since)
        .values(field)
        .annotate(
            total=Count("id"),
            succeeded=Count("id", filter=Q(status=EventStatus.SUCCEEDED)),
            failed=Count("id", filter=Q(status__in=[EventStatus.DEAD, EventStatus.FAILED])),
            pending=Count("id", filter=Q(status__in=[EventStatus.PENDING, EventStatus.RUNNING])),
        )
        .order_by("-total")[:20]
    )


@dataclass(frozen=True)
class SourceActivity:
    """What a source received in the window: how many events, how many failed or died, and
    the last one's time (None: nothing in the window; ``ever`` says whether it had any)."""

    total: int = 0
    failed: int = 0
    last_received: datetime | None = None
    ever: bool = False


def source_activity(names: list[str], since: datetime) -> dict[str, SourceActivity]:
    """:class:`SourceActivity` of each of ``names`` since ``since``: one grouped query over the
    window, then one index probe (the unique ``(source, webhook_id)``) per name that received
    nothing in it. The time of a delivery older than the window is not looked for: finding it
    would read every event the source ever had."""
    found = {
        row["source"]: SourceActivity(row["total"], row["failed"], row["last"], ever=True)
        for row in WebhookEvent.objects.filter(received_at__gte=since, source__in=names)
        .values("source")
        .annotate(
            total=Count("id"),
            failed=Count("id", filter=Q(status__in=[EventStatus.DEAD, EventStatus.FAILED])),
            last=Max("received_at"),
        )
        .order_by()
    }
    for name in names:
        if name not in found:
            found[name] = SourceActivity(ever=WebhookEvent.objects.filter(source=name).exists())
    return found


def recent_failures() -> list[WebhookEvent]:
    return list(
        WebhookEvent.objects.filter(status__in=[EventStatus.DEAD, EventStatus.FAILED])
        .order_by("-received_at")
        .only(
            "id",
            "source",
            "webhook_id",
            "workflow_name",
            "status",
            "attempts",
            "received_at",
            "error",
            "history",  # its last entry holds the failure's one line (``last_error``)
        )[:RECENT_FAILURES]
    )


def open_alerts() -> list[dict[str, Any]]:
    """The open alerts (at most one per configured rule), each with what it measured, in words."""
    return [
        {
            "rule": alert.rule,
            "raised_at": alert.raised_at,
            "description": alerts.describe(alerts.Rule(alert.definition), alert.value),
        }
        for alert in alerts.open_alerts()
    ]


def paused_controls() -> list[tuple[str, str]]:
    """``(kind, name)`` of every paused source and workflow, in one query (the table holds a
    row per source or workflow ever paused or limited, never per event)."""
    return list(
        ProcessingControl.objects.filter(paused=True)
        .order_by("kind", "name")
        .values_list("kind", "name")
    )


#: Room left of the plot for the count labels, and below it for the time labels.
AXIS_LEFT, AXIS_BOTTOM, AXIS_TOP = 34, 20, 8
#: The hourly chart labels every third hour (on the local clock); the daily one every day.
HOURS_PER_LABEL = 3


def count_ticks(peak: int, most: int = 4) -> list[int]:
    """Round counts from 0 to at least ``peak``, in at most ``most`` equal steps of 1, 2 or 5
    times a power of ten."""
    peak, magnitude = max(peak, 1), 1
    while True:
        for step in (magnitude, 2 * magnitude, 5 * magnitude):
            steps = math.ceil(peak / step)
            if steps <= most:
                return [step * i for i in range(steps + 1)]
        magnitude *= 10


def chart_svg(
    buckets: list[Bucket], step: str, width: int = 720, height: int = 170
) -> dict[str, Any]:
    """Bars, axes and labels for a server-rendered SVG (the template draws it; nothing from a
    CDN). The count axis ends on a round number at or above the peak; time labels are bucket
    starts (the template formats them in the current time zone)."""
    ticks = count_ticks(max((b.total for b in buckets), default=0))
    top, bottom = AXIS_TOP, height - AXIS_BOTTOM
    plot_h = bottom - top
    slot = (width - AXIS_LEFT) / max(len(buckets), 1)

    def y(count: int) -> float:
        return round(bottom - plot_h * count / ticks[-1], 1)

    bars, labels = [], []
    for i, bucket in enumerate(buckets):
        x = AXIS_LEFT + i * slot
        bars.append(
            {
                "x": round(x + 1, 1),
                "w": round(max(slot - 2, 1), 1),
                "y": y(bucket.total),
                "h": round(bottom - y(bucket.total), 1),
                "fy": y(bucket.failed),
                "fh": round(bottom - y(bucket.failed), 1),
                "label": bucket.start,
                "total": bucket.total,
                "failed": bucket.failed,
            }
        )
        if step != "hour" or bucket.start.hour % HOURS_PER_LABEL == 0:
            labels.append({"x": round(x + slot / 2, 1), "start": bucket.start})
    return {
        "bars": bars,
        "width": width,
        "height": height,
        "left": AXIS_LEFT,
        "bottom": bottom,
        "label_y": height - 6,
        "y_ticks": [{"y": y(count), "count": count} for count in ticks],
        "x_labels": labels,
    }


def snapshot() -> dict[str, Any]:
    """Everything the dashboard shows, for the last 24 hours (and a 7-day chart)."""
    now = timezone.now()
    day_ago, week_ago = now - timedelta(hours=24), now - timedelta(days=7)
    counts = counts_by_status(day_ago)
    return {
        "generated_at": now,
        "counts": counts,
        "total": sum(counts.values()),
        "failure_rate": failure_rate(counts),
        "latency": latencies(day_ago),
        "queue": queue.queue_info(),
        "missing_secrets": checks.missing_secret_errors(),  # E003, shown above everything
        "paused": paused_controls(),
        "alerts": open_alerts(),
        "hourly": chart_svg(timeline(day_ago, "hour"), "hour"),
        "daily": chart_svg(timeline(week_ago, "day"), "day"),
        "by_source": breakdown("source", day_ago),
        "by_workflow": breakdown("workflow_name", day_ago),
        "failures": recent_failures(),
    }
