"""Soak (issues #4 and #13): minutes of mixed traffic while qcluster nodes are killed, or while
the database, the broker, the disk or the network really fail; nothing accepted is lost, no
effect doubled, nothing stored for a forged request.

    python -m bench.soak [--duration 180] [--rate 100] [--threads 8] [--kills 2]
                         [--down-seconds 10] [--drain-timeout 300] [--recovery-grace 10]
                         [--task-timeout 15] [--keep] [--smoke]
    python -m bench.soak --faults [NAME,...] [--smoke] [options above]

Not a timed test: a script that runs the scale-out deployment as it would run in production
and checks the database afterwards. Every server is the run's own (bench/outages.py,
bench/servers.py): a private PostgreSQL cluster (inside a network namespace when run as root)
and a private Redis, never the machine's shared ones; one gunicorn with 4 sync workers, two
``manage.py qcluster`` nodes with 2 workers each, the settings of bench/soak_settings.py
(recovery within seconds instead of minutes; the options above set them).

traffic   --threads senders POST signed generic deliveries (workflow ``soak``, see
          bench/workflows.py) at --rate requests/s in all for --duration seconds: about 70 %
          new ids, 20 % duplicates (of any id sent so far, half of them of the 100 latest,
          which are often still queued or running, plus "race" twins: a new id sent on two
          connections at once, so two web workers insert it concurrently) and 10 % with a wrong
          signature (ids ``invalid-…``, never sent validly). A valid delivery refused with 503
          (or a dropped connection) is sent again by its sender 1, 2, 4, then 8 s later, as
          providers retry, until it is accepted (up to RETRY_HORIZON s after the traffic).
chaos     --kills times, evenly spread (at 1/3 and 2/3 by default), one qcluster node's whole
          process group is SIGKILLed while one of its workers runs a workflow (it waits up to
          5 s for one: the workflow records its worker's pid), so the Redis broker loses that
          task and any the node had prefetched; a new node starts --down-seconds later. The
          nodes take turns.
faults    --faults instead: the fault phases of bench/outages.py, evenly spread over the
          traffic, each breaking something for its own number of seconds: pg-restart,
          redis-kill, slow-link and link-cut on the PostgreSQL + Redis leg, then disk-full on
          the SQLite + ORM broker leg (its own run). No process is restarted: web and workers
          must recover by themselves. ``--faults pg-restart,disk-full`` picks phases.
drain     after the traffic, wait (at most --drain-timeout) until no event is pending, running
          or failed: the app's recovery has to re-enqueue what the killed nodes or the lost
          queue dropped.
verify    SQL against the leg's database: every id answered 202 or 200 has exactly one event
          row, and it succeeded; the workflow's effect (done inside ``once()``) exists exactly
          once per id; no row for any other id (the invalid ones included); every id answered
          202 exactly once; no 5xx, no connection error, no unexpected status, except a
          ``503 unavailable`` with Retry-After during a fault (until OUTAGE_SETTLE_SECONDS after
          it ends); every refused delivery accepted when its sender retried; no process died.
          Workflow runs above one per id are reported, not failed: delivery is at least once,
          the effect is not.

--smoke is 20 s at 50 requests/s with one kill: about a minute. --faults --smoke is 40 s at
50 requests/s with one PostgreSQL restart and one Redis kill: about two minutes. Holds
/tmp/webhooks-bench.lock (flock) for the whole run, so benchmarks never overlap. Prints a
table and one JSON line per leg, and last a line summing up requests, accepted, lost, doubled
and the longest recovery. Exit status 1 if a check failed (the log directory is then kept and
named on stderr).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import heapq
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    Cluster,
    Gunicorn,
    bench_lock,
    envelope,
    median,
    percentile,
    signature,
    terminate_on_sigterm,
    wait_until,
)
from bench.outages import FAULTS, NEEDS_ROOT, SMOKE_FAULTS, WORK_PREFIX, Deployment, Fault

PATH = "/webhooks/generic/"
WEB_WORKERS = 4
NODES = ("a", "b")
NODE_WORKERS = 2
WARM_IDS = 20
#: Share of the senders' steps; a "race" step sends one new id twice at once (2 requests), so
#: requests come out at about 70 % new, 20 % duplicate, 10 % invalid.
STEPS = {"new": 0.685, "duplicate": 0.16, "race": 0.05, "invalid": 0.105}
#: Duplicates pick from the latest ids this often (those are often still queued or running).
RECENT_SHARE, RECENT_IDS = 0.5, 100
VALID_STATUSES = {200, 202}
#: A valid delivery answered so is sent again by its sender: 503 (``unavailable``: not stored)
#: and a connection error. Anything else is an answer a sender would not retry.
REFUSED_STATUSES = {0, 500, 502, 503, 504}
UNFINISHED = ("pending", "running", "failed")
AIM_SECONDS = 5  # how long a kill waits for its node to be running a workflow
#: A killed node's processes die over some milliseconds after the parent is reaped (when the
#: kill is timed): its pusher can still take a task enqueued just after, and lose it.
KILL_SETTLE_SECONDS = 1
SLOW_SECONDS = 5  # receipt-to-finish above this: the event waited for recovery (or a backlog)
RECOVERED = re.compile(r"Recovered stranded webhook events: (\{.*\})")


#: A fault's window for refusals lasts this long past its end: web workers find their broken
#: connections on their next request, and a request that started in the outage may end after it.
OUTAGE_SETTLE_SECONDS = 15
#: The p99 "after" a fault is over the answers of this many seconds after its window.
AFTER_SECONDS = 15
#: How long after the traffic senders keep retrying the deliveries that were refused.
RETRY_HORIZON = 120


def main() -> int:
    args = parse_args()
    terminate_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
    try:
        with bench_lock():
            reports = [soak(args, leg, faults, work / leg) for leg, faults in legs(args)]
    except BaseException:
        print(f"soak crashed; logs in {work}", file=sys.stderr)
        raise
    for report in reports:
        print(table(report), flush=True)
        print(json.dumps(report), flush=True)
    print(summary(reports), flush=True)
    if not all(report["ok"] for report in reports):
        print(f"FINDING: soak checks failed; logs in {work}", file=sys.stderr)
        return 1
    if args.keep:
        print(f"kept: logs in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=100, help="requests/s, all senders")
    parser.add_argument("--threads", type=int, default=8, help="sender threads")
    parser.add_argument("--kills", type=int, default=None, help="qcluster nodes SIGKILLed")
    parser.add_argument("--down-seconds", type=float, default=10, help="kill to restart")
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--recovery-grace", type=int, default=10, help="WEBHOOKS RECOVERY_GRACE")
    parser.add_argument("--task-timeout", type=int, default=15, help="Q_CLUSTER timeout")
    parser.add_argument(
        "--faults",
        nargs="?",
        const=",".join(FAULTS),
        default="",
        help=f"fault phases instead of kills (default: all of {', '.join(FAULTS)})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    parser.add_argument("--smoke", action="store_true", help="a short run (see above)")
    args = parser.parse_args()
    args.faults = [name for name in args.faults.split(",") if name]
    unknown = sorted(set(args.faults) - set(FAULTS))
    if unknown:
        parser.error(f"unknown fault {', '.join(unknown)}: the faults are {', '.join(FAULTS)}")
    if os.geteuid() != 0 and NEEDS_ROOT & set(args.faults):
        parser.error(f"{', '.join(sorted(NEEDS_ROOT & set(args.faults)))} need root")
    if args.faults and args.kills:
        parser.error("--faults and --kills: one kind of chaos per run")
    if args.smoke and args.faults:
        args.faults = [name for name in args.faults if name in SMOKE_FAULTS] or list(SMOKE_FAULTS)
        args.duration, args.rate = args.duration or 40, 50
    elif args.smoke:
        args.duration, args.rate, args.kills, args.down_seconds = 20, 50, 1, 5
    args.duration = args.duration or 180
    args.kills = 0 if args.faults else (2 if args.kills is None else args.kills)
    if args.kills and args.down_seconds >= args.duration / (args.kills + 1):
        parser.error("--down-seconds must end before the next kill: lower it or --kills")
    return args


def legs(args: argparse.Namespace) -> list[tuple[str, list[Fault]]]:
    """The legs to run, each with its faults: the node kills run on PostgreSQL + Redis."""
    chosen = [FAULTS[name] for name in args.faults]
    if not chosen:
        return [("postgres", [])]
    return [
        (leg, faults)
        for leg in ("postgres", "sqlite")
        if (faults := [fault for fault in chosen if fault.leg == leg])
    ]


# -- the run ---------------------------------------------------------------------------------


def soak(args: argparse.Namespace, leg: str, faults: list[Fault], work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    load_before = os.getloadavg()
    with Deployment(leg, work, queue=f"soak-{os.getpid()}") as deployment:
        env = soak_env(args, deployment)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v0"],
            cwd=REPO,
            env=env,
            check=True,
        )
        traffic, chaos, drain = run_processes(args, deployment, env, faults, work)
        results = verify(deployment, traffic, chaos, drain, work)
    config = {key: getattr(args, key) for key in (
        "duration", "rate", "threads", "kills", "down_seconds", "drain_timeout",
        "recovery_grace", "task_timeout", "smoke",
    )}  # fmt: skip
    config.update(
        leg=leg,
        faults=[fault.name for fault in faults],
        web_workers=WEB_WORKERS,
        nodes=len(NODES),
        node_workers=NODE_WORKERS,
        loadavg_before=load_before,
        loadavg_after=os.getloadavg(),
    )
    return {"benchmark": "soak", "config": config, **results}


def soak_env(args: argparse.Namespace, deployment: Deployment) -> dict[str, str]:
    """The leg's environment (its own servers and queue) with the soak's settings."""
    env = dict(deployment.env)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.soak_settings",
        Q_WORKERS=str(NODE_WORKERS),
        SOAK_RECOVERY_GRACE=str(args.recovery_grace),
        SOAK_TASK_TIMEOUT=str(args.task_timeout),
    )
    return env


def status_counts(deployment: Deployment) -> dict[str, int]:
    rows = deployment.query(
        "SELECT status, count(*) FROM webhooks_app_webhookevent GROUP BY status"
    )
    return {status: count for status, count in rows}


def run_processes(
    args: argparse.Namespace,
    deployment: Deployment,
    env: dict[str, str],
    faults: list[Fault],
    work: Path,
) -> tuple[Traffic, list[dict[str, Any]], dict[str, Any]]:
    """Start gunicorn and the nodes, warm up, send traffic through the kills or the faults,
    then drain."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Gunicorn(env, WEB_WORKERS, work / "gunicorn.log"))
        nodes = Nodes(deployment, env, work, stack)
        traffic = Traffic(server.port, args.rate, args.threads, args.duration)
        warm_up(deployment, traffic)
        traffic.start()
        try:
            chaos = [kill_and_restart(nodes, traffic, number, args) for number in range(args.kills)]
            chaos += [
                inflict(deployment, traffic, fault, number, len(faults))
                for number, fault in enumerate(faults)
            ]
            traffic.join()
        finally:
            traffic.stop()
        drain = wait_for_drain(deployment, traffic, nodes, args.drain_timeout)
        drain["web_alive"] = server.alive()
    return traffic, chaos, drain


def warm_up(deployment: Deployment, traffic: Traffic) -> None:
    """Every web worker and both nodes have served before the clock starts."""
    sender = traffic.sender(-1)
    for i in range(WARM_IDS):
        sender.exchange([Delivery("warm", f"warm-{i}", valid=True)])
    wait_until(
        lambda: status_counts(deployment).get("succeeded", 0) >= WARM_IDS,
        timeout=60,
        interval=0.5,
    )


# -- qcluster nodes and chaos ----------------------------------------------------------------


class Nodes:
    """The qcluster nodes, each stopped by ``stack``; a killed one is replaced by a new one."""

    def __init__(
        self,
        deployment: Deployment,
        env: dict[str, str],
        work: Path,
        stack: contextlib.ExitStack,
    ) -> None:
        self.deployment, self.env, self.work, self.stack = deployment, env, work, stack
        self.started: Counter[str] = Counter()
        self.running = {name: self.start(name) for name in NODES}

    def start(self, name: str) -> Cluster:
        self.started[name] += 1
        log = self.work / f"qcluster-{name}{self.started[name]}.log"
        return self.stack.enter_context(Cluster(self.env, log))

    def kill(self, name: str) -> None:
        """SIGKILL the node's whole process group, as the OOM killer or a lost machine would."""
        popen = self.running[name].popen
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)

    def restart(self, name: str) -> None:
        self.running[name] = self.start(name)

    def dead(self) -> list[str]:
        return [name for name, node in self.running.items() if not node.alive()]

    def in_flight(self, name: str) -> list[str]:
        """The ids whose workflow a worker of this node runs now (by the pid of the run)."""
        group = self.running[name].popen.pid
        rows = self.deployment.query(
            "SELECT e.webhook_id, r.pid FROM webhooks_app_webhookevent e"
            " JOIN bench_soakrun r ON r.webhook_id = e.webhook_id WHERE e.status = 'running'"
        )
        return sorted({webhook_id for webhook_id, pid in rows if process_group(pid) == group})


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:  # a worker of a node killed earlier
        return None


def kill_and_restart(
    nodes: Nodes, traffic: Traffic, number: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Kill node a, b, a… at its turn (evenly spread over the traffic), aimed at a moment when
    it runs a workflow (within AIM_SECONDS), and start a new node --down-seconds later."""
    name = NODES[number % len(NODES)]
    traffic.sleep_until(args.duration * (number + 1) / (args.kills + 1))
    try:
        mid_run = wait_until(lambda: nodes.in_flight(name), timeout=AIM_SECONDS, interval=0.01)
    except TimeoutError:
        mid_run = []
    nodes.kill(name)
    killed_at, killed_epoch = traffic.clock(), time.time()
    at_kill = status_counts(nodes.deployment)
    traffic.sleep_until(killed_at + args.down_seconds)
    nodes.restart(name)
    return {
        "kind": "kill",
        "node": name,
        "killed_at_s": round(killed_at, 1),
        "killed_epoch": killed_epoch,
        "restarted_at_s": round(traffic.clock(), 1),
        "killed_mid_run": mid_run,
        "running_after_kill": at_kill.get("running", 0),
        "pending_after_kill": at_kill.get("pending", 0),
    }


def inflict(
    deployment: Deployment, traffic: Traffic, fault: Fault, number: int, count: int
) -> dict[str, Any]:
    """Fault ``number`` of ``count``, centred on its share of the traffic: break, wait, mend."""
    traffic.sleep_until(traffic.duration * (number + 1) / (count + 1) - fault.seconds / 2)
    began_at, began_epoch = traffic.clock(), time.time()
    fault.begin(deployment)
    traffic.sleep_until(began_at + fault.seconds)
    fault.end(deployment)
    return {
        "kind": "fault",
        "fault": fault.name,
        "describe": fault.describe,
        "began_at_s": round(began_at, 1),
        "began_epoch": began_epoch,
        "ended_at_s": round(traffic.clock(), 1),
        "ended_epoch": time.time(),
    }


def all_finished(deployment: Deployment) -> bool:
    """From one snapshot: one query per status could miss an event moving between them."""
    counts = status_counts(deployment)
    return not any(counts.get(status) for status in UNFINISHED)


def wait_for_drain(
    deployment: Deployment, traffic: Traffic, nodes: Nodes, timeout: float
) -> dict[str, Any]:
    """Seconds from the end of the traffic (and of the senders' retries) until no event is
    pending, running or failed."""
    started = time.perf_counter()
    finished = True
    try:
        wait_until(lambda: all_finished(deployment), timeout=timeout, interval=0.5)
    except TimeoutError:
        finished = False
    return {
        "finished": finished,
        "drain_s": round(time.perf_counter() - started, 1),
        "traffic_s": round(traffic.elapsed, 1),
        "statuses": status_counts(deployment),
        "dead_nodes": nodes.dead(),
        "restarted_nodes": sorted(name for name, n in nodes.started.items() if n > 1),
    }


# -- traffic ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    kind: str  # warm, new, duplicate, race (the concurrent twin of a new id), invalid, retry
    webhook_id: str
    valid: bool
    tries: int = 0  # how often this delivery was refused before (a retry's count)


@dataclass(frozen=True)
class Answer:
    kind: str
    webhook_id: str
    status: int  # 0: connection error
    done_s: float  # on the traffic clock
    latency_ms: float
    error: str = ""  # the JSON body's "error" of a refusal
    retry_after: bool = False  # a Retry-After header came with it


@dataclass
class Traffic:
    """Paced senders sharing the ids sent so far; ``answers`` has every response."""

    port: int
    rate: float
    threads: int
    duration: float
    answers: list[Answer] = field(default_factory=list)
    sent_ids: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    _t0: float = field(default_factory=time.perf_counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def clock(self) -> float:
        return time.perf_counter() - self._t0

    def sleep_until(self, at: float) -> None:
        self._stop.wait(max(0.0, at - self.clock()))

    def sender(self, number: int) -> Sender:
        return Sender(self, number, random.Random(number))

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._workers = [
            threading.Thread(target=self.sender(i).run, name=f"sender-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def join(self) -> None:
        """Until every sender is done: the traffic, then its retries."""
        for worker in self._workers:
            worker.join()
        self.elapsed = self.clock()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def running(self) -> bool:
        return not self._stop.is_set() and self.clock() < self.duration

    def retrying(self) -> bool:
        return not self._stop.is_set() and self.clock() < self.duration + RETRY_HORIZON


class Sender:
    """One sender thread: its schedule, its own ids, two connections (a race uses both) and
    the deliveries it must send again because they were refused."""

    def __init__(self, traffic: Traffic, number: int, rng: random.Random) -> None:
        self.traffic, self.number, self.rng = traffic, number, rng
        self.connections = [self._connect(), self._connect()]
        self.sequence = 0
        self.retries: list[tuple[float, int, Delivery]] = []  # a heap: (due, sequence, delivery)

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.traffic.port, timeout=30)

    def run(self) -> None:
        """Step k of thread i is due at (k * threads + i) / rate; late steps go at once. A
        retry goes when it is due, before the next step; after the traffic, retries only."""
        traffic, step = self.traffic, 0
        while traffic.running():
            due = (step * traffic.threads + self.number) / traffic.rate
            traffic.sleep_until(min(due, self.retries[0][0]) if self.retries else due)
            if not traffic.running():
                break
            if self.retries and self.retries[0][0] <= traffic.clock():
                self.exchange([heapq.heappop(self.retries)[2]])
                continue
            self.exchange(self.next_step())
            step += 1
        while self.retries and traffic.retrying():
            traffic.sleep_until(self.retries[0][0])
            self.exchange([heapq.heappop(self.retries)[2]])

    def next_step(self) -> list[Delivery]:
        kind = self.rng.choices(list(STEPS), weights=list(STEPS.values()))[0]
        if kind == "invalid":
            return [Delivery("invalid", self.fresh_id("invalid"), valid=False)]
        if kind == "duplicate" and self.traffic.sent_ids:
            return [Delivery("duplicate", self.earlier_id(), valid=True)]
        webhook_id = self.fresh_id("soak")
        self.traffic.sent_ids.append(webhook_id)  # before sending: duplicates may overtake it
        first = Delivery("new", webhook_id, valid=True)
        return [first, Delivery("race", webhook_id, valid=True)] if kind == "race" else [first]

    def fresh_id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}-{self.number}-{self.sequence}"

    def earlier_id(self) -> str:
        sent = self.traffic.sent_ids
        if self.rng.random() < RECENT_SHARE:
            return self.rng.choice(sent[-RECENT_IDS:])
        return self.rng.choice(sent)

    def exchange(self, deliveries: list[Delivery]) -> None:
        """Send every delivery (each on its own connection) before reading any answer, so a
        race's twins reach two web workers together. A race twin's latency includes reading
        the first answer."""
        started = time.perf_counter()
        sent = []
        for connection, delivery in zip(self.connections, deliveries, strict=False):
            body = envelope(delivery.webhook_id, workflow="soak")
            headers = {
                "Content-Type": "application/json",
                "X-Webhook-Signature": signature(body, valid=delivery.valid),
            }
            try:
                connection.request("POST", PATH, body, headers)
                sent.append((connection, delivery))
            except (OSError, http.client.HTTPException):
                connection.close()
                self.record(delivery, (0, "", False), started)
        for connection, delivery in sent:
            self.record(delivery, self.read(connection), started)

    @staticmethod
    def read(connection: http.client.HTTPConnection) -> tuple[int, str, bool]:
        """Status, the refusal's error code (5xx only) and whether Retry-After came with it."""
        try:
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            return 0, "", False
        error = ""
        if response.status >= 500:
            with contextlib.suppress(ValueError, AttributeError):
                error = str(json.loads(body).get("error", ""))
        return response.status, error, response.getheader("Retry-After") is not None

    def record(self, delivery: Delivery, answer: tuple[int, str, bool], started: float) -> None:
        status, error, retry_after = answer
        now = time.perf_counter()
        self.traffic.answers.append(
            Answer(
                kind=delivery.kind,
                webhook_id=delivery.webhook_id,
                status=status,
                done_s=self.traffic.clock(),
                latency_ms=(now - started) * 1000,
                error=error,
                retry_after=retry_after,
            )
        )
        if delivery.valid and delivery.kind != "warm" and status in REFUSED_STATUSES:
            tries = delivery.tries + 1
            retry = Delivery("retry", delivery.webhook_id, valid=True, tries=tries)
            due = self.traffic.clock() + min(2.0 ** (tries - 1), 8.0)
            self.sequence += 1
            heapq.heappush(self.retries, (due, self.sequence, retry))


# -- verification ----------------------------------------------------------------------------


def verify(
    deployment: Deployment,
    traffic: Traffic,
    chaos: list[dict[str, Any]],
    drain: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    """Everything the database says after the drain, against every answer the senders got."""
    answers = traffic.answers
    accepted = {a.webhook_id for a in answers if a.status in VALID_STATUSES}
    events = {
        webhook_id: (source, status, attempts, bool(lost))
        for webhook_id, source, status, attempts, lost in deployment.query(
            "SELECT webhook_id, source, status, attempts, "
            f"{deployment.lost_attempt()} FROM webhooks_app_webhookevent"
        )
    }
    effects = grouped(
        deployment, "SELECT webhook_id, count(*) FROM bench_soakeffect GROUP BY webhook_id"
    )
    runs = grouped(deployment, "SELECT webhook_id, count(*) FROM bench_soakrun GROUP BY webhook_id")
    accepted_202 = Counter(a.webhook_id for a in answers if a.status == 202)
    windows = outage_windows(chaos)

    lost = sorted(
        i for i in accepted if events.get(i, ("", "missing"))[:2] != ("generic", "succeeded")
    )
    doubled = sorted(i for i in accepted | set(effects) if effects.get(i, 0) > 1)
    unexpected = [a for a in answers if not expected(a, windows)]
    server_errors = sum(1 for a in answers if a.status >= 500)
    connection_errors = sum(1 for a in answers if a.status == 0)
    refused = {
        a.webhook_id for a in answers if a.status in REFUSED_STATUSES and a.kind != "invalid"
    }
    checks = [
        check(
            "every accepted id: one event row, succeeded",
            lost,
            f"{len(accepted) - len(lost)}/{len(accepted)}",
        ),
        check(
            "effect exactly once per accepted id",
            sorted(i for i in accepted | set(effects) if effects.get(i, 0) != 1),
            f"{sum(effects.values())} effects for {len(accepted)} ids",
        ),
        check(
            "no event row for any other id (invalid ones included)",
            sorted(set(events) - accepted),
            f"{len(events)} rows, {len(accepted)} accepted ids",
        ),
        check(
            "every accepted id ran at least once",
            sorted(i for i in accepted if not runs.get(i)),
            f"{sum(runs.values())} runs for {len(accepted)} ids",
        ),
        check(
            "one 202 answer per accepted id",
            sorted(i for i in accepted if accepted_202[i] != 1),
            f"{sum(accepted_202.values())} answers 202",
        ),
        check(
            "no 5xx, connection error or unexpected status (but 503 unavailable with "
            "Retry-After during a fault)",
            sorted({f"{a.webhook_id}:{a.status}@{a.done_s:.1f}s" for a in unexpected}),
            f"{len(answers)} answers, {server_errors} 5xx, {connection_errors} connection errors",
        ),
        check(
            "every refused delivery accepted when its sender retried",
            sorted(refused - accepted),
            f"{len(refused)} ids refused at least once",
        ),
        check(
            "all events finished after the traffic",
            [] if drain["finished"] else [json.dumps(drain["statuses"])],
            f"in {drain['drain_s']} s",
        ),
        check(
            "no process died unkilled, none restarted but the killed nodes",
            drain["dead_nodes"]
            + ([] if drain["web_alive"] else ["gunicorn"])
            + ([] if any(c["kind"] == "kill" for c in chaos) else drain["restarted_nodes"]),
            "gunicorn and all nodes alive at the end",
        ),
    ]
    return {
        "ok": all(c["ok"] for c in checks),
        "lost": len(lost),
        "doubled": len(doubled),
        "requests": request_summary(answers),
        "throughput": throughput(answers, traffic.elapsed),
        "chaos": chaos,
        "faults": [
            fault_report(deployment, fault, chaos, answers, lost, doubled)
            for fault in chaos
            if fault["kind"] == "fault"
        ],
        "drain": drain,
        "processing": processing(deployment, events, runs, chaos, work),
        "killed_mid_run": killed_mid_run(chaos, events, runs, effects),
        "checks": checks,
    }


def outage_windows(chaos: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """When a refusal is the expected answer: from a fault's start until it settled."""
    return [
        (fault["began_at_s"], fault["ended_at_s"] + OUTAGE_SETTLE_SECONDS)
        for fault in chaos
        if fault["kind"] == "fault"
    ]


def expected(answer: Answer, windows: list[tuple[float, float]]) -> bool:
    """A forged request is refused; a valid one is accepted (202) or a duplicate (200), and
    either may come first: a duplicate can overtake its id's first delivery. During a fault a
    valid one may also be refused as the contract says: 503 ``unavailable``, Retry-After."""
    if answer.kind == "invalid":
        return answer.status == 401
    if answer.status in VALID_STATUSES:
        return True
    return (
        answer.status == 503
        and answer.error == "unavailable"
        and answer.retry_after
        and any(start <= answer.done_s <= end for start, end in windows)
    )


def fault_report(
    deployment: Deployment,
    fault: dict[str, Any],
    chaos: list[dict[str, Any]],
    answers: list[Answer],
    lost: list[str],
    doubled: list[str],
) -> dict[str, Any]:
    """One fault's table row. Its answers are those from its start until the next fault starts
    (or the end); its ids are the new ones first sent then. "After" is the AFTER_SECONDS past
    its settled window, whatever came then. Recovery: from the fault's end until the last event
    received before it finished."""
    starts = sorted(c["began_at_s"] for c in chaos if c["kind"] == "fault")
    following = [start for start in starts if start > fault["began_at_s"]]
    until = following[0] if following else float("inf")
    ours = [a for a in answers if fault["began_at_s"] <= a.done_s < until and a.kind != "warm"]
    during = [a for a in ours if a.done_s <= fault["ended_at_s"] + OUTAGE_SETTLE_SECONDS]
    after = [
        a
        for a in answers
        if a.kind != "warm"
        and fault["ended_at_s"] + OUTAGE_SETTLE_SECONDS
        < a.done_s
        <= fault["ended_at_s"] + OUTAGE_SETTLE_SECONDS + AFTER_SECONDS
    ]
    ids = {a.webhook_id for a in ours if a.kind in ("new", "race")}
    refusals = [a for a in ours if a.status in REFUSED_STATUSES and a.kind != "invalid"]
    last_finish = deployment.query(
        f"SELECT max({deployment.epoch('finished_at')}) FROM webhooks_app_webhookevent"
        f" WHERE {deployment.epoch('received_at')} <= %s",
        (fault["ended_epoch"],),
    )[0][0]
    return {
        "fault": fault["fault"],
        "describe": fault["describe"],
        "seconds": round(fault["ended_at_s"] - fault["began_at_s"], 1),
        "requests": len(ours),
        "accepted": sum(1 for a in ours if a.status in VALID_STATUSES),
        "refused_503": sum(1 for a in refusals if a.status == 503),
        "connection_errors": sum(1 for a in refusals if a.status == 0),
        "last_refusal_after_end_s": round(
            max((a.done_s for a in refusals), default=fault["ended_at_s"]) - fault["ended_at_s"], 1
        ),
        "lost": sum(1 for i in lost if i in ids),
        "doubled": sum(1 for i in doubled if i in ids),
        "recovery_s": None
        if last_finish is None
        else round(max(0.0, float(last_finish) - fault["ended_epoch"]), 1),
        "p99_during_ms": round(percentile([a.latency_ms for a in during] or [0.0], 99), 1),
        "max_during_ms": round(max((a.latency_ms for a in during), default=0.0), 1),
        "p99_after_ms": round(percentile([a.latency_ms for a in after] or [0.0], 99), 1),
    }


def grouped(deployment: Deployment, sql: str) -> dict[str, int]:
    return {webhook_id: count for webhook_id, count in deployment.query(sql)}


def check(name: str, offenders: list[str], detail: str) -> dict[str, Any]:
    """A verdict with how many ids broke it and the first few of them."""
    return {"name": name, "ok": not offenders, "failures": len(offenders),
            "examples": offenders[:5], "detail": detail}  # fmt: skip


def request_summary(answers: list[Answer]) -> dict[str, Any]:
    """Counts, statuses and answer times per kind of request, warm-up excluded."""
    kinds = ["new", "duplicate", "race", "invalid", "retry"]
    summary: dict[str, Any] = {}
    for kind in [*kinds, "all"]:
        ours = [a for a in answers if a.kind == kind or (kind == "all" and a.kind in kinds)]
        latencies = [a.latency_ms for a in ours] or [0.0]
        summary[kind] = {
            "count": len(ours),
            "statuses": dict(sorted(Counter(str(a.status) for a in ours).items())),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p99_ms": round(percentile(latencies, 99), 1),
        }
    return summary


def throughput(answers: list[Answer], elapsed: float) -> dict[str, Any]:
    """Answers per second of the traffic clock (whole seconds only)."""
    per_second = Counter(int(a.done_s) for a in answers if a.kind != "warm")
    series = [per_second.get(second, 0) for second in range(int(elapsed))] or [0]
    return {
        "requests_per_s": round(sum(per_second.values()) / elapsed, 1),
        "per_second_min": min(series),
        "per_second_median": median(series),
        "per_second_max": max(series),
        "per_second": series,
    }


def processing(
    deployment: Deployment,
    events: dict[str, tuple[str, str, int, bool]],
    runs: dict[str, int],
    chaos: list[dict[str, Any]],
    work: Path,
) -> dict[str, Any]:
    """What the kills cost: repeated runs, lost attempts, recovery passes, slow events."""
    rows = [
        (float(received), float(finished))
        for received, finished in deployment.query(
            f"SELECT {deployment.epoch('received_at')}, {deployment.epoch('finished_at')}"
            " FROM webhooks_app_webhookevent WHERE status = 'succeeded'"
        )
    ]
    delays = [finished - received for received, finished in rows] or [0.0]
    slow = [
        (received, finished) for received, finished in rows if finished - received > SLOW_SECONDS
    ]
    return {
        "workflow_runs": sum(runs.values()),
        "ids_run_more_than_once": sum(1 for count in runs.values() if count > 1),
        "events_attempted_more_than_once": sum(1 for e in events.values() if e[2] > 1),
        "lost_attempts_recorded": sum(1 for e in events.values() if e[3]),
        "recovery_passes": recovery_passes(work),
        "receipt_to_finish_p50_ms": round(percentile(delays, 50) * 1000, 1),
        "receipt_to_finish_p99_ms": round(percentile(delays, 99) * 1000, 1),
        "receipt_to_finish_max_s": round(max(delays), 1),
        "slow_events": len(slow),
        "slow_events_per_kill": slow_per_kill(slow, chaos),
    }


def slow_per_kill(
    slow: list[tuple[float, float]], chaos: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Slow events (receipt to finish over SLOW_SECONDS) by the first kill after their receipt
    (or up to KILL_SETTLE_SECONDS before it), which is the one that stranded them; the last of
    them says how long recovery took. Later events belong to no kill (``kill`` None)."""
    kills: list[float] = [kill["killed_epoch"] for kill in chaos if kill["kind"] == "kill"]
    by_kill: dict[float | None, list[float]] = {}
    for received, finished in slow:
        kill = next((epoch for epoch in kills if epoch + KILL_SETTLE_SECONDS >= received), None)
        by_kill.setdefault(kill, []).append(finished)
    return [
        {
            "kill": None if epoch is None else kills.index(epoch) + 1,
            "events": len(finishes),
            "last_finished_after_kill_s": None
            if epoch is None
            else round(max(finishes) - epoch, 1),
        }
        for epoch, finishes in by_kill.items()
    ]


def killed_mid_run(
    chaos: list[dict[str, Any]],
    events: dict[str, tuple[str, str, int, bool]],
    runs: dict[str, int],
    effects: dict[str, int],
) -> dict[str, dict[str, Any]]:
    """What became of the events whose workflow was running on a node when it was killed."""
    return {
        webhook_id: {
            "status": events[webhook_id][1] if webhook_id in events else "missing",
            "attempts": events[webhook_id][2] if webhook_id in events else 0,
            "runs": runs.get(webhook_id, 0),
            "effects": effects.get(webhook_id, 0),
        }
        for kill in chaos
        if kill["kind"] == "kill"
        for webhook_id in kill["killed_mid_run"]
    }


def recovery_passes(work: Path) -> dict[str, Any]:
    """The recovery schedule's log lines: how many passes found something, and what."""
    found: Counter[str] = Counter()
    passes = 0
    for log in sorted(work.glob("qcluster-*.log")):
        for match in RECOVERED.finditer(log.read_text(errors="replace")):
            passes += 1
            found.update(ast.literal_eval(match.group(1)))
    return {"passes_with_work": passes, "recovered": dict(found)}


# -- output ----------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    config, drain, tp, proc = (
        report["config"], report["drain"], report["throughput"], report["processing"],
    )  # fmt: skip
    broker = "PostgreSQL + Redis broker" if config["leg"] == "postgres" else "SQLite + ORM broker"
    lines = [
        "",
        f"soak: {broker}, gunicorn {config['web_workers']} workers, "
        f"{config['nodes']} qcluster nodes x {config['node_workers']} workers; "
        f"{drain['traffic_s']:g} s of traffic at {config['rate']:g} req/s target, "
        f"{config['threads']} threads; recovery grace {config['recovery_grace']} s, "
        f"task timeout {config['task_timeout']} s",
        f"{'requests':<12}{'count':>8}{'p50 ms':>9}{'p99 ms':>9}  statuses",
    ]
    for kind, r in report["requests"].items():
        lines.append(
            f"{kind:<12}{r['count']:>8}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}  {r['statuses']}"
        )
    lines.append(
        f"throughput: {tp['requests_per_s']:g} req/s (per second: min {tp['per_second_min']}, "
        f"median {tp['per_second_median']:g}, max {tp['per_second_max']})"
    )
    for kill in (c for c in report["chaos"] if c["kind"] == "kill"):
        lines.append(
            f"kill: node {kill['node']} SIGKILLed at {kill['killed_at_s']} s while running "
            f"{kill['killed_mid_run'] or 'no workflow'} (then {kill['running_after_kill']} "
            f"running, {kill['pending_after_kill']} pending in all), new node at "
            f"{kill['restarted_at_s']} s"
        )
    for webhook_id, fate in report["killed_mid_run"].items():
        lines.append(
            f"  killed mid-run {webhook_id}: {fate['status']} after {fate['attempts']} "
            f"attempt(s), {fate['runs']} run(s), {fate['effects']} effect(s)"
        )
    lines += [
        f"drain after traffic: {drain['drain_s']} s; statuses {drain['statuses']}",
        f"recovery: {proc['recovery_passes']}; lost attempts recorded "
        f"{proc['lost_attempts_recorded']}, events attempted more than once "
        f"{proc['events_attempted_more_than_once']}",
        f"workflow runs: {proc['workflow_runs']}, ids run more than once "
        f"{proc['ids_run_more_than_once']} (at least once: allowed while the effect is once)",
        f"receipt-to-finish: p50 {proc['receipt_to_finish_p50_ms']} ms, p99 "
        f"{proc['receipt_to_finish_p99_ms']} ms, max {proc['receipt_to_finish_max_s']} s; "
        f"{proc['slow_events']} events over {SLOW_SECONDS} s",
        *(
            f"  kill {group['kill']}: {group['events']} of them, the last finished "
            f"{group['last_finished_after_kill_s']} s after the kill"
            if group["kill"]
            else f"  not near a kill: {group['events']} of them (a backlog?)"
            for group in proc["slow_events_per_kill"]
        ),
    ]
    if report["faults"]:
        lines.append(
            f"{'fault':<12}{'s':>5}{'requests':>9}{'accepted':>9}{'503':>6}{'conn':>5}"
            f"{'lost':>5}{'doubled':>8}{'recovery s':>11}{'p99 during':>11}{'max during':>11}"
            f"{'p99 after':>10}"
        )
    for f in report["faults"]:
        lines.append(
            f"{f['fault']:<12}{f['seconds']:>5g}{f['requests']:>9}{f['accepted']:>9}"
            f"{f['refused_503']:>6}{f['connection_errors']:>5}{f['lost']:>5}{f['doubled']:>8}"
            f"{f['recovery_s'] if f['recovery_s'] is not None else '-':>11}"
            f"{f['p99_during_ms']:>9.0f}ms{f['max_during_ms']:>9.0f}ms{f['p99_after_ms']:>8.0f}ms"
        )
    lines.append("checks:")
    for c in report["checks"]:
        verdict = "PASS" if c["ok"] else f"FAIL ({c['failures']}, e.g. {c['examples']})"
        lines.append(f"  {verdict} {c['name']}: {c['detail']}")
    return "\n".join(lines)


def summary(reports: list[dict[str, Any]]) -> str:
    """The last line: what a CI log reader needs, for every leg together."""
    recoveries = [
        f["recovery_s"] for r in reports for f in r["faults"] if f["recovery_s"] is not None
    ]
    verdict = "ok" if all(r["ok"] for r in reports) else "FAILED"
    accepted = sum(
        count
        for r in reports
        for status, count in r["requests"]["all"]["statuses"].items()
        if int(status) in VALID_STATUSES
    )
    return (
        f"soak {verdict}: requests {sum(r['requests']['all']['count'] for r in reports)}, "
        f"accepted {accepted}, "
        f"lost {sum(r['lost'] for r in reports)}, doubled {sum(r['doubled'] for r in reports)}, "
        f"longest recovery {max(recoveries, default=0):g} s"
    )


if __name__ == "__main__":
    sys.exit(main())
