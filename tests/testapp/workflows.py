"""Workflows the tests run; each records its execution so runs can be counted across processes."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from tests.testapp.models import Execution, Span
from webhooks_app import workflow
from webhooks_app.effects import once
from webhooks_app.models import WebhookEvent


def _record(name: str, event: WebhookEvent) -> None:
    Execution.objects.create(webhook_id=event.webhook_id, workflow=name, pid=os.getpid())


@workflow("record")
def record(inputs: dict[str, Any], event: WebhookEvent) -> dict[str, Any]:
    _record("record", event)
    return {"echo": inputs}


@workflow("fail")
def fail(inputs: dict[str, Any], event: WebhookEvent) -> None:
    _record("fail", event)
    raise ValueError(f"boom on attempt {event.attempts}")


@workflow("sleep")
def sleep(inputs: dict[str, Any], event: WebhookEvent) -> dict[str, Any]:
    _record("sleep", event)
    time.sleep(float(inputs.get("seconds", 1)))
    with once(event, "after-sleep") as first:  # the effect a crash mid-sleep must not double
        return {"slept": inputs.get("seconds", 1), "first": first}


#: What ``unstorable`` returns, by ``inputs["kind"]``: results no database can store as JSON.
UNSTORABLE_RESULTS: dict[str, Any] = {
    "nul": {"x": "a\x00b"},
    "set": {"x": {1, 2}},
    "object": {"x": object()},
    "nan": {"x": float("nan")},
    "lone_surrogate": {"x": "\ud800"},
}


@workflow("unstorable")
def unstorable(inputs: dict[str, Any], event: WebhookEvent) -> Any:
    _record("unstorable", event)
    return UNSTORABLE_RESULTS[inputs["kind"]]


@workflow("fail_with_nul")
def fail_with_nul(inputs: dict[str, Any], event: WebhookEvent) -> None:
    _record("fail_with_nul", event)
    raise ValueError(f"bad\x00byte \ud800 on attempt {event.attempts}")


def span(inputs: dict[str, Any], event: WebhookEvent) -> dict[str, Any]:
    """Record start and end around a sleep of ``inputs["seconds"]`` (default 0); raise on the
    first ``inputs["fail_attempts"]`` attempts, and on every one if ``inputs["always_fail"]``."""
    from django.utils import timezone

    record = Span.objects.create(
        webhook_id=event.webhook_id,
        workflow=event.workflow_name,
        order_key=event.order_key or "",
        attempt=event.attempts,
        pid=os.getpid(),
        started_at=timezone.now(),
    )
    time.sleep(float(inputs.get("seconds", 0)))
    record.ended_at = timezone.now()
    record.save(update_fields=["ended_at"])
    if inputs.get("always_fail") or event.attempts <= int(inputs.get("fail_attempts", 0)):
        raise ValueError(f"failing attempt {event.attempts} on purpose")
    return {"attempt": event.attempts}


# The same workflow under the names tests/settings.py limits (WORKFLOW_LIMITS).
for _name in ("span", "one_at_a_time", "two_at_a_time", "five_per_second"):
    workflow(_name)(span)


@workflow("swallow_timeout")
def swallow_timeout(inputs: dict[str, Any], event: WebhookEvent) -> dict[str, Any]:
    """Catch django-q2's timeout (and anything else) and keep running past it: the attempt is
    alive, so it must never be taken over while it runs."""
    from django.utils import timezone

    record = Span.objects.create(
        webhook_id=event.webhook_id, workflow="swallow_timeout", attempt=event.attempts,
        pid=os.getpid(), started_at=timezone.now(),
    )  # fmt: skip
    deadline = time.monotonic() + float(inputs.get("seconds", 8))
    while time.monotonic() < deadline:
        with contextlib.suppress(BaseException):  # the point of this workflow
            time.sleep(0.1)
    record.ended_at = timezone.now()
    record.save(update_fields=["ended_at"])
    return {"attempt": event.attempts}
