"""What the lease and steering tests measure on :class:`~tests.testapp.models.Span` records: which
executions ran at the same time, how many at most, how many started in one window."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from django.utils import timezone

from tests.testapp.models import Span


def _end(span: Span) -> datetime:
    """An unfinished span (its worker killed mid-run, or still running) counts as running until
    now: never shorter than it really ran, so an overlap is never missed."""
    return span.ended_at or timezone.now()


def overlapping(spans: Iterable[Span]) -> list[tuple[Span, Span]]:
    """The pairs of spans that ran at the same time (touching ends do not overlap)."""
    ordered = sorted(spans, key=lambda span: span.started_at)
    pairs = []
    for index, first in enumerate(ordered):
        for later in ordered[index + 1 :]:
            if later.started_at >= _end(first):
                break  # sorted by start: every later one starts after ``first`` ended too
            pairs.append((first, later))
    return pairs


def most_at_once(spans: Sequence[Span]) -> int:
    """The largest number of spans running at one instant."""
    # At equal times an end (-1) sorts before a start (+1): touching spans do not overlap.
    changes = sorted(
        [(span.started_at, 1) for span in spans] + [(_end(span), -1) for span in spans]
    )
    running = most = 0
    for _, change in changes:
        running += change
        most = max(most, running)
    return most


def busiest_window(times: Sequence[datetime], seconds: float = 1.0) -> int:
    """The most of ``times`` that fall in any one window ``[t, t + seconds)``."""
    ordered = sorted(times)
    width = timedelta(seconds=seconds)
    most = first = 0
    for last, time in enumerate(ordered):
        while time - ordered[first] >= width:
            first += 1
        most = max(most, last - first + 1)
    return most
