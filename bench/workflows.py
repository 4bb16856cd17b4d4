"""No-op work: the drain benchmark measures the machinery around a workflow, not the work.

Plus the soak benchmark's workflow (bench/soak.py), which records what it did so the soak can
count runs and effects per webhook id.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from bench.models import SoakEffect, SoakRun
from webhooks_app import workflow
from webhooks_app.effects import once


@workflow("noop")
def noop(inputs: dict[str, Any], event: Any) -> None:
    """The app's no-op workflow (``{"workflow_name": "noop"}``)."""


def noop_task(*args: Any) -> None:
    """The same for raw django-q2 ``async_task`` and for the naive receiver's tasks."""


#: Upper bound of the soak workflow's pretend work: long enough that a SIGKILL of a qcluster
#: node often lands mid-run, short enough that 4 workers keep up with the soak's traffic.
SOAK_WORK_SECONDS = 0.05


@workflow("soak")
def soak(inputs: dict[str, Any], event: Any) -> None:
    """Record the run and its worker (committed at once: a run killed later still counts, and
    the soak can aim its kill at this node), work a little, then do the effect through
    ``once()``: runs may repeat after a kill, the effect must not."""
    SoakRun.objects.create(webhook_id=event.webhook_id, pid=os.getpid())
    time.sleep(random.uniform(0, SOAK_WORK_SECONDS))
    with once(event, "soak-effect") as first:
        if first:
            SoakEffect.objects.create(webhook_id=event.webhook_id)
