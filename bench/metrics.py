"""``GET /webhooks/metrics/`` on a million events in PostgreSQL (issue 14): what a scrape costs.

    python -m bench.metrics [--rows 1000000] [--repeats 5] [--processes 2 100 1000]
                            [--keep] [--smoke]

A database of its own (``bench_metrics``; ``BENCH_BULK_DATABASE`` names another), created,
migrated and seeded as ``bench.bulk`` seeds its own (bench/bulk_seed.py: four sources, ten
workflows, 93 % succeeded, 0.4 % pending), then VACUUM ANALYZE; dropped unless --keep.

In process, like bench.bulk's admin phase: Django's test client with the bench settings and
``METRICS_TOKEN``, in prometheus_client's multiprocess mode (a temporary
``PROMETHEUS_MULTIPROC_DIR``), with counts for every source and workflow. Per row one warm-up,
then the median and max of ``--repeats`` scrapes:

cold       the cached state deleted before each scrape: the database counts the events and finds
           the oldest pending one (what one scrape per ``STATE_SECONDS`` pays); the time of each
           of its queries.
warm       the state from the cache: every other scrape within ``STATE_SECONDS``.
N procs    warm, with the files of N processes in the directory (every process that ever
           counted leaves its files there until the directory is emptied).
index      cold, after ``CREATE INDEX ... (status, source, workflow_name)``: the covering index
           an operator may add (it is not among the app's migrations), dropped afterwards.

Holds /tmp/webhooks-bench.lock while it measures (not while seeding). Prints a table, then one
JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Before bulk_seed reads it: a database of its own, so bench.bulk's can be in use meanwhile.
os.environ.setdefault("BENCH_BULK_DATABASE", "bench_metrics")

from bench import bulk_seed
from bench.common import bench_lock, leg_env, median, terminate_on_sigterm

TOKEN = "bench-metrics-token-0123456789abcdef"
URL = "/webhooks/metrics/"
COVERING_INDEX = "bench_metrics_covering_idx"


def progress(message: str) -> None:
    print(f"[metrics {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(scrape: Callable[[], None], repeats: int) -> dict[str, float]:
    scrape()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        scrape()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": median(times), "max_ms": max(times)}


def measure(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Every row of the table, in this process (multiprocess mode: env is set before import)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    from webhooks_app import metrics
    from webhooks_app.exceptions import InvalidSignature

    for source, *_, routes in bulk_seed.SOURCES:  # a count for every label the table has
        metrics.count_refusal(source, InvalidSignature())
        for _, workflow in routes:
            metrics.observe_attempt(workflow, 0.05)
    client = Client(HTTP_HOST="127.0.0.1")

    def scrape() -> None:
        response = client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"})
        if response.status_code != 200 or b"webhooks_events{" not in response.content:
            raise RuntimeError(f"{URL} answered {response.status_code}")

    def cold() -> None:
        cache.delete(metrics.state_cache_key())
        scrape()

    def queries() -> list[dict[str, Any]]:
        cache.delete(metrics.state_cache_key())
        with CaptureQueriesContext(connection) as captured:
            scrape()
        return [{"ms": float(q["time"]) * 1000, "sql": q["sql"]} for q in captured]

    report: dict[str, Any] = {}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "METRICS_TOKEN": TOKEN}):
        progress("cold and warm scrapes")
        report["cold"] = {**timed(cold, args.repeats), "queries": queries()}
        report["warm"] = timed(scrape, args.repeats)
        for processes in args.processes:
            progress(f"warm scrapes with the files of {processes} processes")
            with processes_files(Path(env["PROMETHEUS_MULTIPROC_DIR"]), processes):
                report[f"{processes} procs"] = timed(scrape, args.repeats)
        progress("cold scrapes with a covering index")
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE INDEX {COVERING_INDEX} ON {bulk_seed.TABLE} (status, source, workflow_name)"
            )
            cursor.execute(f"VACUUM ANALYZE {bulk_seed.TABLE}")
        try:
            report["index"] = {**timed(cold, args.repeats), "queries": queries()}
        finally:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP INDEX {COVERING_INDEX}")
    connection.close()
    return report


@contextlib.contextmanager
def processes_files(directory: Path, count: int) -> Iterator[None]:
    """The directory as ``count`` processes leave it: this process's files, and copies of them
    under other process ids (``<kind>_<pid>.db``) holding the same counts; removed after."""
    own = [path for path in directory.glob("*.db") if path.stem.endswith(f"_{os.getpid()}")]
    copies = [
        path.with_name(f"{path.stem.rsplit('_', 1)[0]}_{fake_pid}.db")
        for fake_pid in range(10**7, 10**7 + count - 1)
        for path in own
    ]
    for copy in copies:
        shutil.copyfile(directory / f"{copy.stem.rsplit('_', 1)[0]}_{os.getpid()}.db", copy)
    try:
        yield
    finally:
        for copy in copies:
            copy.unlink()


def table(report: dict[str, Any], rows: int, repeats: int) -> str:
    lines = [
        f"metrics scrape: {rows} events (PostgreSQL {report['postgres']}), in process, 1 warm-up"
        f" + {repeats} scrapes per row",
        f"{'scrape':<24} {'median ms':>10} {'max ms':>8}  queries (ms)",
    ]
    for name, row in report["scrapes"].items():
        spent = ", ".join(f"{q['ms']:.1f}" for q in row.get("queries", []))
        lines.append(f"{name:<24} {row['median_ms']:>10.1f} {row['max_ms']:>8.1f}  {spent}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, nargs="+", default=[2, 100, 1000])
    parser.add_argument("--keep", action="store_true", help=f"keep {bulk_seed.DATABASE}")
    parser.add_argument("--smoke", action="store_true", help="20 000 events, 2 repeats")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.repeats, args.processes = 20_000, 2, [2]
    return args


def main() -> int:
    args = parse_args()
    terminate_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-metrics-"))
    env = leg_env("postgres", work, queue=f"bench-metrics-{uuid.uuid4().hex[:8]}")
    env["DATABASE_URL"] = bulk_seed.DATABASE_URL
    env["PROMETHEUS_MULTIPROC_DIR"] = str(work / "prometheus")
    (work / "prometheus").mkdir()
    load_before = os.getloadavg()
    try:
        progress(f"creating {bulk_seed.DATABASE} and seeding {args.rows} events")
        bulk_seed.create_database(env)
        bulk_seed.seed(args.rows, days=7, reserve=0)
        bulk_seed.vacuum_analyze()
        with bench_lock():
            report = {"postgres": bulk_seed.server_version(), "scrapes": measure(env, args)}
    finally:
        if not args.keep:
            bulk_seed.drop_database()
        shutil.rmtree(work, ignore_errors=True)
    print(table(report, args.rows, args.repeats), flush=True)
    config = {"rows": args.rows, "repeats": args.repeats, "processes": args.processes,
              "cpus": os.cpu_count(), "loadavg_before": load_before,
              "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps({"benchmark": "metrics", "config": config, "results": report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
