"""Settings of the soak (bench/soak.py): the bench settings with recovery made fast enough to
watch within a few minutes.

With the demo's values a task lost with a killed qcluster node is re-run only after
``RECOVERY_GRACE`` (60 s, a pending event) or ``timeout`` + grace (120 s, a running one), plus up
to a minute until the recovery schedule's next pass. The soak shortens both, from
``SOAK_RECOVERY_GRACE`` and ``SOAK_TASK_TIMEOUT`` (seconds; the soak's options set them), and
keeps django-q2's ``retry`` at four times the timeout, as the app's system check E004 asks.
"""

from __future__ import annotations

import os

from bench.settings import *  # noqa: F403
from bench.settings import Q_CLUSTER, WEBHOOKS

_TIMEOUT = int(os.environ.get("SOAK_TASK_TIMEOUT", "15"))

WEBHOOKS = {**WEBHOOKS, "RECOVERY_GRACE": int(os.environ.get("SOAK_RECOVERY_GRACE", "10"))}
Q_CLUSTER = {**Q_CLUSTER, "timeout": _TIMEOUT, "retry": 4 * _TIMEOUT}
