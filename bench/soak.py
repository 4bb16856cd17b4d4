"""Soak (issue #4): minutes of mixed traffic while qcluster nodes are killed; nothing lost, no
effect doubled, nothing stored for a forged request.

    python -m bench.soak [--duration 180] [--rate 100] [--threads 8] [--kills 2]
                         [--down-seconds 10] [--drain-timeout 300] [--recovery-grace 10]
                         [--task-timeout 15] [--keep] [--smoke]

Not a timed test: a script that runs the scale-out deployment as it would run in production
and checks the database afterwards. PostgreSQL (its own database, ``bench_soak``) + Redis (its
own queue name), one gunicorn with 4 sync workers, two ``manage.py qcluster`` nodes with 2
workers each, the settings of bench/soak_settings.py (recovery within seconds instead of
minutes; the options above set them).

traffic   --threads senders POST signed generic deliveries (workflow ``soak``, see
          bench/workflows.py) at --rate requests/s in all for --duration seconds: about 70 %
          new ids, 20 % duplicates (of any id sent so far, half of them of the 100 latest,
          which are often still queued or running, plus "race" twins: a new id sent on two
          connections at once, so two web workers insert it concurrently) and 10 % with a wrong
          signature (ids ``invalid-…``, never sent validly).
chaos     --kills times, evenly spread (at 1/3 and 2/3 by default), one qcluster node's whole
          process group is SIGKILLed while one of its workers runs a workflow (it waits up to
          5 s for one: the workflow records its worker's pid), so the Redis broker loses that
          task and any the node had prefetched; a new node starts --down-seconds later. The
          nodes take turns.
drain     after the traffic, wait (at most --drain-timeout) until no event is pending, running
          or failed: the app's recovery schedule has to re-enqueue what the killed nodes lost.
verify    SQL against bench_soak: every id answered 202 or 200 has exactly one event row, and it
          succeeded; the workflow's effect (done inside ``once()``) exists exactly once per id;
          no row for any other id (the invalid ones included); every id answered 202 exactly
          once; no 5xx, no connection error, no unexpected status. Workflow runs above one per
          id are reported, not failed: delivery is at least once, the effect is not.

--smoke is 20 s at 50 requests/s with one kill: about a minute, most of it waiting for the
recovery schedule (it runs once a minute). Holds /tmp/webhooks-bench.lock (flock) for the whole
run, so benchmarks never overlap. Prints a table and, last, one JSON line. Exit status 1 if a check failed (the log directory is then kept
and named on stderr).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
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

import psycopg

from bench.common import (
    PG_ADMIN_URL,
    REPO,
    Cluster,
    Gunicorn,
    bench_lock,
    clear_queue,
    envelope,
    leg_env,
    median,
    percentile,
    signature,
    terminate_on_sigterm,
    wait_until,
)

DATABASE = "bench_soak"
DATABASE_URL = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + DATABASE
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
UNFINISHED = ("pending", "running", "failed")
AIM_SECONDS = 5  # how long a kill waits for its node to be running a workflow
#: A killed node's processes die over some milliseconds after the parent is reaped (when the
#: kill is timed): its pusher can still take a task enqueued just after, and lose it.
KILL_SETTLE_SECONDS = 1
SLOW_SECONDS = 5  # receipt-to-finish above this: the event waited for recovery (or a backlog)
RECOVERED = re.compile(r"Recovered stranded webhook events: (\{.*\})")


def main() -> int:
    args = parse_args()
    terminate_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-soak-"))
    try:
        with bench_lock():
            report = soak(args, work)
    except BaseException:
        print(f"soak crashed; logs in {work}", file=sys.stderr)
        raise
    print(table(report), flush=True)
    print(json.dumps(report), flush=True)
    if not report["ok"]:
        print(f"FINDING: soak checks failed; logs in {work}", file=sys.stderr)
        return 1
    if args.keep:
        print(f"kept: database {DATABASE}, logs in {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=180, help="seconds of traffic")
    parser.add_argument("--rate", type=float, default=100, help="requests/s, all senders")
    parser.add_argument("--threads", type=int, default=8, help="sender threads")
    parser.add_argument("--kills", type=int, default=2, help="qcluster nodes SIGKILLed")
    parser.add_argument("--down-seconds", type=float, default=10, help="kill to restart")
    parser.add_argument("--drain-timeout", type=float, default=300)
    parser.add_argument("--recovery-grace", type=int, default=10, help="WEBHOOKS RECOVERY_GRACE")
    parser.add_argument("--task-timeout", type=int, default=15, help="Q_CLUSTER timeout")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs")
    parser.add_argument("--smoke", action="store_true", help="20 s at 50/s, one kill")
    args = parser.parse_args()
    if args.smoke:
        args.duration, args.rate, args.kills, args.down_seconds = 20, 50, 1, 5
    if args.kills and args.down_seconds >= args.duration / (args.kills + 1):
        parser.error("--down-seconds must end before the next kill: lower it or --kills")
    return args


# -- the run ---------------------------------------------------------------------------------


def soak(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = soak_env(args, work)
    load_before = os.getloadavg()
    create_database()
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--run-syncdb", "-v0"],
            cwd=REPO,
            env=env,
            check=True,
        )
        traffic, chaos, drain = run_processes(args, env, work)
        results = verify(traffic, chaos, drain, work)
    finally:
        clear_queue("postgres", env)  # tasks a recovery re-enqueued twice, if any are left
        if not args.keep:
            drop_database()
    config = {key: getattr(args, key) for key in (
        "duration", "rate", "threads", "kills", "down_seconds", "drain_timeout",
        "recovery_grace", "task_timeout", "smoke",
    )}  # fmt: skip
    config.update(
        web_workers=WEB_WORKERS,
        nodes=len(NODES),
        node_workers=NODE_WORKERS,
        loadavg_before=load_before,
        loadavg_after=os.getloadavg(),
    )
    return {"benchmark": "soak", "config": config, **results}


def soak_env(args: argparse.Namespace, work: Path) -> dict[str, str]:
    """The PostgreSQL leg's environment, on the soak's own database and queue."""
    env = leg_env("postgres", work, queue=f"soak-{os.getpid()}")
    env.update(
        DATABASE_URL=DATABASE_URL,
        DJANGO_SETTINGS_MODULE="bench.soak_settings",
        Q_WORKERS=str(NODE_WORKERS),
        SOAK_RECOVERY_GRACE=str(args.recovery_grace),
        SOAK_TASK_TIMEOUT=str(args.task_timeout),
    )
    return env


def create_database() -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")


def drop_database() -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def query(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One read on bench_soak, on a connection of its own (no snapshot outlives it)."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def status_counts() -> dict[str, int]:
    rows = query("SELECT status, count(*) FROM webhooks_app_webhookevent GROUP BY status")
    return {status: count for status, count in rows}


def run_processes(
    args: argparse.Namespace, env: dict[str, str], work: Path
) -> tuple[Traffic, list[dict[str, Any]], dict[str, Any]]:
    """Start gunicorn and the nodes, warm up, send traffic through the kills, then drain."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(Gunicorn(env, WEB_WORKERS, work / "gunicorn.log"))
        nodes = Nodes(env, work, stack)
        traffic = Traffic(server.port, args.rate, args.threads, args.duration)
        warm_up(traffic)
        traffic.start()
        try:
            chaos = [kill_and_restart(nodes, traffic, number, args) for number in range(args.kills)]
            traffic.join()
        finally:
            traffic.stop()
        drain = wait_for_drain(traffic, nodes, args.drain_timeout)
    return traffic, chaos, drain


def warm_up(traffic: Traffic) -> None:
    """Every web worker and both nodes have served before the clock starts."""
    sender = traffic.sender(-1)
    for i in range(WARM_IDS):
        sender.exchange([Delivery("warm", f"warm-{i}", valid=True)])
    wait_until(lambda: status_counts().get("succeeded", 0) >= WARM_IDS, timeout=60, interval=0.5)


# -- qcluster nodes and chaos ----------------------------------------------------------------


class Nodes:
    """The qcluster nodes, each stopped by ``stack``; a killed one is replaced by a new one."""

    def __init__(self, env: dict[str, str], work: Path, stack: contextlib.ExitStack) -> None:
        self.env, self.work, self.stack = env, work, stack
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
        rows = query(
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
    at_kill = status_counts()
    traffic.sleep_until(killed_at + args.down_seconds)
    nodes.restart(name)
    return {
        "node": name,
        "killed_at_s": round(killed_at, 1),
        "killed_epoch": killed_epoch,
        "restarted_at_s": round(traffic.clock(), 1),
        "killed_mid_run": mid_run,
        "running_after_kill": at_kill.get("running", 0),
        "pending_after_kill": at_kill.get("pending", 0),
    }


def all_finished() -> bool:
    """From one snapshot: one query per status could miss an event moving between them."""
    counts = status_counts()
    return not any(counts.get(status) for status in UNFINISHED)


def wait_for_drain(traffic: Traffic, nodes: Nodes, timeout: float) -> dict[str, Any]:
    """Seconds from the end of the traffic until no event is pending, running or failed."""
    started = time.perf_counter()
    finished = True
    try:
        wait_until(all_finished, timeout=timeout, interval=0.5)
    except TimeoutError:
        finished = False
    return {
        "finished": finished,
        "drain_s": round(time.perf_counter() - started, 1),
        "traffic_s": round(traffic.elapsed, 1),
        "statuses": status_counts(),
        "dead_nodes": nodes.dead(),
    }


# -- traffic ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    kind: str  # warm, new, duplicate, race (the concurrent twin of a new id), invalid
    webhook_id: str
    valid: bool


@dataclass(frozen=True)
class Answer:
    kind: str
    webhook_id: str
    status: int  # 0: connection error
    done_s: float  # on the traffic clock
    latency_ms: float


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
        for worker in self._workers:
            worker.join()
        self.elapsed = self.clock()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def running(self) -> bool:
        return not self._stop.is_set() and self.clock() < self.duration


class Sender:
    """One sender thread: its schedule, its own ids and two connections (a race uses both)."""

    def __init__(self, traffic: Traffic, number: int, rng: random.Random) -> None:
        self.traffic, self.number, self.rng = traffic, number, rng
        self.connections = [self._connect(), self._connect()]
        self.sequence = 0

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.traffic.port, timeout=30)

    def run(self) -> None:
        """Step k of thread i is due at (k * threads + i) / rate; late steps go at once."""
        traffic, step = self.traffic, 0
        while traffic.running():
            traffic.sleep_until((step * traffic.threads + self.number) / traffic.rate)
            if not traffic.running():
                break
            self.exchange(self.next_step())
            step += 1

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
                self.record(delivery, 0, started)
        for connection, delivery in sent:
            self.record(delivery, self.read(connection), started)

    @staticmethod
    def read(connection: http.client.HTTPConnection) -> int:
        try:
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            connection.close()
            return 0

    def record(self, delivery: Delivery, status: int, started: float) -> None:
        now = time.perf_counter()
        self.traffic.answers.append(
            Answer(
                kind=delivery.kind,
                webhook_id=delivery.webhook_id,
                status=status,
                done_s=self.traffic.clock(),
                latency_ms=(now - started) * 1000,
            )
        )


# -- verification ----------------------------------------------------------------------------


def verify(
    traffic: Traffic, chaos: list[dict[str, Any]], drain: dict[str, Any], work: Path
) -> dict[str, Any]:
    """Everything the database says after the drain, against every answer the senders got."""
    answers = traffic.answers
    accepted = {a.webhook_id for a in answers if a.status in VALID_STATUSES}
    events = {
        webhook_id: (source, status, attempts, lost)
        for webhook_id, source, status, attempts, lost in query(
            'SELECT webhook_id, source, status, attempts, history @> \'[{"outcome": "lost"}]\''
            " FROM webhooks_app_webhookevent"
        )
    }
    effects = grouped("SELECT webhook_id, count(*) FROM bench_soakeffect GROUP BY webhook_id")
    runs = grouped("SELECT webhook_id, count(*) FROM bench_soakrun GROUP BY webhook_id")
    accepted_202 = Counter(a.webhook_id for a in answers if a.status == 202)

    not_succeeded = sorted(
        i for i in accepted if events.get(i, ("", "missing"))[:2] != ("generic", "succeeded")
    )
    unexpected = [a for a in answers if a.status not in expected_statuses(a.kind)]
    server_errors = sum(1 for a in answers if a.status >= 500)
    connection_errors = sum(1 for a in answers if a.status == 0)
    checks = [
        check(
            "every accepted id: one event row, succeeded",
            not_succeeded,
            f"{len(accepted) - len(not_succeeded)}/{len(accepted)}",
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
            "no 5xx, connection error or unexpected status",
            sorted({f"{a.webhook_id}:{a.status}" for a in unexpected}),
            f"{len(answers)} answers, {server_errors} 5xx, {connection_errors} connection errors",
        ),
        check(
            "all events finished after the traffic",
            [] if drain["finished"] else [json.dumps(drain["statuses"])],
            f"in {drain['drain_s']} s",
        ),
        check("no node died unkilled", drain["dead_nodes"], "all nodes alive at the end"),
    ]
    return {
        "ok": all(c["ok"] for c in checks),
        "requests": request_summary(answers),
        "throughput": throughput(answers, traffic.elapsed),
        "chaos": chaos,
        "drain": drain,
        "processing": processing(events, runs, chaos, work),
        "killed_mid_run": killed_mid_run(chaos, events, runs, effects),
        "checks": checks,
    }


def expected_statuses(kind: str) -> set[int]:
    """A forged request is refused; a valid one is accepted (202) or a duplicate (200), and
    either may come first: a duplicate can overtake its id's first delivery."""
    return {401} if kind == "invalid" else VALID_STATUSES


def grouped(sql: str) -> dict[str, int]:
    return {webhook_id: count for webhook_id, count in query(sql)}


def check(name: str, offenders: list[str], detail: str) -> dict[str, Any]:
    """A verdict with how many ids broke it and the first few of them."""
    return {"name": name, "ok": not offenders, "failures": len(offenders),
            "examples": offenders[:5], "detail": detail}  # fmt: skip


def request_summary(answers: list[Answer]) -> dict[str, Any]:
    """Counts, statuses and answer times per kind of request, warm-up excluded."""
    kinds = ["new", "duplicate", "race", "invalid"]
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
    events: dict[str, tuple[str, str, int, bool]],
    runs: dict[str, int],
    chaos: list[dict[str, Any]],
    work: Path,
) -> dict[str, Any]:
    """What the kills cost: repeated runs, lost attempts, recovery passes, slow events."""
    rows = [
        (float(received), float(finished))
        for received, finished in query(
            "SELECT EXTRACT(EPOCH FROM received_at), EXTRACT(EPOCH FROM finished_at)"
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
    kills: list[float] = [kill["killed_epoch"] for kill in chaos]
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
    lines = [
        "",
        f"soak: PostgreSQL + Redis broker, gunicorn {config['web_workers']} workers, "
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
    for kill in report["chaos"]:
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
        "checks:",
    ]
    for c in report["checks"]:
        verdict = "PASS" if c["ok"] else f"FAIL ({c['failures']}, e.g. {c['examples']})"
        lines.append(f"  {verdict} {c['name']}: {c['detail']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
