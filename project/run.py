"""``make run``: migrate, then the web server and the qcluster together; Ctrl-C stops both.

Prints where the admin is and two ways to send a signed test webhook. A development secret is
generated once into ``var/dev-secret`` unless ``WEBHOOK_SECRET_GENERIC`` (or
``WEBHOOK_SECRET_DEFAULT``) is already set. Both processes count their metrics into one
``PROMETHEUS_MULTIPROC_DIR`` (unless it is set: ``var/metrics``, emptied at every start), so
that ``/webhooks/metrics/`` shows the cluster's attempts as well as the server's deliveries.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def banner(base_url: str, secret: str) -> str:
    body = json.dumps(
        {"workflow_name": "log_event", "inputs": {"hello": "world"}, "webhook_id": "demo-1"}
    )
    signature = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    python = shlex.quote(sys.executable)
    return f"""
  webhooks_app demo is running (SQLite + django-q2 ORM broker unless DATABASE_URL/REDIS_URL are set)

  Admin:      {base_url}/admin/       create a user first:  {python} manage.py createsuperuser
  Health:     {base_url}/webhooks/health/
  Metrics:    {base_url}/webhooks/metrics/   (Prometheus; log in to the admin first)
  Secret:     var/dev-secret (used as WEBHOOK_SECRET_GENERIC)

  Send a signed test webhook, either with curl:

    curl -i {base_url}/webhooks/generic/ \\
      -H 'Content-Type: application/json' \\
      -H 'X-Webhook-Signature: sha256={signature}' \\
      --data-raw '{body}'

  or with the management command (signs for you):

    WEBHOOK_SECRET_GENERIC="$(cat var/dev-secret)" {python} manage.py send_test_webhook log_event \\
      --inputs '{{"hello": "world"}}' --url {base_url}/webhooks/generic/

  Try the failing workflow "always_fail" to watch retries and the dead state in the admin.
  Ctrl-C stops the server and the cluster.
"""


def wait_for(url: str, processes: list[subprocess.Popen[bytes]], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own local server
                return True
        except OSError:
            time.sleep(0.3)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    var_dir = Path(os.environ.get("WEBHOOKS_VAR_DIR", REPO / "var"))
    var_dir.mkdir(parents=True, exist_ok=True)
    from project.settings import development_secret  # reads DJANGO_DEBUG and the var dir

    secret = development_secret(var_dir)
    if secret is None:
        sys.exit("Set WEBHOOK_SECRET_GENERIC (DEBUG is off, so no development secret is made).")
    env = {**os.environ, "WEBHOOK_SECRET_GENERIC": secret, "PYTHONUNBUFFERED": "1"}
    if "PROMETHEUS_MULTIPROC_DIR" not in env:
        metrics_dir = var_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)  # before either process opens a file
        metrics_dir.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    manage = [sys.executable, str(REPO / "manage.py")]
    subprocess.run([*manage, "migrate", "--no-input"], env=env, check=True, cwd=REPO)  # noqa: S603

    processes = [
        subprocess.Popen(  # noqa: S603
            [*manage, "runserver", "--noreload", f"{args.host}:{args.port}"], env=env, cwd=REPO
        ),
        subprocess.Popen([*manage, "qcluster"], env=env, cwd=REPO),  # noqa: S603
    ]

    def stop(*_: object) -> None:
        for process in processes:
            if process.poll() is None:
                process.terminate()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    base_url = f"http://{args.host}:{args.port}"
    if wait_for(f"{base_url}/webhooks/health/", processes):
        print(banner(base_url, env["WEBHOOK_SECRET_GENERIC"]), flush=True)
    # Whichever stops first (Ctrl-C, or a crash), stop the other too.
    while all(p.poll() is None for p in processes):
        time.sleep(0.5)
    stop()
    for process in processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
