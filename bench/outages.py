"""The soak's deployments on servers of its own, and the real outages it inflicts on them.

A :class:`Deployment` is one leg's database and broker, owned by the run: on the PostgreSQL leg a
private PostgreSQL cluster inside a network namespace plus a private Redis
(:mod:`bench.servers`); on the SQLite leg the database file on a small tmpfs of its own (with the
ORM broker in the same file). Leaving it removes everything it started or mounted.

A :class:`Fault` is one phase of ``bench.soak --faults``: ``begin`` breaks something for real,
``end`` mends it; the soak's traffic keeps going through both.

==============  ========  =================================================================
fault           leg       what happens
==============  ========  =================================================================
pg-restart      postgres  ``pg_ctl stop -m immediate`` (every backend killed, crash recovery
                          at the next start), started again after the phase
redis-kill      postgres  ``redis-server`` SIGKILLed: its queue is lost; started again empty
slow-link       postgres  the link to PostgreSQL throttled by ``tc tbf`` both ways: queued
                          packets wait, and those over its latency bound are dropped
link-cut        postgres  the namespace's end of the link down: every packet to and from
                          PostgreSQL is lost until it comes back up
disk-full       sqlite    the database's filesystem filled to the last byte, then freed
==============  ========  =================================================================

``tc netem`` would give a fixed delay and a random loss rate, but this machine's kernel has no
``sch_netem`` (nor iptables); ``tbf`` and a downed link are the kernel's real queueing, dropping
and loss, which TCP then has to survive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import leg_env
from bench.servers import Namespace, PrivatePostgres, PrivateRedis, alive, sweep_leftovers

DATABASE = "soak"
#: The SQLite leg's filesystem: room for the soak's database, little enough to fill at once.
TMPFS_SIZE = "256m"


#: The soak's work folders: ``<WORK_PREFIX><pid of the run>-…`` (bench/soak.py makes them).
WORK_PREFIX = "webhooks-bench-soak-"


def sweep_mounts() -> list[str]:
    """Unmount the tmpfs a soak killed with SIGKILL left mounted in its work folder."""
    removed = []
    base = Path(tempfile.gettempdir())
    for line in Path("/proc/mounts").read_text().splitlines():
        mountpoint = Path(line.split()[1])
        if mountpoint.parent.parent.parent != base:  # <tmp>/<work>/<leg>/var
            continue
        work = mountpoint.parent.parent.name
        owner = work.removeprefix(WORK_PREFIX).split("-")[0]
        if work.startswith(WORK_PREFIX) and owner.isdigit() and not alive(int(owner)):
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)
            removed.append(f"tmpfs {mountpoint}")
    return removed


class Deployment(contextlib.ExitStack):
    """One leg's environment for every process of the soak, with servers the run owns."""

    def __init__(self, leg: str, work: Path, queue: str) -> None:
        super().__init__()
        self.leg = leg
        self.postgres: PrivatePostgres | None = None
        self.redis: PrivateRedis | None = None
        self.namespace: Namespace | None = None
        self.tmpfs = False  # the SQLite leg's var/ is a filesystem of its own (root only)
        self.var = work / "var"
        self.var.mkdir()
        for leftover in sweep_leftovers() + sweep_mounts():
            print(f"removed what a killed run left: {leftover}", file=sys.stderr)
        try:
            if leg == "postgres":
                self._start_servers()
            else:
                self._mount_tmpfs()
            self.env = leg_env(leg, self.var, queue)
            if self.postgres is not None and self.redis is not None:
                self.env.update(DATABASE_URL=self.postgres.url(DATABASE), REDIS_URL=self.redis.url)
        except BaseException:
            self.close()
            raise

    def _start_servers(self) -> None:
        """PostgreSQL inside a namespace when this runs as root (so the link can fail),
        otherwise on loopback; the faults that need the namespace then refuse to run."""
        if os.geteuid() == 0:
            self.namespace = self.enter_context(Namespace())
        self.postgres = self.enter_context(PrivatePostgres(self.namespace))
        self.postgres.execute(f"CREATE DATABASE {DATABASE}")
        self.redis = self.enter_context(PrivateRedis())

    def _mount_tmpfs(self) -> None:
        if os.geteuid() != 0:
            return  # no disk-full fault without root; the leg still runs on a plain directory
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(self.var)],
            check=True,
            capture_output=True,
        )
        self.callback(subprocess.run, ["umount", "-l", str(self.var)], check=False)
        self.tmpfs = True

    @property
    def vendor(self) -> str:
        return "postgresql" if self.leg == "postgres" else "sqlite"

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One read on the leg's database, on a connection of its own."""
        if self.postgres is not None:
            import psycopg

            with psycopg.connect(
                self.postgres.url(DATABASE), autocommit=True, connect_timeout=10
            ) as conn:
                return conn.execute(sql, params).fetchall()
        with contextlib.closing(sqlite3.connect(self.var / "db.sqlite3", timeout=30)) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()

    def epoch(self, column: str) -> str:
        """SQL for a timestamp column as seconds since the epoch."""
        if self.vendor == "postgresql":
            return f"EXTRACT(EPOCH FROM {column})"
        return f"((julianday({column}) - 2440587.5) * 86400.0)"

    def lost_attempt(self, column: str = "history") -> str:
        """SQL: the event's history records a lost attempt."""
        if self.vendor == "postgresql":
            return f'{column} @> \'[{{"outcome": "lost"}}]\''
        return (
            f"EXISTS (SELECT 1 FROM json_each({column}) "
            "WHERE json_extract(value, '$.outcome') = 'lost')"
        )


@dataclass(frozen=True)
class Fault:
    """A phase: ``begin`` breaks, ``end`` mends ``seconds`` later (traffic keeps flowing)."""

    name: str
    leg: str
    seconds: float
    begin: Callable[[Deployment], None]
    end: Callable[[Deployment], None]
    describe: str


def _postgres(deployment: Deployment) -> PrivatePostgres:
    assert deployment.postgres is not None
    return deployment.postgres


def _redis(deployment: Deployment) -> PrivateRedis:
    assert deployment.redis is not None
    return deployment.redis


def _namespace(deployment: Deployment) -> Namespace:
    if deployment.namespace is None:
        raise PermissionError("the link faults need root: a network namespace of their own")
    return deployment.namespace


#: tbf on both ends of the link: 2 Mbit/s with bursts of 8 KiB, and a packet that would wait
#: more than 20 ms in the queue is dropped. The soak's traffic needs more than that at its peaks.
SLOW_LINK = ["tbf", "rate", "2mbit", "burst", "8kb", "latency", "20ms"]


def _throttle(deployment: Deployment) -> None:
    _namespace(deployment).shape(SLOW_LINK)


def _cut(deployment: Deployment) -> None:
    _namespace(deployment).set_inner_link(up=False)


def _reconnect(deployment: Deployment) -> None:
    _namespace(deployment).set_inner_link(up=True)


#: What the ballast file is written with; the last chunks get smaller until not a byte is left.
_CHUNK = 1 << 20


def fill_disk(deployment: Deployment) -> None:
    """Write a ballast file until the filesystem refuses a single byte more: only the run's
    own tmpfs, never the disk the machine runs on."""
    if not deployment.tmpfs:
        raise PermissionError("disk-full needs root: a tmpfs of its own to fill")
    with (deployment.var / "ballast").open("wb", buffering=0) as ballast:
        chunk = _CHUNK
        while chunk:
            try:
                ballast.write(b"\0" * chunk)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                chunk //= 2


def free_disk(deployment: Deployment) -> None:
    (deployment.var / "ballast").unlink(missing_ok=True)


_ALL = (
    Fault("pg-restart", "postgres", 10, lambda d: _postgres(d).stop("immediate"),
          lambda d: _postgres(d).start(), "pg_ctl stop -m immediate, 10 s, start"),
    Fault("redis-kill", "postgres", 5, lambda d: _redis(d).kill(),
          lambda d: _redis(d).start(), "redis-server SIGKILLed, 5 s, started empty"),
    Fault("slow-link", "postgres", 15, _throttle, lambda d: _namespace(d).heal(),
          "link to PostgreSQL: tbf 2 Mbit/s, 20 ms queue bound (drops), 15 s"),
    Fault("link-cut", "postgres", 20, _cut, _reconnect,
          "link to PostgreSQL down (all packets lost), 20 s: past the 10 s tcp_user_timeout"),
    Fault("disk-full", "sqlite", 10, fill_disk, free_disk,
          "the SQLite database's tmpfs filled to the last byte, 10 s, freed"),
)  # fmt: skip
FAULTS = {fault.name: fault for fault in _ALL}
#: The faults that need root: a network namespace, a tmpfs of their own.
NEEDS_ROOT = frozenset({"slow-link", "link-cut", "disk-full"})
#: ``--faults --smoke``: the two outages every deployment will see.
SMOKE_FAULTS = ("pg-restart", "redis-kill")
