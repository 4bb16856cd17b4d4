"""Ingest throughput and latency: the app against two floors, same gunicorn, same sitting.

    python -m bench.ingest [--leg sqlite|postgres|both] [--workers 2 4] [--duration 5]
                           [--runs 3] [--connections 16] [--smoke] [--fail-on-5xx]
                           [--variant plain|sources]

Scenarios (wrk with bench/wrk.lua, every request pre-generated and signed; POST bodies of the
same size everywhere):
  floor-bare     a plain Django view returning a small JSON body: the framework's ceiling
  floor-naive    the hand-written receiver (DRF, HMAC, get_or_create, async_task on commit);
                 every delivery new
  naive-pooled   informational: floor-naive passing one broker per process to async_task
                 (without it django-q2 builds a broker, with Redis a connection, per call)
  app-new        POST /webhooks/generic/, every delivery correctly signed and new
  app-duplicate  correctly signed redeliveries of 500 stored events
  app-invalid    wrong signature (refused with 401 before any database work)
  app-mix        70 % new, 20 % duplicate, 10 % invalid signature

``--variant sources`` (issue #15) measures instead what a database source costs: 200
``WebhookSource`` rows (``tenant-0`` … ``tenant-199``, the generic scheme, the bench secret)
beside the settings source ``generic``, and the same requests to each:
  app-new / db-new              new deliveries to generic / to tenant-100
  app-duplicate / db-duplicate  redeliveries of 500 events stored on each
  app-invalid / db-invalid      wrong signature
Its ratios are per-delivery costs: the settings source's req/s over the database source's in
the same run (goal <= 1.1); odd runs measure each pair database first.

Each run measures all of them back to back (so drift hits them alike); ratios are taken within a run
and the medians over the runs are reported. No qcluster runs: this is durable acceptance, and the
queue is emptied before every scenario. Prints a table per leg and worker count, then one JSON
line. Exit status 0 unless something crashed (or, with --fail-on-5xx, the app answered a 5xx).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    LEGS,
    REPO,
    Gunicorn,
    bench_lock,
    clear_queue,
    drop_database,
    envelope,
    fresh_database,
    leg_env,
    legs_of,
    median,
    post,
    post_signed,
    signature,
    terminate_on_sigterm,
)

WRK_SCRIPT = Path(__file__).with_name("wrk.lua")
THREADS = 2
GENERIC = "/webhooks/generic/"
#: Stored before the runs; the duplicate scenarios redeliver these.
WARM_IDS = 500
#: Pre-generated requests per scenario: enough for this many requests/s (at least), and for
#: twice the floor-bare rate of the same run.
MIN_CAPACITY = 3000


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    pattern: tuple[str, ...]  # cycled per request: "new", "dup" (a stored id), "bad" (signature)
    expected: frozenset[int]  # every other status is counted as unexpected


MIX = ("new",) * 7 + ("dup",) * 2 + ("bad",)
SCENARIOS = [
    Scenario("floor-bare", "/floor/bare/", ("bare",), frozenset({200})),
    Scenario("floor-naive", "/floor/naive/", ("new",), frozenset({202})),
    # Informational: floor-naive with one django-q2 broker per process instead of one per call.
    Scenario("naive-pooled", "/floor/naive-pooled/", ("new",), frozenset({202})),
    Scenario("app-new", GENERIC, ("new",), frozenset({202})),
    Scenario("app-duplicate", GENERIC, ("dup",), frozenset({200})),
    Scenario("app-invalid", GENERIC, ("bad",), frozenset({401})),
    Scenario("app-mix", GENERIC, MIX, frozenset({200, 202, 401})),
]
TARGETS = [
    # (name, scenario, floor, goal)
    ("new signed deliveries vs floor-naive", "app-new", "floor-naive", 1.2),
    ("duplicates vs floor-bare", "app-duplicate", "floor-bare", 0.5),
    ("invalid signatures vs floor-bare", "app-invalid", "floor-bare", 0.8),
]
#: ``--variant sources``: database sources beside the settings source, one of them delivered to.
DB_SOURCES = 200
DB_SOURCE = "/webhooks/tenant-100/"
SOURCE_SCENARIOS = [
    Scenario("app-new", GENERIC, ("new",), frozenset({202})),
    Scenario("db-new", DB_SOURCE, ("new",), frozenset({202})),
    Scenario("app-duplicate", GENERIC, ("dup",), frozenset({200})),
    Scenario("db-duplicate", DB_SOURCE, ("dup",), frozenset({200})),
    Scenario("app-invalid", GENERIC, ("bad",), frozenset({401})),
    Scenario("db-invalid", DB_SOURCE, ("bad",), frozenset({401})),
]
#: (name, settings scenario, database scenario, most the database one may cost per delivery)
SOURCE_TARGETS = [
    ("new deliveries, database vs settings", "app-new", "db-new", 1.1),
    ("duplicates, database vs settings", "app-duplicate", "db-duplicate", 1.1),
    ("invalid signatures, database vs settings", "app-invalid", "db-invalid", 1.1),
]
SEED_SOURCES = f"""
from bench.common import SECRET
from webhooks_app.models import WebhookSource
for i in range({DB_SOURCES}):
    WebhookSource.objects.create(name=f"tenant-{{i}}", scheme="generic").add_secret(SECRET)
"""


# -- request files ---------------------------------------------------------------------------


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_row(path: str, body: bytes, signature_header: str) -> str:
    headers = (
        '{["Content-Type"]="application/json", '
        f'["X-Webhook-Signature"]={lua_string(signature_header)}}}'
    )
    return f"{{{lua_string(path)}, {headers}, {lua_string(body.decode())}}}"


def write_requests(prefix: Path, scenario: Scenario, tag: str, total: int) -> None:
    """``prefix-<thread>.lua`` per wrk thread; a "new" id never repeats anywhere in a sitting."""
    per_thread = max(1, math.ceil(total / THREADS))
    if "new" not in scenario.pattern:
        per_thread = min(per_thread, 1000)  # refused or duplicate: cycling changes nothing
    for thread in range(1, THREADS + 1):
        rows = []
        for i in range(per_thread):
            kind = scenario.pattern[i % len(scenario.pattern)]
            if kind == "dup":
                # Thread t redelivers warm ids t, t+THREADS, ...: spread over all 500.
                webhook_id = f"warm-{(i * THREADS + thread - 1) % WARM_IDS}"
            else:
                webhook_id = f"{tag}-{scenario.name}-t{thread}-{i}"
            body = envelope(webhook_id)
            rows.append(lua_row(scenario.path, body, signature(body, valid=kind != "bad")))
        Path(f"{prefix}-{thread}.lua").write_text("return {\n" + ",\n".join(rows) + "\n}\n")


# -- measuring -------------------------------------------------------------------------------


def warm_up(base: str, paths: tuple[str, ...] = (GENERIC,)) -> None:
    """Store the ids the duplicate scenarios redeliver (on each source of ``paths``); touch
    every path in every worker."""
    for path in paths:
        for i in range(WARM_IDS):
            status = post_signed(base, f"warm-{i}", path=path)
            if status != 202:
                raise RuntimeError(f"warm-up delivery to {path} answered {status}, not 202")
    for i in range(100):
        for path in ("/floor/naive/", "/floor/naive-pooled/"):
            post_signed(base, f"warm-naive-{uuid.uuid4().hex}-{i}", path=path)
        body = envelope(f"warm-bad-{i}")
        post(base, GENERIC, body, {"Content-Type": "application/json",
                                   "X-Webhook-Signature": signature(body, valid=False)})  # fmt: skip


def run_wrk(base: str, prefix: Path, duration: int, connections: int) -> dict[str, Any]:
    completed = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
         "-s", str(WRK_SCRIPT), base, "--", str(prefix)],
        capture_output=True, text=True, check=True, timeout=duration + 120,
    )  # fmt: skip
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            result["rps"] = result["requests"] / result["seconds"]
            result["statuses"] = {int(k): v for k, v in result["statuses"].items()}
            return result
    raise RuntimeError(f"wrk printed no RESULT line:\n{completed.stdout}\n{completed.stderr}")


def measure(
    leg: str, workers: int, duration: int, runs: int, connections: int, variant: str = "plain"
) -> dict[str, Any]:
    """One leg and worker count: fresh database, one gunicorn, ``runs`` rounds of every scenario."""
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-ingest-"))
    env = leg_env(leg, work, queue=f"bench-ingest-{uuid.uuid4().hex[:8]}")
    sitting = uuid.uuid4().hex[:6]
    per_run: list[dict[str, dict[str, Any]]] = []
    scenarios = SOURCE_SCENARIOS if variant == "sources" else SCENARIOS
    try:
        fresh_database(leg, env)
        if variant == "sources":
            subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", SEED_SOURCES],
                cwd=REPO, env=env, check=True,
            )  # fmt: skip
        with Gunicorn(env, workers, work / "gunicorn.log") as server:
            warm_up(server.base, (GENERIC, DB_SOURCE) if variant == "sources" else (GENERIC,))
            for run in range(runs):
                results: dict[str, dict[str, Any]] = {}
                for scenario in in_order(scenarios, run, variant):
                    bare = results.get("floor-bare", results.get("app-new", {})).get("rps", 0.0)
                    total = int(max(MIN_CAPACITY, 2 * bare) * duration)
                    prefix = work / f"r{run}-{scenario.name}"
                    write_requests(prefix, scenario, f"{sitting}-r{run}", total)
                    clear_queue(leg, env)
                    result = run_wrk(server.base, prefix, duration, connections)
                    if not server.alive():
                        raise RuntimeError(f"gunicorn died:\n{server.tail()}")
                    results[scenario.name] = check(scenario, result)
                per_run.append(results)
            clear_queue(leg, env)
        if variant == "sources":
            return summarise_sources(per_run)
        return summarise(per_run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_database(leg)


def in_order(scenarios: list[Scenario], run: int, variant: str) -> list[Scenario]:
    """The scenarios of a run: ``--variant sources`` swaps each pair (settings, database) on odd
    runs, so that neither source always goes first."""
    if variant != "sources" or run % 2 == 0:
        return scenarios
    return [s for pair in zip(scenarios[1::2], scenarios[0::2], strict=True) for s in pair]


def check(scenario: Scenario, result: dict[str, Any]) -> dict[str, Any]:
    statuses: dict[int, int] = result["statuses"]
    result["non_2xx"] = sum(n for status, n in statuses.items() if not 200 <= status < 300)
    result["server_errors"] = sum(n for status, n in statuses.items() if status >= 500)
    result["unexpected"] = sum(n for s, n in statuses.items() if s not in scenario.expected)
    if "new" not in scenario.pattern:
        result["wrapped"] = 0  # cycling through refused or duplicate requests is harmless
    return result


def ratios(name: str, floor: str, per_run: list[dict[str, dict[str, Any]]]) -> list[float]:
    return [run[name]["rps"] / run[floor]["rps"] for run in per_run]


def summarise(per_run: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Medians over the runs; ratios are per run (floors of the same run), then their median."""
    scenarios = scenario_medians(per_run, SCENARIOS)
    for name, row in scenarios.items():
        row["x_bare"] = median(ratios(name, "floor-bare", per_run))
        row["x_naive"] = median(ratios(name, "floor-naive", per_run))
    targets = []
    for name, scenario_name, floor, goal in TARGETS:
        ratio = scenarios[scenario_name]["x_bare" if floor == "floor-bare" else "x_naive"]
        targets.append({"target": name, "ratio": ratio, "goal": goal, "met": ratio >= goal})
    return {"scenarios": scenarios, "targets": targets}


def summarise_sources(per_run: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """``--variant sources``: per pair, the settings source's req/s over the database source's
    in each run (its per-delivery cost relative to the settings one), median over the runs."""
    scenarios = scenario_medians(per_run, SOURCE_SCENARIOS)
    targets = []
    for name, settings_source, database_source, goal in SOURCE_TARGETS:
        costs = ratios(settings_source, database_source, per_run)
        targets.append({"target": name, "ratio": median(costs), "goal": goal,
                        "met": median(costs) <= goal, "per_run": [round(c, 3) for c in costs]})  # fmt: skip
    return {"scenarios": scenarios, "targets": targets}


def scenario_medians(
    per_run: list[dict[str, dict[str, Any]]], measured: list[Scenario]
) -> dict[str, dict[str, Any]]:
    scenarios: dict[str, dict[str, Any]] = {}
    for scenario in measured:
        rows = [run[scenario.name] for run in per_run]
        statuses: Counter[int] = Counter()
        for row in rows:
            statuses.update(row["statuses"])
        scenarios[scenario.name] = {
            "rps": median([r["rps"] for r in rows]),
            "p50_ms": median([r["p50_ms"] for r in rows]),
            "p99_ms": median([r["p99_ms"] for r in rows]),
            "rps_per_run": [round(r["rps"], 1) for r in rows],
            "requests": sum(r["requests"] for r in rows),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            **{
                key: sum(r[key] for r in rows)
                for key in ("non_2xx", "server_errors", "unexpected", "socket_errors", "wrapped")
            },
        }
    return scenarios


# -- reporting -------------------------------------------------------------------------------


def table(title: str, summary: dict[str, Any]) -> str:
    lines = [
        "",
        title,
        f"{'scenario':<14}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'x bare':>8}{'x naive':>8}"
        f"{'non-2xx':>9}{'5xx':>6}{'unexpected':>11}{'sock err':>9}",
    ]
    for name, r in summary["scenarios"].items():
        x_bare, x_naive = (
            f"{r[k]:>8.2f}" if k in r else f"{'-':>8}" for k in ("x_bare", "x_naive")
        )
        lines.append(
            f"{name:<14}{r['rps']:>8.0f}{r['p50_ms']:>8.1f}{r['p99_ms']:>8.1f}{x_bare}"
            f"{x_naive}{r['non_2xx']:>9}{r['server_errors']:>6}{r['unexpected']:>11}"
            f"{r['socket_errors']:>9}" + (f"  (wrapped {r['wrapped']}x)" if r["wrapped"] else "")
        )
    for t in summary["targets"]:
        verdict = "met" if t["met"] else "MISSED"
        goal = f"<= {t['goal']}" if "per_run" in t else f">= {t['goal']}"
        per_run = f" per run {t['per_run']}" if "per_run" in t else ""
        lines.append(
            f"  target {t['target']:<40} {t['ratio']:>5.2f} (goal {goal}) {verdict}{per_run}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leg", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--fail-on-5xx", action="store_true", help="exit 1 if the app answered 5xx")
    parser.add_argument(
        "--variant", choices=["plain", "sources"], default="plain",
        help=f"sources: {DB_SOURCES} database sources against a settings source (issue #15)",
    )  # fmt: skip
    parser.add_argument(
        "--smoke", action="store_true", help="CI: 1 run of 1 s per scenario, 2 workers, SQLite"
    )
    args = parser.parse_args()
    if args.smoke:
        args.workers, args.duration, args.runs = [2], 1, 1
        if "--leg" not in sys.argv:
            args.leg = "sqlite"
    terminate_on_sigterm()
    load_before = os.getloadavg()

    report: dict[str, Any] = {}
    for leg in legs_of(args.leg):
        for workers in args.workers:
            with bench_lock():
                summary = measure(
                    leg, workers, args.duration, args.runs, args.connections, args.variant
                )
            report[f"{leg}-{workers}"] = {"leg": leg, "workers": workers, **summary}
            title = (
                f"ingest: {LEGS[leg]}, gunicorn {workers} sync workers; wrk {THREADS} threads x "
                f"{args.connections} connections, {args.duration} s x {args.runs} run(s) (medians)"
            )
            print(table(title, summary), flush=True)
    server_errors = {
        f"{key} {name}": r["server_errors"]
        for key, leg_report in report.items()
        for name, r in leg_report["scenarios"].items()
        if r["server_errors"]
    }
    for where, count in server_errors.items():
        print(f"FINDING: {count} responses 5xx in {where}", file=sys.stderr)
    config = {"duration_s": args.duration, "runs": args.runs, "threads": THREADS,
              "connections": args.connections, "smoke": args.smoke, "variant": args.variant,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps({"benchmark": "ingest", "config": config, "results": report}), flush=True)
    return 1 if server_errors and args.fail_on_5xx else 0


if __name__ == "__main__":
    sys.exit(main())
