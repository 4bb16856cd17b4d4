"""Real server and cluster processes for the tests that need them (concurrency, end to end).

Each process runs the test settings against the test database pytest-django created, found
through ``WEBHOOKS_TEST_SUBPROCESS_DB``; the Redis queue name is shared through the
environment as well (see tests/settings.py).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.db import connection

# Shared with the benchmarks, which start the same kind of processes without Django.
from bench.common import free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
LOG_DIR = REPO / "var" / "test-logs"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        WEBHOOKS_TEST_SUBPROCESS_DB=str(connection.settings_dict["NAME"]),
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("wb")
        # A new session: stop() signals the whole process group (workers included).
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the main process (it stops its own children), then SIGKILL the group.

        Signalling the whole group at once would kill qcluster's workers under its sentinel,
        which can wedge it (django-q2 issue #23).
        """
        if self.popen.poll() is None:
            self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.kill()
        self.log.close()

    def kill(self) -> None:
        """SIGKILL every process of the group: a crash, as far as the app can tell."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.popen.wait(10)


class Server(Process):
    """gunicorn serving tests.settings on a free port."""

    name = "gunicorn"

    def __init__(self, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        super().__init__(self.name, self.command(workers), env or subprocess_env())
        try:
            wait_until(self._ready, timeout=30, interval=0.2)
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise

    def command(self, workers: int) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn", "project.wsgi:application",
            "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
            "--access-logfile", "-", "--graceful-timeout", "5",
        ]  # fmt: skip

    def _ready(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited:\n{self.output()}")
        try:
            return self.request("GET", "/webhooks/health/")[0] in (200, 503)
        except OSError:
            return False

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            raw = response.read().decode()
            try:
                parsed: dict[str, Any] | str = json.loads(raw)
            except ValueError:
                parsed = raw
            return response.status, parsed, dict(response.getheaders())
        finally:
            conn.close()


class UvicornServer(Server):
    """uvicorn serving ``project.asgi`` (Django's ASGI handler behind the app's body limit)."""

    name = "uvicorn"

    def command(self, workers: int) -> list[str]:
        return [
            sys.executable, "-m", "uvicorn", "project.asgi:application",
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
            "--lifespan", "off", "--timeout-graceful-shutdown", "5",
        ]  # fmt: skip


class Cluster(Process):
    """``manage.py qcluster`` with the test settings."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        super().__init__(
            "qcluster", [sys.executable, "manage.py", "qcluster"], env or subprocess_env()
        )


@contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for process in processes:
            process.stop()


def manage_py(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run one ``manage.py`` command of the demo project with ``env``, to its end."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
