"""How the operator's pages (event list and detail, dashboard, purge page) show times,
durations and errors: one format everywhere, so two pages never disagree about an event.

- Times to the second in the current time zone (``TIME_ZONE``, or the one activated for the
  request), the UTC time in the ``title``: senders and servers log in UTC, operators read
  local time. An attempt's history stores ISO strings in UTC; they are shown the same way.
- Durations in the unit a person reads: ``2 ms``, ``1.4 s``, ``17.8 min``.
- An error as one line: the exception's type and message, never the traceback's first line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django import template
from django.utils import timezone
from django.utils.html import format_html

if TYPE_CHECKING:
    from webhooks_app.models import WebhookEvent

register = template.Library()

SHOWN_FORMAT = "%Y-%m-%d %H:%M:%S"
NONE = "-"  # what the admin shows for an empty value


@register.filter
def local_time(value: datetime | str | None) -> str:
    """``<time title="… UTC">2026-01-15 09:30:05</time>``, or ``-`` when there is no time."""
    if not value:
        return NONE
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    utc = moment.astimezone(UTC)
    return format_html(
        '<time datetime="{}" title="{} UTC">{}</time>',
        utc.isoformat(timespec="seconds"),
        utc.strftime(SHOWN_FORMAT),
        timezone.localtime(moment).strftime(SHOWN_FORMAT),
    )


@register.filter
def human_duration(value: float | timedelta | None) -> str:
    """Milliseconds (or a timedelta) rounded to the largest unit that keeps it above one."""
    if value is None:
        return NONE
    ms = value.total_seconds() * 1000 if isinstance(value, timedelta) else float(value)
    if round(ms) < 1:
        return "< 1 ms"
    if round(ms) < 1000:
        return f"{ms:.0f} ms"
    # Each bound is checked on the rounded value, so 59.97 s reads "1.0 min", never "60.0 s".
    for unit, seconds, bound in (("s", 1, 60), ("min", 60, 60), ("h", 3600, 24)):
        if round(ms / 1000 / seconds, 1) < bound:
            return f"{ms / 1000 / seconds:.1f} {unit}"
    return f"{ms / 86_400_000:.1f} d"


@register.filter
def last_error(event: WebhookEvent) -> str:
    """The event's last failure in one line, or ``""`` if it has none.

    The attempt's history entry holds ``Type: message`` as the worker recorded it; without one
    (an error written by hand or by an older version) the stored error's last non-blank line,
    which in a traceback is the exception.
    """
    if not event.error:
        return ""
    history = event.history if isinstance(event.history, list) else []
    if history and isinstance(history[-1], dict) and history[-1].get("error"):
        return str(history[-1]["error"])
    lines = [line for line in event.error.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
