"""Servers a test or the soak owns: a private PostgreSQL cluster, a private Redis, and a network
namespace whose link to the PostgreSQL server can be slowed, made lossy or cut.

They exist so that an outage can be real (a ``pg_ctl stop -m immediate``, a SIGKILLed Redis that
loses its queue, packets dropped by the kernel) without ever touching the machine's shared
PostgreSQL and Redis, which other runs use. Each is a context manager: leaving it, also after a
failure, a Ctrl-C or a SIGTERM (:func:`bench.common.terminate_on_sigterm`), stops the server and
removes its files, so nothing outlives the run that started it.

Nothing here imports Django. PostgreSQL comes from the Debian packages (``initdb`` and ``pg_ctl``
in ``/usr/lib/postgresql/<version>/bin``); as root they run as the ``postgres`` user, since
PostgreSQL refuses to run as root. The namespace needs root (``ip netns``, ``tc``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.common import free_port, wait_until


def _postgres_bin(tool: str) -> str:
    """The newest installed PostgreSQL's ``tool`` (the Debian layout), else one on PATH."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for bindir in versions:
        if (bindir / tool).exists():
            return str(bindir / tool)
    found = shutil.which(tool)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {tool} is not installed (apt-get install postgresql)")
    return found


def _run(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]


#: Every server's folder is named ``<PREFIX><kind>-<pid of the run that owns it>-…``, and its
#: namespace ``webhooks-<pid>``: what a run killed with SIGKILL left is recognisable as such.
PREFIX = "webhooks-private-"


def alive(pid: int) -> bool:
    """The process runs (a zombie that its new parent, init, has yet to reap does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill_if(pid_file: Path, program: str) -> None:
    """SIGKILL the process named in ``pid_file`` if it still runs ``program`` (a pid can be
    reused by another process after a reboot or a long time)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().split()[0])
        if program in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            os.kill(pid, signal.SIGKILL)


def sweep_leftovers() -> list[str]:
    """Remove the servers of runs that died without cleaning up (SIGKILL, a lost machine):
    kill their PostgreSQL and Redis, delete their folders and namespaces. Returns what it
    removed. A live run's servers are left alone."""
    removed = []
    for root in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*-*"):
        owner = root.name.removeprefix(PREFIX).split("-")[1]
        if not owner.isdigit() or alive(int(owner)):
            continue
        _kill_if(root / "data" / "postmaster.pid", "postgres")
        _kill_if(root / "redis.pid", "redis-server")
        shutil.rmtree(root, ignore_errors=True)
        removed.append(str(root))
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = name.removeprefix("webhooks-")
        if name.startswith("webhooks-") and owner.isdigit() and not alive(int(owner)):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
            outer = f"whk{int(owner) % 16384}o"
            subprocess.run(["ip", "link", "del", outer], capture_output=True, check=False)
            removed.append(f"namespace {name}")
    return removed


class Owned:
    """A context manager whose exit, however it is reached, is :meth:`close`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PrivatePostgres(Owned):
    """A PostgreSQL cluster in a temporary folder, on a free port, trust authentication.

    ``namespace``: run the server inside that network namespace, listening on its address, so
    that the namespace's link faults act on every packet between the app and the database.
    """

    def __init__(self, namespace: Namespace | None = None) -> None:
        self.namespace = namespace
        self.host = namespace.inner_address if namespace else "127.0.0.1"
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}pg-{os.getpid()}-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        try:
            self._tool("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                       "-E", "UTF8", "--no-instructions")  # fmt: skip
            with (self.data / "pg_hba.conf").open("a") as hba:  # the namespace's peer address
                hba.write(f"host all all {self.host}/24 trust\n")
            self.start()
        except BaseException:
            self.close()
            raise

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@{self.host}:{self.port}/{database}"

    def _tool(self, tool: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        command = [_postgres_bin(tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        if self.namespace is not None:
            command = ["ip", "netns", "exec", self.namespace.name, *command]
        return _run(command)

    def start(self) -> None:
        """Start (or start again) and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses={self.host}"
        self._tool("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                   "-o", options, "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash as far as clients and the WAL are concerned: every backend
        is killed at once and the next start runs crash recovery."""
        self._tool("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def execute(self, sql: str, database: str = "postgres") -> None:
        """One statement in autocommit (``CREATE DATABASE`` cannot run in a transaction)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class PrivateRedis(Owned):
    """A ``redis-server`` on a free port with no persistence: killed, it comes back empty, as a
    Redis without AOF does after a crash (its queue is gone)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}redis-{os.getpid()}-"))
        self.log = self.root / "redis.log"
        self.popen: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.popen = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.root)],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        (self.root / "redis.pid").write_text(str(self.popen.pid))
        wait_until(self._answers, timeout=30, interval=0.05)

    def _answers(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log.read_text(errors='replace')}")
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; whatever was queued is lost."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class Namespace(Owned):
    """A network namespace joined to this one by a veth pair (a /30 of 10.213.0.0/16).

    The app stays in the machine's namespace and reaches a server inside at
    :attr:`inner_address`; :meth:`shape` puts a ``tc`` queueing discipline on both ends of the
    pair and :meth:`set_inner_link` takes the server's end down, so a slow, lossy or cut link
    is the kernel's own doing.
    """

    def __init__(self) -> None:
        if os.geteuid() != 0:
            raise PermissionError("a network namespace needs root (ip netns, tc)")
        tag = os.getpid() % 16384  # sweep_leftovers knows this naming
        self.name = f"webhooks-{os.getpid()}"
        self.outer, self.inner = f"whk{tag}o", f"whk{tag}i"
        block = tag * 4  # a /30 per tag inside 10.213.0.0/16: .1 outside, .2 inside
        prefix = f"10.213.{block // 256}"
        self.outer_address = f"{prefix}.{block % 256 + 1}"
        self.inner_address = f"{prefix}.{block % 256 + 2}"
        try:
            _run(["ip", "netns", "add", self.name])
            _run(["ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner])
            _run(["ip", "link", "set", self.inner, "netns", self.name])
            _run(["ip", "addr", "add", f"{self.outer_address}/30", "dev", self.outer])
            _run(["ip", "link", "set", self.outer, "up"])
            self._inside("ip", "addr", "add", f"{self.inner_address}/30", "dev", self.inner)
            self._inside("ip", "link", "set", self.inner, "up")
            self._inside("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def _inside(self, *command: str) -> None:
        _run(["ip", "netns", "exec", self.name, *command])

    def shape(self, qdisc: Sequence[str]) -> None:
        """Put ``qdisc`` (``tc`` arguments) on both ends, so it acts on each direction."""
        _run(["tc", "qdisc", "replace", "dev", self.outer, "root", *qdisc])
        self._inside("tc", "qdisc", "replace", "dev", self.inner, "root", *qdisc)

    def heal(self) -> None:
        """Back to the plain link (no error if it was never shaped)."""
        for command in (
            ["tc", "qdisc", "del", "dev", self.outer, "root"],
            ["ip", "netns", "exec", self.name, "tc", "qdisc", "del", "dev", self.inner, "root"],
        ):
            subprocess.run(command, capture_output=True, check=False)

    def set_inner_link(self, *, up: bool) -> None:
        """Down: the server's end of the link drops every packet, each way, while TCP keeps
        retransmitting; nothing tells either side the connection is gone."""
        self._inside("ip", "link", "set", self.inner, "up" if up else "down")
        if up:  # carrier back on the outer end: packets flow again
            carrier = Path(f"/sys/class/net/{self.outer}/carrier")
            wait_until(lambda: carrier.read_text().strip() == "1", timeout=10, interval=0.01)

    def close(self) -> None:
        """Deleting the namespace deletes its end of the pair, and with it the outer end."""
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, check=False)
        deadline = time.monotonic() + 5
        while Path(f"/sys/class/net/{self.outer}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
