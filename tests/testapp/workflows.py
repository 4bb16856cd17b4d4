"""Workflows the tests run; each records its execution so runs can be counted across processes."""

from __future__ import annotations

import os
import time
from typing import Any

from tests.testapp.models import Execution
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
