"""The audit trail of refused deliveries, at a cost a flood of forgeries cannot raise.

Every refusal is counted per kind: ``(source, status, error code)``. The first refusal of a kind
is logged at once, as one line; after that a kind gets at most one line per
:data:`REPORT_INTERVAL` seconds, which says how many were refused since its previous line. A
million forged requests a minute are then a handful of lines a minute instead of a million
writes to the log, and this process's exact totals stay available from :func:`totals`
(``/webhooks/metrics/`` counts across a node's processes itself: :mod:`webhooks_app.metrics`).
Refusals left uncounted in a line when the process exits are logged then.

Never the body, never a header value: a line carries the source (escaped), the status and the
error code.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass

from webhooks_app.exceptions import WebhookError
from webhooks_app.logutil import printable

logger = logging.getLogger("webhooks_app")

#: Seconds between two lines about the same kind of refusal.
REPORT_INTERVAL = 10.0
#: Distinct kinds kept; an unknown source's name comes from the URL, so a flood of invented
#: names must not grow this without bound. Beyond it, refusals are counted as source "(other)".
MAX_KINDS = 1000
OTHER_SOURCE = "(other)"

Kind = tuple[str, int, str]


@dataclass
class _Count:
    total: int = 0
    unreported: int = 0
    reported_at: float = float("-inf")


_lock = threading.Lock()
_counts: dict[Kind, _Count] = {}


def record(source_name: str, error: WebhookError) -> None:
    """Count one refusal; log it unless a line about its kind went out less than
    :data:`REPORT_INTERVAL` seconds ago (the next line will include it)."""
    kind = (source_name, error.status_code, error.error)
    now = time.monotonic()
    with _lock:
        count = _counts.get(kind)
        if count is None:
            if len(_counts) >= MAX_KINDS:
                kind = (OTHER_SOURCE, error.status_code, error.error)
            count = _counts.setdefault(kind, _Count())
        count.total += 1
        count.unreported += 1
        if now - count.reported_at < REPORT_INTERVAL:
            return
        refused, count.unreported, count.reported_at = count.unreported, 0, now
    _log(kind, refused)


def totals() -> dict[Kind, int]:
    """Refusals counted in this process since it started, per kind."""
    with _lock:
        return {kind: count.total for kind, count in _counts.items()}


def flush() -> None:
    """Log every kind with refusals no line has reported yet (at exit, and for tests)."""
    with _lock:
        pending = [(kind, count.unreported) for kind, count in _counts.items() if count.unreported]
        for kind, _ in pending:
            _counts[kind].unreported = 0
            _counts[kind].reported_at = time.monotonic()
    for kind, refused in pending:
        _log(kind, refused)


def reset() -> None:
    """Forget every count (tests)."""
    with _lock:
        _counts.clear()


def _log(kind: Kind, refused: int) -> None:
    source, status, error = kind
    if refused == 1:
        logger.info(
            "Webhook refused: source=%s status=%s error=%s", printable(source), status, error
        )
    else:
        logger.info(
            "Webhook refused: source=%s status=%s error=%s (%d times since the last line)",
            printable(source),
            status,
            error,
            refused,
        )


atexit.register(flush)
