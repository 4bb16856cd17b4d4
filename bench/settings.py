"""Bench settings: the demo project (so ``DATABASE_URL``/``REDIS_URL`` pick the leg exactly as
they do for a deployment) plus the bench app (floors, no-op workflows), DEBUG off, quiet logs.

The bench drivers set ``BENCH_VAR_DIR`` (a temporary directory: SQLite file and file cache, so a
run never touches the demo's ``var/``) and ``BENCH_QUEUE`` (a queue name per run, so runs
sharing a Redis server never see each other's tasks).
"""

from __future__ import annotations

import os
from pathlib import Path

# Before the project settings are imported: they create and use this directory.
os.environ["WEBHOOKS_VAR_DIR"] = os.environ.get("BENCH_VAR_DIR", "/tmp/webhooks-bench")
Path(os.environ["WEBHOOKS_VAR_DIR"]).mkdir(parents=True, exist_ok=True)

from bench.common import SECRET  # noqa: E402
from project.settings import *  # noqa: E402, F403
from project.settings import INSTALLED_APPS, Q_CLUSTER  # noqa: E402

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bench.urls"
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
WEBHOOKS = {"SOURCES": {"generic": {"SCHEME": "generic", "SECRETS": [SECRET]}}}
Q_CLUSTER = {
    **Q_CLUSTER,
    "name": os.environ.get("BENCH_QUEUE", "webhooks-bench"),
    "log_level": "WARNING",
}
# The demo's logging as deployed (the app at INFO): a flood of refusals is measured with its
# audit trail, which webhooks_app.refusals keeps to a line per kind per interval.
