"""A million events in PostgreSQL: admin pages, cleanup memory, and ingest during cleanup.

    python -m bench.bulk [--rows 1000000] [--delete N] [--days 7] [--batch-size 1000]
                         [--repeats 5] [--rate 100] [--baseline-seconds 30] [--explain]
                         [--keep] [--smoke]

Its own database (``bench_bulk``), migrated, then seeded in SQL (bench/bulk_seed.py): ``--rows``
events over the last 60 days, 20 % of them inside the cleanup window, mostly succeeded, four
sources, ten workflows, payloads of about 500 bytes; then VACUUM ANALYZE.

admin     in process (Django's test client, the bench settings with the demo URLconf, a
          superuser): the changelist, filtered changelists (status, source, workflow, the date
          filter's "Past 7 days"), an id search and the dashboard; one warm-up, then median and max of ``--repeats``
          requests, and one more that counts the SQL queries and finds the slowest (with
          --explain: EXPLAIN ANALYZE of every query over 20 ms). Target: < 300 ms each.
cleanup   old finished events are topped up until ``--delete`` (default: ``--rows``) are
          eligible, then ``manage.py cleanup_webhook_events --days 7`` runs as a subprocess:
          wall time, rows/s, its CPU time and peak RSS (``wait4``), and the WAL written and
          checkpoints done meanwhile. Target: peak RSS < 150 MB.
ingest    one gunicorn (2 sync workers) takes signed new deliveries at a fixed ``--rate`` for
          ``--baseline-seconds``, then at the same rate for as long as the cleanup runs.
          Latency runs from each request's scheduled time. Target: p99 during cleanup within
          2x of p99 without.

Each measuring phase holds /tmp/webhooks-bench.lock, so benchmarks sharing the machine take
turns. Prints a table, then one JSON line. Exit status 1 if a delivery failed or was not
answered 202 (targets only print "MISSED"); the database is dropped unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

from bench import bulk_seed
from bench.common import (
    Gunicorn,
    Process,
    bench_lock,
    clear_queue,
    envelope,
    leg_env,
    median,
    percentile,
    post_signed,
    signature,
    terminate_on_sigterm,
)

ADMIN_TARGET_MS = 300
RSS_TARGET_MB = 150
P99_TARGET_RATIO = 2.0
#: With --explain, the plan of every query of a page slower than this.
EXPLAIN_MS = 20
GUNICORN_WORKERS = 2
GENERIC = "/webhooks/generic/"


def progress(message: str) -> None:
    """Minutes pass between table lines on a million rows: say what is happening, on stderr."""
    print(f"[bulk {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- admin pages (in process) ----------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    url: str
    expect: str  # text the page must contain: the (capped) result count, or the chart


def admin_phase(env: dict[str, str], repeats: int, explain: bool) -> dict[str, Any]:
    """Time every page in this process, with the bench settings and the demo's admin URLs."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import Client, override_settings

    user = get_user_model().objects.create_superuser("bulk", "bulk@example.com", "unused")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    try:
        # bench.urls has the app and the floors, not the admin: the demo URLconf has both.
        with override_settings(ROOT_URLCONF="project.urls"):
            return {page.name: time_page(client, page, repeats, explain) for page in admin_pages()}
    finally:
        connections.close_all()


def admin_pages() -> list[Page]:
    """The changelist as an operator uses it: bare, filtered, the past week, an id; the dashboard."""
    from django.urls import reverse
    from django.utils import timezone

    from webhooks_app.admin import CappedCountPaginator
    from webhooks_app.models import WebhookEvent

    def listed(**lookups: Any) -> str:
        count = WebhookEvent.objects.filter(**lookups)[: CappedCountPaginator.CAP + 1].count()
        return f"{count} webhook event{'' if count == 1 else 's'}\n"

    changelist = reverse("admin:webhooks_app_webhookevent_changelist")
    # The admin date filter's "Past 7 days" link, built as DateFieldListFilter builds it.
    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    week_ago, tomorrow = today - timedelta(days=7), today + timedelta(days=1)
    middle = WebhookEvent.objects.order_by("received_at")[WebhookEvent.objects.count() // 2]
    return [
        Page("changelist", changelist, listed()),
        Page("status=dead", f"{changelist}?status__exact=dead", listed(status="dead")),
        Page(
            "source+status",
            f"{changelist}?source=stripe&status__exact=succeeded",
            listed(source="stripe", status="succeeded"),
        ),
        Page(
            "workflow",
            f"{changelist}?workflow_name=github.deploy",
            listed(workflow_name="github.deploy"),
        ),
        Page(
            "past 7 days",
            f"{changelist}?{urlencode({'received_at__gte': week_ago, 'received_at__lt': tomorrow})}",
            listed(received_at__gte=week_ago, received_at__lt=tomorrow),
        ),
        Page("search id", f"{changelist}?q={middle.webhook_id}", listed(pk=middle.pk)),
        Page("dashboard", reverse("admin:webhooks_app_dashboard"), 'id="chart-24h"'),
    ]


def time_page(client: Any, page: Page, repeats: int, explain: bool) -> dict[str, Any]:
    """Warm-up, ``repeats`` timed requests, then one with the queries captured (not timed:
    capturing costs time of its own)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    fetch(client, page)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fetch(client, page)
        times.append((time.perf_counter() - started) * 1000)
    with CaptureQueriesContext(connection) as captured:
        fetch(client, page)
    queries = sorted(captured.captured_queries, key=lambda q: float(q["time"]), reverse=True)
    slow: list[dict[str, Any]] = [
        {"ms": float(q["time"]) * 1000, "sql": q["sql"]} for q in queries[:3]
    ]
    if explain:
        for query in slow:
            if query["ms"] > EXPLAIN_MS:
                print(f"\nEXPLAIN ANALYZE ({page.name}, {query['ms']:.0f} ms):\n{query['sql']}")
                print(explain_analyze(query["sql"]), flush=True)
    return {
        "url": page.url,
        "median_ms": median(times),
        "max_ms": max(times),
        "queries": len(queries),
        "slowest": slow,
    }


def fetch(client: Any, page: Page) -> None:
    response = client.get(page.url)
    if response.status_code != 200:
        raise RuntimeError(f"{page.url} answered {response.status_code}")
    if page.expect not in response.content.decode():
        raise RuntimeError(f"{page.url} does not show {page.expect!r}")


def explain_analyze(query: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {query}")
        return "\n".join(row[0] for row in cursor.fetchall())


# -- ingest at a fixed rate ------------------------------------------------------------------


class FixedRateLoad:
    """Signed new deliveries at fixed times, ``rate`` per second, for as long as the block runs.

    Each latency runs from the request's *scheduled* time, not from when a thread got round to
    sending it: a stall shows as the wait senders would see instead of as fewer requests (no
    coordinated omission). Each thread keeps its connection; gunicorn's sync workers close it
    after every answer, and http.client reconnects, as most senders do.
    """

    THREADS = 16

    def __init__(self, base: str, rate: float, tag: str) -> None:
        address = urlsplit(base)
        self._host, self._port = address.hostname or "127.0.0.1", address.port
        self._rate = rate
        self._prefix = f"bulk-{uuid.uuid4().hex[:8]}-{tag}-"
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._start = self._seconds = 0.0
        self.latencies_ms: list[float] = []
        self.statuses: Counter[str] = Counter()
        self._threads = [
            threading.Thread(target=self._send_loop, daemon=True) for _ in range(self.THREADS)
        ]

    def __enter__(self) -> Self:
        self._start = time.perf_counter()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._seconds = time.perf_counter() - self._start
        for thread in self._threads:
            thread.join(timeout=60)

    def _send_loop(self) -> None:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=30)
        try:
            while True:
                with self._lock:
                    index, self._next = self._next, self._next + 1
                due = self._start + index / self._rate
                if self._stop.wait(max(0.0, due - time.perf_counter())):
                    return
                status = self._deliver(connection, index)
                latency = (time.perf_counter() - due) * 1000
                with self._lock:
                    self.latencies_ms.append(latency)
                    self.statuses[status] += 1
        finally:
            connection.close()

    def _deliver(self, connection: http.client.HTTPConnection, index: int) -> str:
        body = envelope(f"{self._prefix}{index}")
        headers = {"Content-Type": "application/json", "X-Webhook-Signature": signature(body)}
        try:
            connection.request("POST", GENERIC, body, headers)
            with connection.getresponse() as response:
                response.read()
                return str(response.status)
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            return type(error).__name__

    def summary(self) -> dict[str, Any]:
        values = self.latencies_ms or [0.0]
        return {
            "seconds": self._seconds,
            "requests": len(self.latencies_ms),
            "rate": len(self.latencies_ms) / self._seconds if self._seconds else 0.0,
            "p50_ms": percentile(values, 50),
            "p99_ms": percentile(values, 99),
            "max_ms": max(values),
            "statuses": dict(self.statuses),
            "failed": sum(n for status, n in self.statuses.items() if status != "202"),
        }


# -- cleanup, with and without ingest --------------------------------------------------------


class RssWatch:
    """Samples a process's resident set a few times a second: is memory flat, not just low."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self.samples_mb: list[float] = []

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(OSError):  # gone, or a zombie without VmRSS
                match = re.search(r"^VmRSS:\s+(\d+) kB", self._status.read_text(), re.MULTILINE)
                if match:
                    self.samples_mb.append(int(match[1]) / 1024)

    def at(self, fraction: float) -> float:
        return self.samples_mb[min(len(self.samples_mb) - 1, int(fraction * len(self.samples_mb)))]


def run_cleanup(env: dict[str, str], log: Path, days: int, batch_size: int) -> dict[str, Any]:
    """``manage.py cleanup_webhook_events`` as operators run it; its peak RSS from ``wait4``.

    Its stdout is a file, not a TTY, so the command prints counts, not a progress bar.
    """
    command = [
        sys.executable, "manage.py", "cleanup_webhook_events",
        "--days", str(days), "--batch-size", str(batch_size),
    ]  # fmt: skip
    wal = bulk_seed.wal_position()
    started = time.perf_counter()
    with Process("cleanup", command, env, log) as process, RssWatch(process.popen.pid) as rss:
        _, status, usage = os.wait4(process.popen.pid, 0)
        seconds = time.perf_counter() - started
        process.popen.returncode = os.waitstatus_to_exitcode(status)
    # Ingest commits wait for their WAL flush behind the cleanup's: the likely coupling.
    written = bulk_seed.wal_since(wal)  # the ingest's own share is a few MB a minute
    if process.popen.returncode != 0:
        raise RuntimeError(f"cleanup exited {process.popen.returncode}:\n{process.tail()}")
    match = re.search(r"Deleted (\d+) event", process.tail())
    if not match:
        raise RuntimeError(f"cleanup printed no count:\n{process.tail()}")
    deleted = int(match[1])
    return {
        "seconds": seconds,
        "deleted": deleted,
        "rows_per_s": deleted / seconds,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # the command's own process, not PostgreSQL's
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kB on Linux
        "rss_mb_at_10_50_90_pct": [round(rss.at(f), 1) for f in (0.1, 0.5, 0.9)]
        if rss.samples_mb
        else [],
        **written,
    }


def cleanup_phase(env: dict[str, str], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ingest at a fixed rate alone, then the same load while the cleanup runs.

    The load average at the start is recorded: the lock keeps other benchmarks out, not test
    suites, and on 2 cores those move p99 more than anything measured here.
    """
    load = os.getloadavg()
    with Gunicorn(env, GUNICORN_WORKERS, work / "gunicorn.log") as server:
        for i in range(20):  # every worker imported, connected, and the path warm
            if (status := post_signed(server.base, f"bulk-warm-{uuid.uuid4().hex}-{i}")) != 202:
                raise RuntimeError(f"warm-up delivery answered {status}")
        progress(f"ingest at {args.rate:g}/s for {args.baseline_seconds:g} s, no cleanup")
        with FixedRateLoad(server.base, args.rate, "baseline") as baseline:
            time.sleep(args.baseline_seconds)
        progress(f"cleanup --days {args.days}, ingest at {args.rate:g}/s meanwhile")
        with FixedRateLoad(server.base, args.rate, "cleanup") as during:
            cleanup = run_cleanup(env, work / "cleanup.log", args.days, args.batch_size)
        if not server.alive():
            raise RuntimeError(f"gunicorn died:\n{server.tail()}")
    without, loaded = baseline.summary(), during.summary()
    return {
        "loadavg_at_start": load,
        "cleanup": cleanup,
        "ingest_without_cleanup": without,
        "ingest_during_cleanup": loaded,
        "p99_ratio": loaded["p99_ms"] / without["p99_ms"],
    }


# -- reporting -------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def table(report: dict[str, Any], args: argparse.Namespace) -> str:
    seed = report["seed"]
    lines = [
        "",
        f"bulk: PostgreSQL {report['postgres']}, {seed['rows']} events seeded in "
        f"{seed['seconds']:.1f} s (VACUUM ANALYZE {seed['vacuum_seconds']:.1f} s), "
        f"{os.cpu_count()} CPUs",
        f"{'admin page (server time)':<26}{'median ms':>10}{'max ms':>9}{'queries':>9}"
        f"{'slowest q ms':>14}  target < {ADMIN_TARGET_MS} ms",
    ]
    for name, page in report["admin"].items():
        lines.append(
            f"{name:<26}{page['median_ms']:>10.1f}{page['max_ms']:>9.1f}{page['queries']:>9}"
            f"{page['slowest'][0]['ms']:>14.1f}  "
            f"{verdict(page['median_ms'] < ADMIN_TARGET_MS)}"
        )
    result = report["cleanup"]
    cleanup = result["cleanup"]
    lines += [
        "",
        f"cleanup --days {args.days} --batch-size {args.batch_size}: {cleanup['deleted']} deleted "
        f"({seed['topped_up']} old events added for it; table {seed['rows_at_cleanup']} rows) in "
        f"{cleanup['seconds']:.1f} s = {cleanup['rows_per_s']:.0f} rows/s; command CPU "
        f"{cleanup['cpu_s']:.1f} s; WAL {cleanup['wal_mb']:.0f} MB, "
        f"{cleanup['checkpoints']} checkpoint(s)",
        f"  peak RSS {cleanup['peak_rss_mb']:.1f} MB (RSS at 10/50/90 % of the run: "
        f"{'/'.join(f'{mb:.0f}' for mb in cleanup['rss_mb_at_10_50_90_pct'])} MB)  "
        f"target < {RSS_TARGET_MB} MB {verdict(cleanup['peak_rss_mb'] < RSS_TARGET_MB)}",
        "",
        f"{f'ingest {args.rate:g}/s, gunicorn {GUNICORN_WORKERS} workers':<34}{'seconds':>8}"
        f"{'requests':>9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'failed':>7}",
    ]
    for name, key in [("without cleanup", "ingest_without_cleanup"),
                      ("during cleanup", "ingest_during_cleanup")]:  # fmt: skip
        r = result[key]
        lines.append(
            f"{name:<34}{r['seconds']:>8.1f}{r['requests']:>9}{r['p50_ms']:>8.1f}"
            f"{r['p99_ms']:>8.1f}{r['max_ms']:>8.1f}{r['failed']:>7}"
        )
    ratio = result["p99_ratio"]
    lines.append(
        f"  (1-minute load average when the phase started: {result['loadavg_at_start'][0]:.2f})"
    )
    lines.append(
        f"  target p99 during cleanup <= {P99_TARGET_RATIO:g}x without: {ratio:.2f}x "
        f"{verdict(ratio <= P99_TARGET_RATIO)}"
    )
    return "\n".join(lines)


# -- driver ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="events seeded")
    parser.add_argument("--delete", type=int, help="events the cleanup deletes (default: --rows)")
    parser.add_argument("--days", type=int, default=7, help="cleanup window (the command's --days)")
    parser.add_argument("--batch-size", type=int, default=1000, help="the command's --batch-size")
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per admin page")
    parser.add_argument("--rate", type=float, default=100, help="deliveries/s during ingest")
    parser.add_argument("--baseline-seconds", type=float, default=30, help="ingest without cleanup")
    parser.add_argument(
        "--explain", action="store_true", help=f"plans of queries > {EXPLAIN_MS} ms"
    )
    parser.add_argument("--keep", action="store_true", help=f"keep {bulk_seed.DATABASE}")
    parser.add_argument("--smoke", action="store_true", help="CI: 20 000 rows, short phases")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.repeats, args.rate, args.baseline_seconds = 20_000, 2, 50, 3
    if args.delete is None:
        args.delete = args.rows
    if not 1 <= args.days < bulk_seed.HISTORY_DAYS:
        parser.error(f"--days must be between 1 and {bulk_seed.HISTORY_DAYS - 1}")
    return args


def prepare(env: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Create and seed the database (outside the lock: it measures nothing that others skew)."""
    progress(f"creating {bulk_seed.DATABASE} and seeding {args.rows} events")
    bulk_seed.create_database(env)
    started = time.perf_counter()
    bulk_seed.seed(args.rows, args.days, reserve=args.delete)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    bulk_seed.vacuum_analyze()
    return {
        "rows": args.rows,
        "seconds": seconds,
        "vacuum_seconds": time.perf_counter() - started,
    }


def top_up(args: argparse.Namespace, seed: dict[str, Any]) -> None:
    progress(f"topping up to {args.delete} events eligible for cleanup")
    started = time.perf_counter()
    seed["topped_up"] = bulk_seed.top_up(args.delete, args.days, reserve=args.delete)
    bulk_seed.vacuum_analyze()
    seed["top_up_seconds"] = time.perf_counter() - started
    seed["rows_at_cleanup"] = args.rows + seed["topped_up"]


def main() -> int:
    args = parse_args()
    terminate_on_sigterm()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-bulk-"))
    env = leg_env("postgres", work, queue=f"bench-bulk-{uuid.uuid4().hex[:8]}")
    env["DATABASE_URL"] = bulk_seed.DATABASE_URL
    try:
        seed = prepare(env, args)
        with bench_lock():
            progress("admin pages")
            admin = admin_phase(env, args.repeats, args.explain)
        top_up(args, seed)
        with bench_lock():
            cleanup = cleanup_phase(env, work, args)
        report = {"postgres": bulk_seed.server_version(), "seed": seed, "admin": admin,
                  "cleanup": cleanup}  # fmt: skip
    finally:
        clear_queue("postgres", env)
        if not args.keep:
            bulk_seed.drop_database()
        shutil.rmtree(work, ignore_errors=True)
    print(table(report, args), flush=True)
    failed = sum(
        cleanup[key]["failed"] for key in ("ingest_without_cleanup", "ingest_during_cleanup")
    )
    if failed:
        print(f"FINDING: {failed} deliveries failed or were not answered 202", file=sys.stderr)
    config = {key: getattr(args, key) for key in ("rows", "delete", "days", "batch_size",
              "repeats", "rate", "baseline_seconds", "smoke")}  # fmt: skip
    config |= {"cpus": os.cpu_count(), "loadavg_before": load_before,
               "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps({"benchmark": "bulk", "config": config, "results": report}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
