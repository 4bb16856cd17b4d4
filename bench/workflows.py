"""No-op work: the drain benchmark measures the machinery around a workflow, not the work.

Plus the soak benchmark's workflow (bench/soak.py), which records what it did so the soak can
count runs and effects per webhook id.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from bench.models import RawCompletion, SoakEffect, SoakRun
from webhooks_app import workflow
from webhooks_app.effects import once


@workflow("noop")
def noop(inputs: dict[str, Any], event: Any) -> None:
    """The app's no-op workflow (``{"workflow_name": "noop"}``)."""


@workflow("noop_limited", concurrency=1)
def noop_limited(inputs: dict[str, Any], event: Any) -> None:
    """The same no-op, one attempt at a time across the cluster: the steered drain's second
    workflow. With the bench's 2 workers a limit of 2 could never be reached; 1 is met whenever
    both workers take one of its events at once, so the drain pays for refusals and hand-ons."""


def raw_noop(tag: str) -> None:
    """The drain's raw django-q2 floor: a task that does nothing but record, in one autocommit
    INSERT, that it finished (the product's attempt records its outcome on the event row)."""
    RawCompletion.objects.create(tag=tag)


def noop_task(*args: Any) -> None:
    """The naive receiver's task (bench/views.py; the ingest benchmark runs no cluster)."""


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
