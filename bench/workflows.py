from __future__ import annotations

from typing import Any

from webhooks_app import workflow


@workflow("noop")
def noop(inputs: dict[str, Any], event: Any) -> None:
    """Does nothing: drain benchmarks measure the machinery, not the work."""


def noop_task(*args: Any) -> None:
    """The same for raw django-q2 ``async_task`` and for the naive receiver."""
