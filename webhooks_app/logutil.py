"""Making request-supplied text safe to log: one event, one log line."""

from __future__ import annotations

MAX_LOGGED_LENGTH = 200


def printable(value: object, limit: int = MAX_LOGGED_LENGTH) -> str:
    """``value`` with control characters escaped (``\\n``, ``\\x1b``…) and its length capped.

    Request-supplied ids, sources and event types go through this before any log call, so a
    delivery cannot forge log lines or colour a terminal (cf. CVE-2025-48432).
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")
