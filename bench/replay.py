"""Bulk replay by filter (contract §10, issue #14): 100 000 dead events in PostgreSQL replayed
through the staff API against a real gunicorn and qcluster.

    python -m bench.replay [--events 100000] [--others 100000] [--poll 1] [--timeout 1800]
                           [--keep] [--smoke]

Its own database (``bench_replay``, ``BENCH_REPLAY_DATABASE``), migrated, then seeded in SQL:
``--events`` dead events of the ``noop`` workflow received over the last three hours (what the
replay selects), interleaved by id with ``--others`` that it must leave alone (half succeeded on
``noop``, half dead on another workflow); then VACUUM ANALYZE. One gunicorn (2 sync workers)
and one ``manage.py qcluster`` (the demo's 2 workers, Redis broker) with the bench settings.

The operator, over HTTP with a staff session: a dry run, the replay (``POST
/webhooks/api/replays/``), then a progress poll (``GET /webhooks/api/replays/<id>/``) every
``--poll`` seconds until the replay is finished. Every request is timed; target: the longest
under 1 s. Meanwhile, five times a second, the process running the replay job is found (the
worker whose PostgreSQL backend holds the replay row's lock: a batch is under way) and its
resident set sampled; target: flat, the last batch's within 10 % of the first's. Then the
drain is awaited until every replayed event has succeeded, and checked: each selected event ran
exactly once more, none of the others ran.

Holds /tmp/webhooks-bench.lock while it measures. Prints a table, then one JSON line. Exit
status 1 if the replay or a check failed (a missed target only prints "MISSED"); the database
is dropped unless --keep.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql

from bench.common import (
    PG_ADMIN_URL,
    Cluster,
    Gunicorn,
    bench_lock,
    clear_queue,
    create_named_database,
    drop_named_database,
    leg_env,
    terminate_on_sigterm,
)

DATABASE = os.environ.get("BENCH_REPLAY_DATABASE", "bench_replay")
DATABASE_URL = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + DATABASE
TABLE = "webhooks_app_webhookevent"
REPLAYS = "/webhooks/api/replays/"
FILTERS = {"status": ["dead"], "workflow": "noop", "since": "1d"}
REQUEST_TARGET_S = 1.0
RSS_GROWTH_TARGET = 0.10
GUNICORN_WORKERS = 2
#: How often the replay job's process is looked for and measured.
SAMPLE_SECONDS = 0.2


def progress(message: str) -> None:
    print(f"[replay {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- database --------------------------------------------------------------------------------


#: Row i of ``events + others`` is a selected event when ``i * events / total`` steps up: exactly
#: ``events`` of them, spread evenly over the ids. The others are drawn (by a hash of i, so
#: whatever the ratio) a succeeded event of the same workflow or a dead one of another.
_SEED = """
WITH rows AS (
    SELECT i, (i::bigint * %(events)s) / %(total)s > ((i - 1)::bigint * %(events)s) / %(total)s
              AS selected,
           substr(md5(i::text), 1, 1) < '8' AS same_workflow
    FROM generate_series(1, %(total)s) AS i
)
INSERT INTO {table} (source, webhook_id, event_type, workflow_name, payload, headers, status,
                     attempts, error, history, received_at)
SELECT 'stripe',
       CASE WHEN selected THEN 'dead-' WHEN same_workflow THEN 'ok-' ELSE 'other-' END || i,
       'invoice.paid',
       CASE WHEN selected OR same_workflow THEN 'noop' ELSE 'stripe.record_invoice' END,
       jsonb_build_object('id', 'evt_' || i, 'type', 'invoice.paid', 'data',
           jsonb_build_object('object', jsonb_build_object(
               'id', 'in_' || md5(i::text), 'customer', 'cus_' || (i %% 5000),
               'amount_paid', i %% 10000, 'currency', 'eur'))),
       '{{"content-type": "application/json"}}'::jsonb,
       CASE WHEN selected OR NOT same_workflow THEN 'dead' ELSE 'succeeded' END,
       5,
       CASE WHEN selected OR NOT same_workflow THEN 'RuntimeError: upstream answered 503'
            ELSE '' END,
       '[]'::jsonb,
       now() - interval '3 hours' + i * (interval '3 hours' / %(total)s)
FROM rows
"""


def seed(events: int, others: int) -> None:
    query = sql.SQL(_SEED).format(table=sql.Identifier(TABLE))
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute(query, {"events": events, "total": events + others})
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))


def counts() -> dict[str, int]:
    """The seeded groups by what happened to them: what the final checks compare."""
    query = sql.SQL(
        "SELECT split_part(webhook_id, '-', 1) || ':' || status || ':' || attempts, count(*)"
        " FROM {} GROUP BY 1"
    ).format(sql.Identifier(TABLE))
    with psycopg.connect(DATABASE_URL) as conn:
        return {str(key): int(n) for key, n in conn.execute(query).fetchall()}


# -- the operator ----------------------------------------------------------------------------


def staff_headers(env: dict[str, str]) -> dict[str, str]:
    """A superuser's session cookie and a CSRF token, as a logged-in browser sends them (the
    staff API takes the session only, CSRF enforced: any token matching its cookie will do)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.test import Client

    client = Client()
    client.force_login(
        get_user_model().objects.create_superuser("replay", "replay@example.com", "unused")
    )
    connections.close_all()
    csrf = secrets.token_hex(16)
    return {
        "Cookie": f"sessionid={client.cookies['sessionid'].value}; csrftoken={csrf}",
        "X-CSRFToken": csrf,
        "Content-Type": "application/json",
    }


@dataclass
class Operator:
    """Every request the operator makes, timed from before it is sent to its last byte."""

    port: int
    headers: dict[str, str]
    timings: list[tuple[str, float]] = field(default_factory=list)

    def request(self, name: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        started = time.perf_counter()
        try:
            payload = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=payload, headers=self.headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        self.timings.append((name, time.perf_counter() - started))
        if response.status not in (200, 202):
            raise RuntimeError(f"{method} {path} answered {response.status}: {raw[:300]!r}")
        answer: dict[str, Any] = json.loads(raw)
        return answer

    def longest(self, name: str | None = None) -> float:
        return max(s for n, s in self.timings if name is None or n == name)


# -- the replay job's process ----------------------------------------------------------------

#: The client port of the backend holding the replay row's lock (``SELECT ... FOR UPDATE``
#: takes ROW SHARE on the table until its batch commits): the replay job, during a batch. The
#: API's reads take only ACCESS SHARE.
_JOB_BACKEND = """
SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.relation = 'webhooks_app_webhookreplay'::regclass
  AND l.mode = 'RowShareLock' AND a.pid <> pg_backend_pid()
"""


def process_of_port(port: int) -> int | None:
    """The local process whose TCP socket has local port ``port`` (``ss -p``)."""
    output = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    found = re.search(r"pid=(\d+)", output)
    return int(found[1]) if found else None


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found[1]) / 1024 if found else None


class JobWatch:
    """Samples, while the block runs, which cluster process runs the replay job and its RSS:
    ``(seconds since start, replay's done, pid, RSS MB)`` per sample that found it."""

    def __init__(self, cluster: Cluster, replay_id: int) -> None:
        self._cluster_group = cluster.popen.pid
        self._replay_id = replay_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._start = 0.0
        self.samples: list[tuple[float, int, int, float]] = []

    def __enter__(self) -> Self:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        done_query = "SELECT done FROM webhooks_app_webhookreplay WHERE id = %s"
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_SECONDS):
                ports = [row[0] for row in conn.execute(_JOB_BACKEND).fetchall() if row[0]]
                for port in ports:
                    pid = process_of_port(port)
                    if pid is None or os.getpgid(pid) != self._cluster_group:
                        continue
                    mb = rss_mb(pid)
                    row = conn.execute(done_query, [self._replay_id]).fetchone()
                    if mb is not None and row is not None:
                        at = time.perf_counter() - self._start
                        self.samples.append((at, int(row[0]), pid, mb))


# -- the run ---------------------------------------------------------------------------------


def replay_phase(env: dict[str, str], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The operator's session against real processes, then the drain."""
    headers = staff_headers(env)
    before = counts()
    with (
        Cluster(env, work / "qcluster.log") as cluster,
        Gunicorn(env, GUNICORN_WORKERS, work / "gunicorn.log") as server,
    ):
        operator = Operator(server.port, headers)
        operator.request(
            "warm-up", "POST", REPLAYS, {**FILTERS, "status": ["ignored"], "dry_run": True}
        )
        operator.timings.clear()
        progress(f"dry run, then the replay of {args.events} events")
        dry = operator.request("dry run", "POST", REPLAYS, {**FILTERS, "dry_run": True})
        started = time.perf_counter()
        replay = operator.request("create", "POST", REPLAYS, FILTERS)
        with JobWatch(cluster, replay["id"]) as watch:
            while replay["state"] == "running":
                if time.perf_counter() - started > args.timeout:
                    raise RuntimeError(f"the replay was not finished in {args.timeout} s: {replay}")
                time.sleep(args.poll)
                replay = operator.request("poll", "GET", f"{REPLAYS}{replay['id']}/")
        replayed_s = time.perf_counter() - started
        progress(f"replay {replay['state']} in {replayed_s:.1f} s; waiting for the drain")
        while counts().get("dead:succeeded:6", 0) < args.events:
            if time.perf_counter() - started > args.timeout:
                raise RuntimeError(f"the drain did not end in {args.timeout} s: {counts()}")
            time.sleep(1)
        drained_s = time.perf_counter() - started
        for process in (cluster, server):
            if not process.alive():
                raise RuntimeError(f"{process.name} died:\n{process.tail()}")
    polls = [s for name, s in operator.timings if name == "poll"]
    samples = watch.samples
    return {
        "dry_run_count": dry["count"],
        "replay": replay,
        "replayed_seconds": replayed_s,
        "drained_seconds": drained_s,
        "requests": {
            "dry_run_s": operator.longest("dry run"),
            "create_s": operator.longest("create"),
            "polls": len(polls),
            "poll_max_s": max(polls) if polls else 0.0,
            "poll_median_s": sorted(polls)[len(polls) // 2] if polls else 0.0,
            "longest_s": operator.longest(),
        },
        "job_rss": {
            "samples": len(samples),
            "pids": sorted({pid for _, _, pid, _ in samples}),
            "first": samples[0] if samples else None,
            "last": samples[-1] if samples else None,
            "max_mb": max(mb for *_, mb in samples) if samples else None,
        },
        "counts_before": before,
        "counts": counts(),
    }


def checks(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """What must hold whatever the timings: one count everywhere, each selected event run
    exactly once more (5 seeded attempts, then 6), the others untouched."""
    replay, before = result["replay"], result["counts_before"]
    expected = {"dead:succeeded:6": before.get("dead:dead:5", 0)} | {
        group: n for group, n in before.items() if not group.startswith("dead:")
    }
    failed = []
    if not result["dry_run_count"] == replay["count"] == replay["done"] == args.events:
        failed.append(
            f"dry run {result['dry_run_count']}, replay count {replay['count']}, queued "
            f"{replay['done']}: all should be {args.events}"
        )
    if replay["state"] != "finished":
        failed.append(f"the replay ended {replay['state']}")
    if result["counts"] != expected:
        failed.append(f"events after the drain: {result['counts']}, expected {expected}")
    return failed


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def table(result: dict[str, Any], seed_s: float, args: argparse.Namespace) -> str:
    requests, rss = result["requests"], result["job_rss"]
    lines = [
        "",
        f"replay: {args.events} dead events selected among {args.events + args.others} "
        f"(seeded in {seed_s:.1f} s), {os.cpu_count()} CPUs, gunicorn {GUNICORN_WORKERS} workers, "
        "qcluster 2 workers, Redis broker",
        f"  filters {json.dumps(FILTERS)}: dry run {result['dry_run_count']}, replay "
        f"{result['replay']['count']}, queued {result['replay']['done']}",
        f"  all queued (state finished) after {result['replayed_seconds']:.1f} s; every replayed "
        f"event succeeded after {result['drained_seconds']:.1f} s "
        f"({args.events / result['drained_seconds']:.0f} events/s)",
        "",
        f"{'operator request':<22}{'seconds':>9}",
        f"{'dry run':<22}{requests['dry_run_s']:>9.3f}",
        f"{'create (202)':<22}{requests['create_s']:>9.3f}",
        f"{'poll, median':<22}{requests['poll_median_s']:>9.3f}   ({requests['polls']} polls, "
        f"every {args.poll:g} s)",
        f"{'poll, longest':<22}{requests['poll_max_s']:>9.3f}",
        f"  longest request {requests['longest_s']:.3f} s  target < {REQUEST_TARGET_S:g} s "
        f"{verdict(requests['longest_s'] < REQUEST_TARGET_S)}",
        "",
    ]
    if rss["first"] is None:
        lines.append("  replay job's process: never caught during a batch (no RSS samples)")
        return "\n".join(lines)
    first, last = rss["first"], rss["last"]
    growth = last[3] / first[3] - 1
    lines += [
        f"replay job's process ({rss['samples']} samples during batches, "
        f"pids {', '.join(map(str, rss['pids']))}):",
        f"  first batch: {first[3]:.1f} MB (pid {first[2]}, done {first[1]}, at {first[0]:.1f} s)",
        f"  last batch:  {last[3]:.1f} MB (pid {last[2]}, done {last[1]}, at {last[0]:.1f} s)",
        f"  max {rss['max_mb']:.1f} MB; growth first to last {100 * growth:+.1f} %  target "
        f"within {100 * RSS_GROWTH_TARGET:.0f} % {verdict(abs(growth) <= RSS_GROWTH_TARGET)}",
    ]
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000, help="dead events to replay")
    parser.add_argument("--others", type=int, default=100_000, help="events it must leave alone")
    parser.add_argument("--poll", type=float, default=1.0, help="seconds between progress polls")
    parser.add_argument("--timeout", type=float, default=1800, help="give up after (seconds)")
    parser.add_argument("--keep", action="store_true", help=f"keep {DATABASE}")
    parser.add_argument("--smoke", action="store_true", help="CI: 3000 events, 3000 others")
    args = parser.parse_args()
    if args.smoke:
        args.events, args.others, args.poll, args.timeout = 3000, 3000, 0.5, 300
    return args


def main() -> int:
    args = parse_args()
    terminate_on_sigterm()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-replay-"))
    env = leg_env("postgres", work, queue=f"bench-replay-{uuid.uuid4().hex[:8]}")
    env["DATABASE_URL"] = DATABASE_URL
    try:
        progress(f"creating {DATABASE} and seeding {args.events + args.others} events")
        create_named_database(DATABASE, env)
        started = time.perf_counter()
        seed(args.events, args.others)
        seed_s = time.perf_counter() - started
        with bench_lock():
            result = replay_phase(env, work, args)
    finally:
        clear_queue("postgres", env)
        if not args.keep:
            drop_named_database(DATABASE)
        shutil.rmtree(work, ignore_errors=True)
    print(table(result, seed_s, args), flush=True)
    failed = checks(result, args)
    for finding in failed:
        print(f"FINDING: {finding}", file=sys.stderr)
    config = {key: getattr(args, key) for key in ("events", "others", "poll", "smoke")}
    config |= {"cpus": os.cpu_count(), "loadavg_before": load_before,
               "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps({"benchmark": "replay", "config": config, "results": result}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
