"""Queue drain and receipt-to-finish latency: the app's no-op workflow against raw django-q2.

    python -m bench.drain [--leg sqlite|postgres|both] [--variant plain|steered|both]
                          [--events 2000] [--runs 3] [--rate 50] [--latency-seconds 10] [--smoke]

Per leg (fresh database, the leg's broker, one ``manage.py qcluster`` with the bench settings:
2 workers, as the demo configures it):

drain       A backlog of N events is stored and enqueued through the app's ingest path *in
            process* (``webhooks_app.ingest.receive`` with signed generic deliveries:
            verification, parsing, the insert and the enqueue, without HTTP); then a qcluster is
            started and timed until all N events are ``succeeded``. The floor: a backlog of N raw
            ``async_task("bench.workflows.raw_noop")`` calls with the product's task options
            (``save=False``, ``ack_failure=True``) and its one broker connection, each task a
            no-op that records its completion in one autocommit INSERT (``RawCompletion``: how
            completion is counted). "plain": every event unkeyed on ``noop``; "steered" (issue
            #11): half of them keyed (50 keys, the envelope's ``order_key``) and a quarter on
            ``noop_limited`` (CONCURRENCY 1). "wall" runs from the cluster's start (its start-up
            included) to the last completion; "busy" from the first completion to the last,
            from the rows (finished_at, RawCompletion.done_at). The kinds alternate their order
            run by run; "x raw" is the median over the runs of each run's events/s over the
            floor's in the same run.
latency     gunicorn (2 workers) and a qcluster run together; signed deliveries are POSTed at a
            fixed --rate for --latency-seconds; receipt-to-finish is ``finished_at -
            received_at`` of each event row once all succeeded (p50/p99/max), beside the HTTP
            answer time seen by the sender.

Prints a table per leg and one JSON line. Exit status 0 unless something crashed (a drain in
which an event did not succeed, or used more than one attempt, is a crash).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
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
from bench.soak import RECOVERED

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from webhooks_app.models import WebhookEvent

DRAIN_TIMEOUT = 300  # seconds: a drain that takes longer is a finding, not a result
#: Which drains each --variant runs, in their order on even runs (reversed on odd ones).
KINDS = {"plain": ["app", "raw"], "steered": ["raw", "steered"], "both": ["app", "raw", "steered"]}
LABELS = {
    "raw": "raw django-q2 no-op+INSERT",
    "app": "app noop workflow",
    "steered": "app steered (keys, limit)",
}
#: Drain over the raw floor, median of the runs (issues #17 and #11).
TARGETS = {"app": 0.85, "steered": 0.8}
#: The steered mix: half the events keyed over 50 keys (about 20 events per key, so a key is
#: rarely in flight twice but sometimes is), a quarter on the limited workflow, drawn
#: independently with a fixed seed: every run drains the same mix.
STEERED_KEYS = 50
STEERED_KEYED_SHARE = 0.5
STEERED_LIMITED_SHARE = 0.25
STEERED_SEED = 11
LIMITED_WORKFLOW = "noop_limited"


# -- the driver: one child process per leg (each leg has its own settings) --------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leg", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--variant", choices=list(KINDS), default="both")
    parser.add_argument("--events", type=int, default=2000, help="events per drain")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=50, help="deliveries/s in the latency phase")
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument(
        "--smoke", action="store_true", help="CI: 200 events, 1 run, SQLite, both variants"
    )
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
    config = {"events": args.events, "runs": args.runs, "variant": args.variant, "rate": args.rate,
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
            "--runs", str(args.runs), "--variant", args.variant, "--rate", str(args.rate),
            "--latency-seconds", str(args.latency_seconds),
        ]  # fmt: skip
        drains = args.runs * len(KINDS[args.variant])
        pipe = subprocess.PIPE
        with subprocess.Popen(
            command, env=env, cwd=work, stdout=pipe, stderr=pipe, text=True
        ) as child:
            try:
                stdout, stderr = child.communicate(timeout=drains * DRAIN_TIMEOUT + 300)
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
    lat = result["latency"]
    lines = [
        "",
        f"drain: {LEGS[leg]}, qcluster {result['cluster_workers']} workers, "
        f"{args.events} no-op events x {args.runs} run(s) (medians)",
        f"{'path':<28}{'wall s':>8}{'events/s':>10}{'busy ev/s':>11}{'x raw':>7}{'enqueue/s':>11}"
        "  x raw per run",
    ]
    for kind in ("raw", "app", "steered"):
        if kind in result:
            r = result[kind]
            per_run = " ".join(f"{ratio:.2f}" for ratio in r.get("x_raw_per_run", []))
            lines.append(
                f"{LABELS[kind]:<28}{r['wall_s']:>8.2f}{r['events_per_s']:>10.0f}"
                f"{r['busy_events_per_s']:>11.0f}{r.get('x_raw', 1.0):>7.2f}"
                f"{r['enqueue_per_s']:>11.0f}  {per_run}".rstrip()
            )
    if "steered" in result:
        mix, held = result["steered"]["mix"], result["steered"]["most_held_per_run"]
        lines.append(
            f"steered: {mix['keyed']} of {args.events} events keyed ({mix['keys']} keys), "
            f"{mix['limited']} on {LIMITED_WORKFLOW} (CONCURRENCY {mix['concurrency']}); most "
            f"waiting at once (sampled every 50 ms), per run: behind their key "
            f"{' '.join(str(h['key']) for h in held)}, for the limit "
            f"{' '.join(str(h['concurrency']) for h in held)}"
        )
    for kind, goal in TARGETS.items():
        if kind in result:
            ratio = result[kind]["x_raw"]
            lines.append(
                f"  target {LABELS[kind]} vs raw {ratio:.2f} (goal >= {goal}) "
                + ("met" if ratio >= goal else "MISSED")
            )
    for kind in TARGETS:
        if kind in result and any(result[kind]["recovered_per_run"]):
            lines.append(
                f"FINDING: {LABELS[kind]}: the periodic recovery had to put back "
                f"{' '.join(map(str, result[kind]['recovered_per_run']))} event(s) per run "
                "(lost enqueues or wakes; each waited the recovery grace)"
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

    from webhooks_app import registry

    work = Path.cwd()
    env = dict(os.environ)
    kinds = KINDS[args.variant]
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for run in range(args.runs):
        for kind in kinds if run % 2 == 0 else reversed(kinds):
            tag, log = f"{kind}-r{run}", work / f"qcluster-{kind}-{run}.log"
            if kind == "raw":
                runs[kind].append(drain_raw(tag, args.events, env, log))
            else:
                events = plan(args.events, steered=kind == "steered")
                runs[kind].append(drain_app(tag, events, env, log))
    report: dict[str, Any] = {"cluster_workers": settings.Q_CLUSTER["workers"]}
    report["raw"] = summarise(runs["raw"])
    for kind in kinds:
        if kind != "raw":
            report[kind] = summarise(runs[kind], floor=runs["raw"])
    if "steered" in runs:
        steered = plan(args.events, steered=True)
        report["steered"]["mix"] = {
            "keyed": sum(key is not None for _, key in steered),
            "keys": STEERED_KEYS,
            "limited": sum(name == LIMITED_WORKFLOW for name, _ in steered),
            "concurrency": registry.limits(LIMITED_WORKFLOW).concurrency,
        }
    report["latency"] = latency(args.rate, args.latency_seconds, env, work)
    return report


def plan(events: int, *, steered: bool) -> list[tuple[str, str | None]]:
    """Workflow and ordering key of each event: all ``noop`` and unkeyed, or the steered mix."""
    if not steered:
        return [("noop", None)] * events
    rng = random.Random(STEERED_SEED)
    mix = []
    for _ in range(events):
        name = LIMITED_WORKFLOW if rng.random() < STEERED_LIMITED_SHARE else "noop"
        keyed = rng.random() < STEERED_KEYED_SHARE
        mix.append((name, f"customer-{rng.randrange(STEERED_KEYS)}" if keyed else None))
    return mix


def summarise(
    runs: list[dict[str, Any]], floor: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Medians over the runs; against ``floor`` (the raw runs, one per run, in the same order)
    each run's ratio to the floor's run beside it, and their median."""
    keys = ["wall_s", "events_per_s", "busy_events_per_s", "enqueue_per_s"]
    summary = {
        **{key: median([r[key] for r in runs]) for key in keys},
        "events_per_s_per_run": [round(r["events_per_s"], 1) for r in runs],
    }
    if floor is not None:
        ratios = [r["events_per_s"] / f["events_per_s"] for r, f in zip(runs, floor, strict=True)]
        summary["x_raw"] = median(ratios)
        summary["x_raw_per_run"] = [round(ratio, 3) for ratio in ratios]
        summary["most_held_per_run"] = [r["held"] for r in runs]
        summary["recovered_per_run"] = [r["recovered"] for r in runs]
    return summary


def drain_app(
    tag: str, events: list[tuple[str, str | None]], env: dict[str, str], log: Path
) -> dict[str, Any]:
    """Store and enqueue one event per ``(workflow, order_key)`` of ``events``, then drain them."""
    from django.db.models import Max, Min, Sum

    from webhooks_app import ingest
    from webhooks_app.models import EventStatus, WebhookEvent
    from webhooks_app.schemes import InboundRequest

    prefix = f"drain-{tag}-"
    config, scheme = ingest.get_source("generic")
    started = time.perf_counter()
    for i, (workflow, key) in enumerate(events):
        body = envelope(f"{prefix}{i}", workflow, order_key=key)
        headers = {"content-type": "application/json", "x-webhook-signature": signature(body)}
        outcome = ingest.receive(config, scheme, InboundRequest(body=body, headers=headers))
        if outcome.status_code != 202:
            raise RuntimeError(f"ingest answered {outcome.status_code}: {outcome.body}")
    enqueue_s = time.perf_counter() - started
    ours = WebhookEvent.objects.filter(webhook_id__startswith=prefix)
    held = {"key": 0, "concurrency": 0}
    wall = timed_drain(all_succeeded(ours, len(events), held), env, log)
    not_ok = ours.exclude(status=EventStatus.SUCCEEDED).count()
    if not_ok:
        raise RuntimeError(f"{not_ok} events did not succeed")
    span = ours.aggregate(
        first=Min("finished_at"), last=Max("finished_at"), attempts=Sum("attempts")
    )
    if span["attempts"] != len(events):
        # A refused claim (key held, limit reached) must use no attempt; a no-op never fails.
        raise RuntimeError(f"{len(events)} events used {span['attempts']} attempts")
    busy = (span["last"] - span["first"]).total_seconds()
    return {**result(len(events), enqueue_s, wall, busy), "held": held, "recovered": recovered(log)}


def recovered(log: Path) -> int:
    """How many events the periodic recovery put back on the queue during a drain (from the
    cluster's log). A drain should need none: each one is an enqueue or a wake that was lost,
    and it waited ``RECOVERY_GRACE`` (60 s) or more for its turn."""
    found = RECOVERED.finditer(log.read_text(errors="replace"))
    return sum(sum(ast.literal_eval(match.group(1)).values()) for match in found)


def all_succeeded(
    events: QuerySet[WebhookEvent], count: int, held: dict[str, int]
) -> Callable[[], bool]:
    """Whether all ``count`` events succeeded; in the same query, keeps in ``held`` the most
    events seen waiting at once behind their key and for a concurrency slot (a sample: most
    waits last a few milliseconds)."""
    from django.db.models import Count, Q

    from webhooks_app.models import EventStatus

    def done() -> bool:
        seen = events.aggregate(
            succeeded=Count("pk", filter=Q(status=EventStatus.SUCCEEDED)),
            **{reason: Count("pk", filter=Q(waiting_for=reason)) for reason in held},
        )
        for reason in held:
            held[reason] = max(held[reason], seen[reason])
        return bool(seen["succeeded"] >= count)

    return done


def drain_raw(tag: str, events: int, env: dict[str, str], log: Path) -> dict[str, Any]:
    from django.db.models import Max, Min
    from django_q.tasks import async_task

    from bench.models import RawCompletion
    from webhooks_app import queue

    broker = queue.broker()  # the product's one connection and task options, as it enqueues
    started = time.perf_counter()
    for _ in range(events):
        async_task(
            "bench.workflows.raw_noop", tag, broker=broker, q_options=dict(queue.TASK_OPTIONS)
        )
    enqueue_s = time.perf_counter() - started
    ours = RawCompletion.objects.filter(tag=tag)
    wall = timed_drain(lambda: ours.count() >= events, env, log)
    span = ours.aggregate(first=Min("done_at"), last=Max("done_at"))
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
