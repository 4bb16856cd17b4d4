"""Ingest throughput: the app against the floors, same gunicorn, same sitting.

    python -m bench.ingest [--leg sqlite|postgres|both] [--workers 2 4] [--duration 10] [--runs 3] [--smoke]

Scenarios (wrk, 2 threads, 16 connections, every request pre-signed):
  floor-bare     a plain Django view returning a small JSON body
  floor-naive    the hand-written receiver (DRF, HMAC, get_or_create, async_task on commit), new ids
  app-new        POST /webhooks/generic/, every delivery valid and new
  app-duplicate  the same deliveries again: every one a duplicate
  app-invalid    wrong signatures: refused before any database work
  app-mix        70 % new, 20 % duplicate, 10 % invalid signature
No qcluster runs: this measures durable acceptance; queued tasks wait in the broker.
Prints a table per leg and worker count (medians of --runs) and one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789abcdefghijklmnop"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "bench_webhooks"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
THREADS, CONNECTIONS = 2, 16
SCENARIOS = ["floor-bare", "floor-naive", "app-new", "app-duplicate", "app-invalid", "app-mix"]


def envelope(webhook_id: str) -> bytes:
    return json.dumps(
        {"workflow_name": "noop", "inputs": {"n": 1}, "webhook_id": webhook_id}
    ).encode()


def signed(body: bytes, valid: bool = True) -> str:
    key = SECRET if valid else "not-the-secret"
    return "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_row(path: str, body: bytes, signature: str) -> str:
    headers = (
        f'{{["Content-Type"]="application/json", ["X-Webhook-Signature"]={lua_string(signature)}}}'
    )
    return f"{{{lua_string(path)}, {headers}, {lua_string(body.decode())}}}"


def write_requests(prefix: Path, scenario: str, run: int, per_thread: int) -> None:
    """One Lua file per wrk thread; "new" ids never repeat across threads, runs or scenarios."""
    for thread in range(1, THREADS + 1):
        rows = []
        for i in range(per_thread):
            fresh = f"{scenario}-{run}-{thread}-{i}"
            if scenario == "floor-bare":
                rows.append(request_row("/floor/bare/", b"{}", ""))
            elif scenario == "floor-naive":
                body = envelope(fresh)
                rows.append(request_row("/floor/naive/", body, signed(body)))
            else:
                kind = {"app-new": "new", "app-duplicate": "dup", "app-invalid": "bad"}.get(
                    scenario
                )
                if kind is None:  # mix: 7 new, 2 duplicates, 1 invalid in every 10
                    kind = ["new"] * 7 + ["dup"] * 2 + ["bad"]
                    kind = kind[i % 10]
                body = envelope(f"warm-{i % 100}" if kind == "dup" else fresh)
                rows.append(
                    request_row("/webhooks/generic/", body, signed(body, valid=kind != "bad"))
                )
        (prefix.parent / f"{prefix.name}-{thread}.lua").write_text(
            "return {\n" + ",\n".join(rows) + "\n}\n"
        )


def leg_env(leg: str, var_dir: Path, queue: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings", BENCH_VAR_DIR=str(var_dir), BENCH_QUEUE=queue,
        PYTHONPATH=str(REPO),
    )  # fmt: skip
    if leg == "postgres":
        env["DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + PG_DATABASE
        env["REDIS_URL"] = REDIS_URL
    return env


def fresh_database(leg: str, env: dict[str, str]) -> None:
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


@contextmanager
def gunicorn(env: dict[str, str], workers: int, port: int) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "project.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--log-level", "warning"],
        cwd=REPO, env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/floor/bare/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise RuntimeError("gunicorn did not start")
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def warm_duplicates(base: str) -> None:
    """Store the 100 ids the duplicate scenarios repeat."""
    for i in range(100):
        body = envelope(f"warm-{i}")
        request = urllib.request.Request(
            f"{base}/webhooks/generic/", data=body, method="POST",
            headers={"Content-Type": "application/json", "X-Webhook-Signature": signed(body)},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=10).close()


def run_wrk(base: str, prefix: Path, duration: int) -> dict[str, Any]:
    output = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "-s", str(Path(__file__).with_name("wrk.lua")),
         base, "--", str(prefix)],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout  # fmt: skip
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


def measure(
    leg: str, workers: int, duration: int, runs: int, per_thread: int
) -> dict[str, dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-"))
    env = leg_env(leg, work, queue=f"bench-{os.getpid()}-{leg}-{workers}")
    try:
        fresh_database(leg, env)
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}
        with gunicorn(env, workers, port=18000 + workers) as base:
            warm_duplicates(base)
            for run in range(runs):
                for scenario in SCENARIOS:  # interleaved, so drift hits every scenario alike
                    prefix = work / f"{scenario}-{run}"
                    write_requests(prefix, scenario, run, per_thread)
                    results[scenario].append(run_wrk(base, prefix, duration))
        return {scenario: median_of(rows) for scenario, rows in results.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
        purge_redis_queue(leg, env)


def purge_redis_queue(leg: str, env: dict[str, str]) -> None:
    if leg == "postgres":
        import redis

        redis.Redis.from_url(REDIS_URL).delete(f"django_q:{env['BENCH_QUEUE']}:q")


def median_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ["rps", "p50_ms", "p99_ms"]
    merged: dict[str, Any] = {key: statistics.median(row[key] for row in rows) for key in keys}
    for key in ("requests", "ok", "client_errors", "server_errors", "socket_errors"):
        merged[key] = sum(row[key] for row in rows)
    return merged


def table(leg: str, workers: int, results: dict[str, dict[str, Any]]) -> str:
    bare, naive = results["floor-bare"]["rps"], results["floor-naive"]["rps"]
    lines = [
        f"\n{leg}, gunicorn {workers} workers (medians)",
        f"{'scenario':<15}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x bare':>8}{'x naive':>9}{'4xx':>8}{'5xx':>6}",
    ]
    for scenario, r in results.items():
        lines.append(
            f"{scenario:<15}{r['rps']:>9.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['rps'] / bare:>8.2f}{r['rps'] / naive:>9.2f}{r['client_errors']:>8}{r['server_errors']:>6}"
        )
    targets = {
        "app-new vs naive (>= 1.2)": results["app-new"]["rps"] / naive,
        "app-duplicate vs bare (>= 0.5)": results["app-duplicate"]["rps"] / bare,
        "app-invalid vs bare (>= 0.8)": results["app-invalid"]["rps"] / bare,
    }
    lines += [f"  target {name}: {ratio:.2f}" for name, ratio in targets.items()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leg", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--duration", type=int, default=10, help="Seconds per wrk run.")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="CI: 1 run of 1 s, SQLite, 2 workers.")
    args = parser.parse_args()
    if args.smoke:
        args.leg, args.workers, args.duration, args.runs = "sqlite", [2], 1, 1
    legs = ["sqlite", "postgres"] if args.leg == "both" else [args.leg]
    per_thread = max(2000, args.duration * 3000)
    report: dict[str, Any] = {}
    for leg in legs:
        for workers in args.workers:
            results = measure(leg, workers, args.duration, args.runs, per_thread)
            print(table(leg, workers, results), flush=True)
            report[f"{leg}-{workers}"] = results
    print(
        "JSON "
        + json.dumps(
            {"benchmark": "ingest", "duration": args.duration, "runs": args.runs, "results": report}
        )
    )
    server_errors = sum(r["server_errors"] for results in report.values() for r in results.values())
    return 1 if server_errors else 0


if __name__ == "__main__":
    sys.exit(main())
