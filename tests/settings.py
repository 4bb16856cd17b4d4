"""Test settings: the demo project's settings (so DATABASE_URL / REDIS_URL switch the suite to
PostgreSQL + Redis exactly as they switch a deployment) plus a test app and known secrets."""

from __future__ import annotations

import os
import uuid

from project.settings import *  # noqa: F403
from project.settings import DATABASES, INSTALLED_APPS, Q_CLUSTER, VAR_DIR

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp"]

SECRET_A = "test-secret-a-0123456789abcdefghij"
SECRET_B = "test-secret-b-0123456789abcdefghij"

WEBHOOKS = {
    "SOURCES": {
        "generic": {"SCHEME": "generic", "SECRETS": [SECRET_A, SECRET_B]},
        "github": {"SCHEME": "github", "SECRETS": [SECRET_A], "ROUTES": {"push": "record"}},
        # Generic deliveries whose inputs' "customer" orders them (contract §9).
        "ordered": {"SCHEME": "generic", "SECRETS": [SECRET_A], "ORDER_KEY": "customer"},
    },
    "WORKFLOW_LIMITS": {
        "one_at_a_time": {"CONCURRENCY": 1},
        "two_at_a_time": {"CONCURRENCY": 2},
        "five_per_second": {"RATE": "5/s"},
    },
    "LEASE_SECONDS": 3,  # renewed every second: a lost worker's attempt is taken back in ~3 s
    "MAX_ATTEMPTS": 3,
    "RETRY_BACKOFF": 0,  # retries go straight back on the queue; backoff has its own tests
    "RECOVERY_GRACE": 2,  # crash tests wait timeout + grace before an attempt counts as lost
}

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not :memory:, so that gunicorn and qcluster subprocesses share the test database;
    # one per test run, so that runs side by side do not delete each other's.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
if os.environ.get("WEBHOOKS_TEST_SUBPROCESS_DB"):
    # Set by tests/processes.py: a server or cluster started by a test uses the test database.
    DATABASES["default"]["NAME"] = os.environ["WEBHOOKS_TEST_SUBPROCESS_DB"]
if os.environ.get("WEBHOOKS_TEST_DB_PORT"):
    # Fault tests point a server at a port where no database listens.
    DATABASES["default"]["PORT"] = os.environ["WEBHOOKS_TEST_DB_PORT"]

# One queue per test session (inherited by the subprocesses through the environment), so runs
# sharing a Redis server never consume each other's tasks.
Q_CLUSTER = {
    **Q_CLUSTER,
    "name": os.environ.setdefault("WEBHOOKS_TEST_QUEUE", f"webhooks-test-{uuid.uuid4().hex[:8]}"),
    "workers": 2,
    "queue_limit": 2,
    "timeout": 5,
    "retry": 20,  # > timeout * (queue_limit / workers + 2)
    "poll": 0.05,
    "guard_cycle": 0.2,
}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}
