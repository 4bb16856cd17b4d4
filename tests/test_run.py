"""``make run``'s script: a fresh var/ directory, SQLite + ORM broker, web + qcluster, a signed
test webhook processed, every provider's sample sent with ``send_test_webhook --source`` and
processed, and Ctrl-C stopping both processes."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest

from tests.processes import REPO, Process, free_port, wait_until

pytestmark = pytest.mark.process

#: The demo's development sources: one per provider scheme (project/settings.py).
PROVIDER_SOURCES = [
    "github", "gitlab", "shopify", "slack", "standard", "stripe", "telegram", "twilio", "whatsapp",
]  # fmt: skip


def test_make_run_serves_and_processes_a_test_webhook(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
        and not k.startswith("WEBHOOK")
    }
    env.update(WEBHOOKS_VAR_DIR=str(tmp_path), PYTHONUNBUFFERED="1")
    port = free_port()
    run = Process("make-run", [sys.executable, "-m", "project.run", "--port", str(port)], env)
    try:
        wait_until(lambda: "send_test_webhook" in run.output(), timeout=60, interval=0.3)
        banner = run.output()
        assert f"http://127.0.0.1:{port}/admin/" in banner
        assert "X-Webhook-Signature: sha256=" in banner
        assert "createsuperuser" in banner

        secret = (tmp_path / "dev-secret").read_text().strip()
        assert len(secret) >= 32
        sent = subprocess.run(
            [sys.executable, "manage.py", "send_test_webhook", "log_event", "--id", "make-run-1",
             "--url", f"http://127.0.0.1:{port}/webhooks/generic/"],
            cwd=REPO, env={**env, "WEBHOOK_SECRET_GENERIC": secret}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert "-> 202" in sent.stdout

        def status() -> str | None:
            with sqlite3.connect(tmp_path / "db.sqlite3", timeout=10) as db:
                row = db.execute(
                    "SELECT status FROM webhooks_app_webhookevent WHERE webhook_id = 'make-run-1'"
                ).fetchone()
            return row[0] if row else None

        wait_until(lambda: status() == "succeeded", timeout=30, interval=0.3)

        # Every provider's sample, signed as that provider would, against the same server: the
        # demo's development sources need no setup (their secrets derive from var/dev-secret).
        for source in PROVIDER_SOURCES:
            sent = subprocess.run(
                [sys.executable, "manage.py", "send_test_webhook", "--source", source,
                 "--url", f"http://127.0.0.1:{port}/webhooks/{source}/"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert sent.returncode == 0, (source, sent.stdout, sent.stderr)
            assert "-> 202" in sent.stdout, (source, sent.stdout)

        def statuses() -> dict[str, str]:
            with sqlite3.connect(tmp_path / "db.sqlite3", timeout=10) as db:
                return dict(db.execute("SELECT source, status FROM webhooks_app_webhookevent"))

        wait_until(
            lambda: all(statuses().get(s) == "succeeded" for s in PROVIDER_SOURCES),
            timeout=60,
            interval=0.5,
        )
    finally:
        run.popen.send_signal(signal.SIGINT)
        run.popen.wait(40)
        output = run.output()
        leftovers = _group_alive(run.popen.pid)
        run.stop()
    assert run.popen.returncode == 0, output
    assert not leftovers, "Ctrl-C left the server or the cluster running"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
