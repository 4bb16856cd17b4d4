"""No-op work: the drain benchmark measures the machinery around a workflow, not the work."""

from __future__ import annotations

from typing import Any

from webhooks_app import workflow


@workflow("noop")
def noop(inputs: dict[str, Any], event: Any) -> None:
    """The app's no-op workflow (``{"workflow_name": "noop"}``)."""


def noop_task(*args: Any) -> None:
    """The same for raw django-q2 ``async_task`` and for the naive receiver's tasks."""
