"""Queue drain and receipt-to-finish latency: the app's no-op workflow against raw django-q2.

    python -m bench.drain [--leg sqlite|postgres|both] [--events 2000] [--runs 3]
                          [--rate 50] [--latency-seconds 10] [--smoke]

Per leg (fresh database, the leg's broker, one ``manage.py qcluster`` with the bench settings:
2 workers, as the demo configures it):

drain       N events are stored and enqueued through the app's ingest path *in process*
            (``webhooks_app.ingest.receive`` with signed generic deliveries: verification,
            parsing, the insert and the enqueue, without HTTP); then a qcluster is started and
            timed until all N events are ``succeeded``. The same for N raw
            ``async_task("bench.workflows.noop_task")`` calls (django-q2 defaults, so each
            success is saved as a Task row, which is how completion is counted). "wall" runs
            from the cluster's start (its start-up included) to the last completion; "busy"
            from the first completion to the last, from the rows (finished_at, Task.stopped). The two kinds
            alternate their order run by run; medians over the runs.
latency     gunicorn (2 workers) and a qcluster run together; signed deliveries are POSTed at a
            fixed --rate for --latency-seconds; receipt-to-finish is ``finished_at -
            received_at`` of each event row once all succeeded (p50/p99/max), beside the HTTP
            answer time seen by the sender.

Prints a table per leg and one JSON line. Exit status 0 unless something crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import (
    LEGS,
    Cluster,
    Gunicorn,
    Process,
    bench_lock,
    drop_database,
    envelope,
    fresh_database,
    leg_env,
    legs_of,
    median,
    percentile,
    post_signed,
    signature,
    terminate_on_sigterm,
    wait_until,
)

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from webhooks_app.models import WebhookEvent

DRAIN_TIMEOUT = 300  # seconds: a drain that takes longer is a finding, not a result


# -- the driver: one child process per leg (each leg has its own settings) --------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leg", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--events", type=int, default=2000, help="events per drain")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50, help="deliveries/s in the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument("--smoke", action="store_true", help="CI: 200 events, 1 run, SQLite")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one leg, print JSON
    args = parser.parse_args()
    if args.smoke:
        args.events, args.runs, args.rate, args.latency_seconds = 200, 1, 20, 3
        if "--leg" not in sys.argv:
            args.leg = "sqlite"
    terminate_on_sigterm()
    load_before = os.getloadavg()
    if args.child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver stops us with one SIGTERM
        print("RESULT " + json.dumps(run_leg(args)), flush=True)
        return 0

    report: dict[str, Any] = {}
    for leg in legs_of(args.leg):
        with bench_lock():
            result = measure(leg, args)
        report[leg] = result
        print(table(leg, result, args), flush=True)
    config = {"events": args.events, "runs": args.runs, "rate": args.rate,
              "latency_seconds": args.latency_seconds, "smoke": args.smoke,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps({"benchmark": "drain", "config": config, "results": report}), flush=True)
    return 0


def measure(leg: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-drain-"))
    env = leg_env(leg, work, queue=f"bench-drain-{uuid.uuid4().hex[:8]}")
    try:
        fresh_database(leg, env)
        command = [
            sys.executable, "-m", "bench.drain", "--child", leg, "--events", str(args.events),
            "--runs", str(args.runs), "--rate", str(args.rate),
            "--latency-seconds", str(args.latency_seconds),
        ]  # fmt: skip
        pipe = subprocess.PIPE
        with subprocess.Popen(
            command, env=env, cwd=work, stdout=pipe, stderr=pipe, text=True
        ) as child:
            try:
                stdout, stderr = child.communicate(timeout=args.runs * 2 * DRAIN_TIMEOUT + 300)
            except BaseException:
                # Ctrl-C, SIGTERM, timeout: the child turns SIGTERM into SystemExit and stops the
                # gunicorn and qcluster it started (they run in sessions of their own).
                child.terminate()
                try:
                    child.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                raise
        for line in stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
                return result
        raise RuntimeError(
            f"the {leg} leg failed (exit {child.returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_database(leg)


def table(leg: str, result: dict[str, Any], args: argparse.Namespace) -> str:
    raw, app = result["raw"], result["app"]
    lat = result["latency"]
    lines = [
        "",
        f"drain: {LEGS[leg]}, qcluster {result['cluster_workers']} workers, "
        f"{args.events} no-op events x {args.runs} run(s) (medians)",
        f"{'path':<28}{'wall s':>8}{'events/s':>10}{'busy ev/s':>11}{'x raw':>7}{'enqueue/s':>11}",
    ]
    for name, r in [("raw async_task no-op", raw), ("app noop workflow", app)]:
        lines.append(
            f"{name:<28}{r['wall_s']:>8.2f}{r['events_per_s']:>10.0f}{r['busy_events_per_s']:>11.0f}"
            f"{r['events_per_s'] / raw['events_per_s']:>7.2f}{r['enqueue_per_s']:>11.0f}"
        )
    lines.append(
        f"receipt-to-finish at {lat['achieved_rate']:.0f}/s for {args.latency_seconds:g} s "
        f"({lat['events']} events, gunicorn 2 workers + qcluster): p50 {lat['p50_ms']:.0f} ms, "
        f"p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms; HTTP answer p50 "
        f"{lat['http_p50_ms']:.1f} ms, p99 {lat['http_p99_ms']:.1f} ms; statuses {lat['statuses']}"
    )
    return "\n".join(lines)


# -- one leg, inside Django ------------------------------------------------------------------


def run_leg(args: argparse.Namespace) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings

    work = Path.cwd()
    env = dict(os.environ)
    app_runs: list[dict[str, Any]] = []
    raw_runs: list[dict[str, Any]] = []
    for run in range(args.runs):
        order = [("app", app_runs), ("raw", raw_runs)]
        for kind, runs in order if run % 2 == 0 else reversed(order):
            drain = drain_app if kind == "app" else drain_raw
            runs.append(drain(f"r{run}", args.events, env, work / f"qcluster-{kind}-{run}.log"))
    return {
        "cluster_workers": settings.Q_CLUSTER["workers"],
        "app": summarise(app_runs),
        "raw": summarise(raw_runs),
        "latency": latency(args.rate, args.latency_seconds, env, work),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["wall_s", "events_per_s", "busy_events_per_s", "enqueue_per_s"]
    return {
        **{key: median([r[key] for r in runs]) for key in keys},
        "events_per_s_per_run": [round(r["events_per_s"], 1) for r in runs],
    }


def drain_app(tag: str, events: int, env: dict[str, str], log: Path) -> dict[str, Any]:
    from django.db.models import Max, Min

    from webhooks_app import ingest
    from webhooks_app.models import EventStatus, WebhookEvent
    from webhooks_app.schemes import InboundRequest

    prefix = f"drain-{tag}-"
    config, scheme = ingest.get_source("generic")
    started = time.perf_counter()
    for i in range(events):
        body = envelope(f"{prefix}{i}")
        headers = {"content-type": "application/json", "x-webhook-signature": signature(body)}
        outcome = ingest.receive(config, scheme, InboundRequest(body=body, headers=headers))
        if outcome.status_code != 202:
            raise RuntimeError(f"ingest answered {outcome.status_code}: {outcome.body}")
    enqueue_s = time.perf_counter() - started
    ours = WebhookEvent.objects.filter(webhook_id__startswith=prefix)
    wall = timed_drain(
        lambda: ours.filter(status=EventStatus.SUCCEEDED).count() >= events, env, log
    )
    not_ok = ours.exclude(status=EventStatus.SUCCEEDED).count()
    if not_ok:
        raise RuntimeError(f"{not_ok} events did not succeed")
    span = ours.aggregate(first=Min("finished_at"), last=Max("finished_at"))
    return result(events, enqueue_s, wall, (span["last"] - span["first"]).total_seconds())


def drain_raw(tag: str, events: int, env: dict[str, str], log: Path) -> dict[str, Any]:
    from django.db.models import Max, Min
    from django_q.models import Task
    from django_q.tasks import async_task

    from webhooks_app import queue

    group = f"raw-{tag}"
    broker = queue.broker()  # one connection, as the app uses; async_task's defaults otherwise
    started = time.perf_counter()
    for i in range(events):
        async_task("bench.workflows.noop_task", i, group=group, broker=broker)
    enqueue_s = time.perf_counter() - started
    ours = Task.objects.filter(group=group)
    wall = timed_drain(lambda: ours.filter(success=True).count() >= events, env, log)
    span = ours.aggregate(first=Min("stopped"), last=Max("stopped"))  # "started": enqueued
    return result(events, enqueue_s, wall, (span["last"] - span["first"]).total_seconds())


def result(events: int, enqueue_s: float, wall_s: float, busy_s: float) -> dict[str, Any]:
    return {
        "wall_s": wall_s,
        "events_per_s": events / wall_s,
        "busy_events_per_s": (events - 1) / max(busy_s, 1e-6),
        "enqueue_per_s": events / enqueue_s,
    }


def timed_drain(done: Callable[[], bool], env: dict[str, str], log: Path) -> float:
    """Seconds from starting a qcluster until ``done()``; the cluster is stopped afterwards."""
    from django.db import connection

    started = time.perf_counter()
    with Cluster(env, log) as cluster:
        wait_until(lambda: running(cluster) and done(), timeout=DRAIN_TIMEOUT, interval=0.05)
        elapsed = time.perf_counter() - started
    connection.close()  # no transaction or snapshot held between phases
    return elapsed


def running(process: Process) -> bool:
    if not process.alive():
        raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
    return True


def count_succeeded(events: QuerySet[WebhookEvent]) -> int:
    from webhooks_app.models import EventStatus

    return events.filter(status=EventStatus.SUCCEEDED).count()


def latency(rate: float, seconds: float, env: dict[str, str], work: Path) -> dict[str, Any]:
    """POST at a fixed rate with gunicorn and a qcluster running; receipt-to-finish per event."""
    from webhooks_app.models import WebhookEvent

    prefix = f"latency-{uuid.uuid4().hex[:6]}-"
    total = max(1, int(rate * seconds))
    statuses: dict[str, int] = {}
    answers: list[float] = []
    with (
        Gunicorn(env, 2, work / "gunicorn-latency.log") as server,
        Cluster(env, work / "qcluster-latency.log") as cluster,
    ):
        # Warm every gunicorn worker; ready when those deliveries have gone all the way through.
        warm = WebhookEvent.objects.filter(webhook_id__startswith=f"{prefix}warm-")
        for i in range(20):
            post_signed(server.base, f"{prefix}warm-{i}")
        wait_until(lambda: running(cluster) and count_succeeded(warm) >= 20, timeout=60)
        started = time.perf_counter()
        for i in range(total):
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            status = post_signed(server.base, f"{prefix}n-{i}")
            answers.append((time.perf_counter() - sent) * 1000)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        sending = time.perf_counter() - started
        accepted = statuses.get("202", 0)
        ours = WebhookEvent.objects.filter(webhook_id__startswith=f"{prefix}n-")
        wait_until(
            lambda: running(cluster) and count_succeeded(ours) >= accepted, timeout=DRAIN_TIMEOUT
        )
    rows = list(ours.values_list("received_at", "finished_at"))
    delays = [(end - start).total_seconds() * 1000 for start, end in rows if end is not None]
    return {
        "events": len(rows),
        "achieved_rate": total / sending,
        "p50_ms": percentile(delays, 50),
        "p99_ms": percentile(delays, 99),
        "max_ms": max(delays),
        "http_p50_ms": percentile(answers, 50),
        "http_p99_ms": percentile(answers, 99),
        "statuses": statuses,
    }


if __name__ == "__main__":
    sys.exit(main())
