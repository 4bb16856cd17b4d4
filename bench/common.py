"""What both benchmarks share: legs, fresh databases, signed bodies and the processes they start.

Nothing here imports Django: the driver processes stay settings-free, so one command can run
the SQLite and the PostgreSQL leg one after the other. Every process started here runs in its
own session and is stopped by :class:`Process`, also on Ctrl-C, SIGTERM and errors.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
#: The generic source's secret in bench/settings.py (the settings read it from here too).
SECRET = "bench-secret-0123456789abcdefghijklmnop"
WRONG_SECRET = "not-the-bench-secret-0123456789abcdef"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = os.environ.get("BENCH_PG_DATABASE", "bench_webhooks")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LEGS = {
    "sqlite": "SQLite + ORM broker (embedded default)",
    "postgres": "PostgreSQL + Redis broker (scale-out)",
}
#: Variables of the caller's shell that would point a bench process at another database.
_SCRUBBED = {"DATABASE_URL", "REDIS_URL", "WEBHOOKS_VAR_DIR", "DJANGO_SETTINGS_MODULE"}


def legs_of(choice: str) -> list[str]:
    return list(LEGS) if choice == "both" else [choice]


def terminate_on_sigterm() -> None:
    """A SIGTERM (CI timeout, ``kill``) unwinds like Ctrl-C, so every ``finally`` stops its
    processes."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# -- deliveries ------------------------------------------------------------------------------


def envelope(webhook_id: str, workflow: str = "noop", order_key: str | None = None) -> bytes:
    """A generic-source body, as a sender would serialise it (``order_key`` only if given)."""
    body: dict[str, Any] = {"workflow_name": workflow, "inputs": {"n": 1}, "webhook_id": webhook_id}
    if order_key is not None:
        body["order_key"] = order_key
    return json.dumps(body).encode()


def signature(body: bytes, *, valid: bool = True) -> str:
    key = SECRET if valid else WRONG_SECRET
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def post(base: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST and return the status code (4xx/5xx included); raise only on connection errors."""
    request = urllib.request.Request(f"{base}{path}", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def post_signed(base: str, webhook_id: str, path: str = "/webhooks/generic/") -> int:
    body = envelope(webhook_id)
    return post(
        base,
        path,
        body,
        {"Content-Type": "application/json", "X-Webhook-Signature": signature(body)},
    )


# -- legs and databases ----------------------------------------------------------------------


def leg_env(leg: str, var_dir: Path, queue: str) -> dict[str, str]:
    """The environment of every process of one leg: bench settings, its own var dir and queue."""
    env = {name: value for name, value in os.environ.items() if name not in _SCRUBBED}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        BENCH_VAR_DIR=str(var_dir),
        BENCH_QUEUE=queue,
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
    )
    if leg == "postgres":
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DATABASE
        env["REDIS_URL"] = REDIS_URL
    return env


def fresh_database(leg: str, env: dict[str, str]) -> None:
    """An empty database with every table: a new SQLite file, or ``bench_webhooks`` recreated."""
    if leg == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v0"],
        cwd=REPO,
        env=env,
        check=True,
    )


def clear_queue(leg: str, env: dict[str, str]) -> None:
    """Drop every queued task of this leg's queue (nothing consumes them during ingest runs)."""
    if leg == "postgres":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.delete(f"django_q:{env['BENCH_QUEUE']}:q")
        finally:
            client.close()
    else:
        with contextlib.closing(
            sqlite3.connect(Path(env["BENCH_VAR_DIR"]) / "db.sqlite3", timeout=30)
        ) as conn:
            conn.execute("DELETE FROM django_q_ormq")
            conn.commit()


def drop_database(leg: str) -> None:
    if leg == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


def create_named_database(name: str, env: dict[str, str]) -> None:
    """PostgreSQL database ``name`` recreated empty and migrated with ``env``: for the
    benchmarks that seed a large table of their own (bulk, replay, search, metrics)."""
    drop_named_database(name)
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v0"],
        cwd=REPO,
        env=env,
        check=True,
    )


def drop_named_database(name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


# -- taking turns ----------------------------------------------------------------------------

#: Held by every benchmark while it measures: they share the machine's cores, PostgreSQL and
#: Redis, so two at once would measure each other.
LOCK_PATH = Path("/tmp/webhooks-bench.lock")


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    """Wait for the other benchmarks on this machine (saying so on stderr), then hold the lock."""
    with LOCK_PATH.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK_PATH}: another benchmark is measuring", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:.0f} s")
        time.sleep(interval)
    return value


class Process:
    """A subprocess in its own session with its output in ``log``; a context manager that
    stops it: SIGTERM to the main process (it stops its own children), then SIGKILL the group."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log_path = log
        with log.open("ab") as output:
            self.popen = subprocess.Popen(
                list(args),
                cwd=REPO,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers: workers of a wedged parent
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


class Gunicorn(Process):
    """``project.wsgi`` with the bench settings: sync workers, no access log."""

    def __init__(self, env: dict[str, str], workers: int, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        super().__init__(
            "gunicorn",
            [
                sys.executable, "-m", "gunicorn", "project.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                "--log-level", "warning", "--graceful-timeout", "5",
            ],
            env,
            log,
        )  # fmt: skip
        try:
            wait_until(self._ready, timeout=60, interval=0.2)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if not self.alive():
            raise RuntimeError(f"gunicorn exited:\n{self.tail()}")
        try:
            with urllib.request.urlopen(f"{self.base}/floor/bare/", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


class Cluster(Process):
    """``manage.py qcluster`` with the bench settings (workers: ``Q_WORKERS``, default 2)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        super().__init__("qcluster", [sys.executable, "manage.py", "qcluster"], env, log)


# -- statistics ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0-100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])
