"""Bench settings: the demo project plus the bench app (floors, a no-op workflow), quiet logs."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("WEBHOOKS_VAR_DIR", os.environ.get("BENCH_VAR_DIR", "/tmp/webhooks-bench"))
Path(os.environ["WEBHOOKS_VAR_DIR"]).mkdir(parents=True, exist_ok=True)

from project.settings import *  # noqa: E402, F403
from project.settings import INSTALLED_APPS, Q_CLUSTER  # noqa: E402

BENCH_SECRET = "bench-secret-0123456789abcdefghijklmnop"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.urls"
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]
WEBHOOKS = {"SOURCES": {"generic": {"SCHEME": "generic", "SECRETS": [BENCH_SECRET]}}}
Q_CLUSTER = {
    **Q_CLUSTER,
    "name": os.environ.get("BENCH_QUEUE", "webhooks-bench"),
    "log_level": "WARNING",
}
LOGGING = {"version": 1, "disable_existing_loggers": True, "root": {"level": "ERROR"}}
