"""tests.settings with ``WEBHOOKS["METRICS_TOKEN"]``, for the servers tests/test_metrics.py starts
(in the test process itself, the token is set with ``override_settings`` where needed)."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import WEBHOOKS

METRICS_TOKEN = "test-metrics-token-0123456789abcdef"
WEBHOOKS = {**WEBHOOKS, "METRICS_TOKEN": METRICS_TOKEN}
