"""Real server and cluster processes for the tests that need them (concurrency, end to end).

Each process runs the test settings that pytest runs (tests/settings.py, or a module of its own
such as tests/settings_tasks.py) against the test database pytest-django created, found through
``WEBHOOKS_TEST_SUBPROCESS_DB``; the Redis queue name is shared through the environment as well
(see tests/settings.py).
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
    from django.conf import settings

    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=settings.SETTINGS_MODULE,
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
        self.terminate()
        self.reap(timeout)

    def terminate(self) -> None:
        """SIGTERM to the main process, unless it has ended. Send it once: a second SIGTERM
        while qcluster stops re-enters its stop and can hang it."""
        if self.popen.poll() is None:
            self.popen.terminate()

    def reap(self, timeout: float = 15) -> None:
        """Wait up to ``timeout`` for the main process to end, then SIGKILL what is left of
        its group."""
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


#: How a django-tasks-db worker polls in the tests: as often as the test cluster (``poll``),
#: started at once.
DB_WORKER_ARGS = ["--interval", "0.05", "--no-startup-delay", "--no-reload"]
#: What a django-tasks-db worker prints once its heartbeat runs and it takes tasks.
DB_WORKER_STARTED = "Starting worker worker_id="
#: A node of django-tasks-db workers: ``db_worker`` is one process running one task at a time,
#: so a shell starts as many as a test cluster has workers, and passes SIGTERM on (a graceful
#: stop). It is the node's main process: killing it alone orphans its workers, as killing
#: qcluster's main process does.
DB_WORKER_POOL = """
for _ in $(seq "$WORKERS"); do "$@" & workers="$workers $!"; done
trap 'kill -TERM $workers; wait' TERM
wait
"""


class Cluster(Process):
    """A worker node with the test settings and ``Q_CLUSTER["workers"]`` workers:
    ``manage.py qcluster``, or with ``TASK_RUNNER = "django_tasks"`` as many ``manage.py
    db_worker`` processes (:data:`DB_WORKER_POOL`)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        from django.conf import settings

        from webhooks_app.conf import webhook_settings

        self.runner = webhook_settings.TASK_RUNNER
        env = env or subprocess_env()
        if self.runner == "django_tasks":
            env = {**env, "WORKERS": str(settings.Q_CLUSTER["workers"])}
            worker = [sys.executable, "manage.py", "db_worker", *DB_WORKER_ARGS]
            super().__init__("db_worker", ["sh", "-c", DB_WORKER_POOL, "sh", *worker], env)
        else:
            super().__init__("qcluster", [sys.executable, "manage.py", "qcluster"], env)

    def kill_main(self) -> None:
        """SIGKILL only the main process: its sentinel and workers live on, orphaned, and finish
        what they run (a node whose supervisor died, not its workers). :meth:`kill` or
        :meth:`stop` still ends them: the process group outlives its leader."""
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is a live process of this cluster (main, sentinel or worker)."""
        try:
            return os.getpgid(pid) == self.popen.pid
        except ProcessLookupError:
            return False


def wait_for_workers(*clusters: Cluster, timeout: float = 30) -> None:
    """Until every cluster reports its full pool of workers (as health shows them; a
    django-tasks-db worker, which reports to no one, once its log says it started), so that a
    test measuring several nodes does not start while one of them is still spawning."""
    from django.conf import settings

    size = settings.Q_CLUSTER["workers"]
    if all(cluster.runner == "django_tasks" for cluster in clusters):
        wait_until(
            lambda: all(cluster.output().count(DB_WORKER_STARTED) == size for cluster in clusters),
            timeout=timeout,
            interval=0.2,
        )
        return

    from django_q.status import Stat

    from webhooks_app import queue

    def ready() -> bool:
        pools = [stat.workers for stat in Stat.get_all(broker=queue.broker())]
        return all(
            any(len(pool) == size and all(map(cluster.owns, pool)) for pool in pools)
            for cluster in clusters
        )

    wait_until(ready, timeout=timeout, interval=0.2)


def stop_all(*processes: Process) -> None:
    """:meth:`Process.stop` several processes, their graceful shutdowns side by side instead of
    one after the other."""
    for process in processes:
        process.terminate()
    for process in processes:
        process.reap()


def deliver(server: Server, body: bytes, source: str = "generic") -> tuple[int, Any]:
    """POST a generic-scheme body to ``/webhooks/<source>/`` on a real server, signed with the
    test secret; returns the status and the parsed answer."""
    from tests.conftest import sign

    headers = {"Content-Type": "application/json", "X-Webhook-Signature": sign(body)}
    status, answer, _ = server.request("POST", f"/webhooks/{source}/", body, headers)
    return status, answer


@contextmanager
def running(*processes: Process) -> Iterator[None]:
    try:
        yield
    finally:
        stop_all(*processes)


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


#: Consecutive answers that must all agree: with 2 workers taking new connections as the kernel
#: hands them out, a worker still serving its old copy would break a run of this length.
STREAK = 12
#: Contract §12: a change to a source takes effect in every process within 5 seconds.
WITHIN = 5.0


def settled(server: Server, expect: Any, deliveries: Any, source: str = "acme") -> float:
    """Seconds until ``STREAK`` deliveries in a row to ``/webhooks/<source>/`` (each from
    ``deliveries()``, a new one: body and headers) get an answer ``expect(status, body)``
    accepts; fails after twice :data:`WITHIN`."""
    started = time.monotonic()
    streak_began, streak = started, 0
    while streak < STREAK:
        assert time.monotonic() - started < 2 * WITHIN, "the servers never agreed"
        body, headers = deliveries()
        status, answer, _ = server.request("POST", f"/webhooks/{source}/", body, headers)
        if expect(status, answer):
            streak_began = streak_began if streak else time.monotonic()
            streak += 1
        else:
            streak = 0
            time.sleep(0.05)
    return streak_began - started
