"""Payload search on a million events in PostgreSQL (contract §10, issue #14): the API's and the
admin's answer time with the GIN index and without it, and the plans.

    python -m bench.search [--rows 1000000] [--repeats 7] [--repeats-without 3] [--keep]
                           [--smoke]

Its own database (``bench_search``, ``BENCH_SEARCH_DATABASE``), created, migrated and dropped by
the run (``--keep`` keeps it, index rebuilt). The migration's GIN index is dropped for the
seeding (one ``INSERT ... SELECT FROM generate_series`` per chunk) and then built again as the
migration builds it (``CREATE INDEX CONCURRENTLY``, timed: what migrating a full table costs);
then ``VACUUM ANALYZE``. Payloads look like three providers': Stripe events (60 %; 200 000
customers, a few of them in thousands of events, most in one or two; 200 amounts; 5 types; an
older ``api_version`` in the oldest 15 % of the table), GitHub pushes (25 %; a ``commits``
array) and Shopify orders (15 %; 18-digit ids).

with index      one gunicorn (``project.wsgi``, 2 sync workers, the bench settings) and a staff
                session; per search one warm-up, then median and max of ``--repeats``
                sequential ``GET /webhooks/api/events/?payload.…`` (client wall time, the first
                page of 50); the same for the admin's changelist searched with ``path=value``
                (Django's test client in this process, server time); every answer checked
                against a count in SQL; then ``EXPLAIN (ANALYZE, BUFFERS)`` of the API page's
                query. Target: every API median and max < 300 ms.
without index   the index dropped; the same, ``--repeats-without`` times.

The searches: a customer of 1-2 events, one of thousands, none, an amount (number: the string
and the typed containment OR'ed), an event type (12 % of the table), two terms ANDed, and the
old api_version (9 % of the table, all of it old). The timing holds /tmp/webhooks-bench.lock
(the seeding and the index build do not). Prints a table, the plans, then one JSON line. Exit
status 1 if an answer was not 200 or listed other events than SQL counts (a missed target only
prints "MISSED").
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import psycopg

from bench.common import (
    PG_ADMIN_URL,
    Gunicorn,
    bench_lock,
    create_named_database,
    drop_named_database,
    leg_env,
    median,
)
from bench.common import terminate_on_sigterm as unwind_on_sigterm

DATABASE = os.environ.get("BENCH_SEARCH_DATABASE", "bench_search")
DATABASE_URL = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + DATABASE
TABLE = "webhooks_app_webhookevent"
#: Migration 0008's index and statement.
INDEX = "webhooks_ev_payload_gin_idx"
CREATE_INDEX = f"CREATE INDEX CONCURRENTLY {INDEX} ON {TABLE} USING gin (payload jsonb_path_ops)"
TARGET_MS = 300
GUNICORN_WORKERS = 2
PAGE_SIZE = 50  # webhooks_app.api.EventPagination
#: Stripe customers; customer k is drawn as floor(CUSTOMERS * r ** SKEW): the first few are in
#: thousands of events, the last ones in one or two.
CUSTOMERS = 200_000
SKEW = 2.5
#: The oldest events' share whose Stripe payloads carry the old ``api_version``: a value
#: frequent enough for the planner to scan ``received_at`` for it, found only far back.
LEGACY_SHARE = 0.15
CHUNK = 250_000
HISTORY_DAYS = 60


def progress(message: str) -> None:
    print(f"[search {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the database ----------------------------------------------------------------------------


def execute(statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def one(statement: str, params: dict[str, Any] | None = None) -> Any:
    return execute(statement, params)[0][0]


def float_of(statement: str) -> float:
    return float(one(statement))  # numeric comes back as Decimal


def seed(rows: int) -> dict[str, Any]:
    """``rows`` events over the last 60 days, ids in time order, without the GIN index; then
    the index built as the migration builds it, and VACUUM ANALYZE."""
    execute(f"DROP INDEX {INDEX}")
    start = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    step = timedelta(days=HISTORY_DAYS) / rows
    started = time.perf_counter()
    for first in range(1, rows + 1, CHUNK):
        last = min(rows, first + CHUNK - 1)
        execute(SEED, {"first": first, "last": last, "start": start, "step": step,
                       "customers": CUSTOMERS, "skew": SKEW,
                       "legacy": int(rows * LEGACY_SHARE)})  # fmt: skip
        progress(f"seeded {last} events")
    seeded = time.perf_counter() - started
    progress("building the GIN index (CREATE INDEX CONCURRENTLY)")
    started = time.perf_counter()
    execute(CREATE_INDEX)
    built = time.perf_counter() - started
    started = time.perf_counter()
    execute(f"VACUUM ANALYZE {TABLE}")
    return {
        "rows": rows,
        "seed_seconds": seeded,
        "index_seconds": built,
        "vacuum_seconds": time.perf_counter() - started,
        "table_mb": float_of(f"SELECT pg_table_size('{TABLE}') / 1048576.0"),
        "index_mb": float_of(f"SELECT pg_relation_size('{INDEX}') / 1048576.0"),
        "payload_bytes_avg": float_of(f"SELECT avg(pg_column_size(payload)) FROM {TABLE}"),
    }


#: One chunk of events: random picks per row, then the provider's payload. Stripe's customer of
#: row i is ``cus_`` and 14 hex digits of md5(k), k skewed (see CUSTOMERS).
SEED = """
WITH picks AS (
    SELECT i, md5(i::text) AS h, random() AS r_kind, random() AS r_customer,
           random() AS r_pick, random() AS r_time,
           %(start)s::timestamptz + (i - 1 + random()) * %(step)s::interval AS received_at
    FROM generate_series(%(first)s::int, %(last)s::int) AS i
),
shaped AS (
    SELECT p.*,
           CASE WHEN r_kind < 0.60 THEN 'stripe' WHEN r_kind < 0.85 THEN 'github'
                ELSE 'shopify' END AS source,
           (ARRAY['payment_intent.succeeded', 'invoice.paid', 'charge.refunded',
                  'customer.subscription.updated', 'checkout.session.completed'])
               [1 + floor(r_pick * 5)::int] AS stripe_type,
           'cus_' || substr(md5(floor(%(customers)s * power(r_customer, %(skew)s))::text), 1, 14)
               AS customer,
           (1 + floor(r_pick * 200)::int) * 100 AS amount
    FROM picks p
),
built AS (
    SELECT s.*,
        CASE s.source
        WHEN 'stripe' THEN jsonb_build_object(
            'id', 'evt_' || substr(h, 1, 24), 'object', 'event',
            'api_version', CASE WHEN i <= %(legacy)s THEN '2023-10-16' ELSE '2024-06-20' END,
            'created', extract(epoch FROM received_at)::bigint, 'livemode', true,
            'pending_webhooks', 1, 'type', stripe_type,
            'data', jsonb_build_object('object', jsonb_build_object(
                'id', 'pi_' || substr(h, 5, 24), 'object', split_part(stripe_type, '.', 1),
                'amount', amount, 'amount_received', amount,
                'currency', (ARRAY['eur', 'usd', 'gbp'])[1 + (i %% 3)],
                'customer', customer, 'status', 'succeeded',
                'description', 'Order ' || i || ' for ' || customer,
                'metadata', jsonb_build_object('order_id', i::text,
                                               'channel', (ARRAY['web', 'app', 'pos'])[1 + (i %% 3)]))),
            'request', jsonb_build_object('id', 'req_' || substr(h, 9, 14),
                                          'idempotency_key', md5(h)))
        WHEN 'github' THEN jsonb_build_object(
            'ref', 'refs/heads/' || (ARRAY['main', 'develop', 'release'])[1 + (i %% 3)],
            'before', md5(h) || substr(h, 1, 8), 'after', h || substr(md5(h), 1, 8),
            'repository', jsonb_build_object('id', 1000 + (i %% 400),
                'full_name', 'acme/service-' || (i %% 400), 'private', (i %% 2) = 0),
            'pusher', jsonb_build_object('name', 'dev-' || (i %% 900)),
            'sender', jsonb_build_object('login', 'dev-' || (i %% 900), 'id', 5000 + (i %% 900)),
            'commits', jsonb_build_array(jsonb_build_object(
                'id', h || substr(md5(h), 1, 8), 'message', 'Fix issue #' || (i %% 5000),
                'author', jsonb_build_object('name', 'Dev ' || (i %% 900),
                                             'email', 'dev-' || (i %% 900) || '@example.com'))))
        ELSE jsonb_build_object(
            'id', 820982911946154508 + i, 'email', 'buyer-' || (i %% 50000) || '@example.com',
            'currency', 'EUR', 'financial_status', 'paid',
            'total_price', to_char(amount / 100.0, 'FM9990.00'),
            'customer', jsonb_build_object('id', 115310627314723954 + (i %% 50000),
                                           'email', 'buyer-' || (i %% 50000) || '@example.com'),
            'line_items', jsonb_build_array(jsonb_build_object(
                'id', 866550311766439020 + i, 'sku', 'SKU-' || (i %% 700), 'quantity', 1 + (i %% 4),
                'price', to_char(amount / 100.0, 'FM9990.00'))))
        END AS payload
    FROM shaped s
)
INSERT INTO webhooks_app_webhookevent
    (source, webhook_id, event_type, workflow_name, payload, headers, status, attempts, result,
     error, history, received_at, started_at, finished_at, waiting_for)
SELECT source, source || '-' || h, CASE source WHEN 'stripe' THEN stripe_type
           WHEN 'github' THEN 'push' ELSE 'orders/paid' END,
       source || '.record', payload,
       jsonb_build_object('content-type', 'application/json', 'user-agent', source || '-hooks/1.0',
                          'content-length', length(payload::text)::text),
       'succeeded', 1, '{"ok": true}'::jsonb, '',
       jsonb_build_array(jsonb_build_object('attempt', 1, 'outcome', 'succeeded',
                                            'started_at', received_at, 'duration_ms', 12.5)),
       received_at, received_at + interval '20 ms', received_at + interval '33 ms', ''
FROM built
ORDER BY i
"""


# -- the searches ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Search:
    name: str
    terms: dict[str, str]  # path -> value, ANDed

    def query(self) -> str:
        return urlencode({f"payload.{path}": value for path, value in self.terms.items()})

    def containment(self) -> tuple[str, dict[str, Any]]:
        """The same condition in SQL, written here without the app's code: each term's string
        form, or its number."""
        clauses, params = [], {}
        for n, (path, value) in enumerate(self.terms.items()):
            forms: list[Any] = [value]
            if value.lstrip("-").isdigit():
                forms.append(int(value))
            alternatives = []
            for m, form in enumerate(forms):
                document: Any = form
                for key in reversed(path.split(".")):
                    document = {key: document}
                params[f"d{n}_{m}"] = json.dumps(document)
                alternatives.append(f"payload @> %(d{n}_{m})s::jsonb")
            clauses.append("(" + " OR ".join(alternatives) + ")")
        return " AND ".join(clauses), params

    def count(self) -> int:
        where, params = self.containment()
        return int(one(f"SELECT count(*) FROM {TABLE} WHERE {where}", params))


def searches() -> list[Search]:
    """The searches, their values picked from the seeding's rules (the most frequent customer
    is k = 0) or from the table (a customer of one or two events)."""

    def customer(k: int) -> str:
        return "cus_" + one("SELECT substr(md5(%(k)s::text), 1, 14)", {"k": str(k)})

    rare = next(
        c for k in range(CUSTOMERS - 1, 0, -1)
        if 1 <= Search("", {"data.object.customer": (c := customer(k))}).count() <= 2
    )  # fmt: skip
    return [
        Search("rare customer", {"data.object.customer": rare}),
        Search("common customer", {"data.object.customer": customer(0)}),
        Search("no such customer", {"data.object.customer": "cus_nobody000000"}),
        Search("amount (number)", {"data.object.amount": "4200"}),
        Search("event type", {"type": "invoice.paid"}),
        Search("customer + type", {"data.object.customer": customer(1), "type": "invoice.paid"}),
        Search("old api_version", {"api_version": "2023-10-16"}),
    ]


# -- timing ----------------------------------------------------------------------------------


def staff_client(env: dict[str, str]) -> Any:
    """Django's test client logged in as a superuser, in this process with the bench settings
    (its session cookie serves the requests to gunicorn too)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_superuser("search", "search@example.com", "unused")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    return client


def session_cookie(client: Any) -> str:
    return f"sessionid={client.cookies['sessionid'].value}"


def get(base: str, path: str, cookie: str) -> tuple[int, float, dict[str, Any]]:
    address = urlsplit(base)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=120)
    try:
        started = time.perf_counter()
        connection.request("GET", path, headers={"Cookie": cookie, "Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        connection.close()
    return response.status, elapsed, json.loads(body) if response.status == 200 else {}


def time_search(
    base: str, cookie: str, search: Search, repeats: int, expected: int
) -> dict[str, Any]:
    path = f"/webhooks/api/events/?{search.query()}"
    times, wrong = [], []
    for run in range(repeats + 1):  # the first is the warm-up
        status, elapsed, body = get(base, path, cookie)
        listed = len(body.get("results", []))
        if status != 200 or listed != min(expected, PAGE_SIZE):
            wrong.append(f"{search.name}: answered {status} with {listed} events, {expected} match")
        if run:
            times.append(elapsed)
    return {"median_ms": median(times), "max_ms": max(times), "runs_ms": times, "wrong": wrong}


def time_admin(client: Any, search: Search, repeats: int, expected: int) -> dict[str, Any]:
    """The changelist searched with ``path=value`` terms, in this process (server time)."""
    from django.test import override_settings
    from django.urls import reverse

    from webhooks_app.admin import CappedCountPaginator

    shown = min(expected, CappedCountPaginator.CAP + 1)
    counted = f"{shown} webhook event{'' if shown == 1 else 's'}\n"  # as bench.bulk checks it
    query = " ".join(f"{path}={value}" for path, value in search.terms.items())
    times, wrong = [], []
    # bench.urls has the app and the floors, not the admin: the demo URLconf has both.
    with override_settings(ROOT_URLCONF="project.urls"):
        url = reverse("admin:webhooks_app_webhookevent_changelist")
        for run in range(repeats + 1):  # the first is the warm-up
            started = time.perf_counter()
            response = client.get(url, {"q": query})
            elapsed = (time.perf_counter() - started) * 1000
            if response.status_code != 200 or counted not in response.content.decode():
                wrong.append(f"admin {search.name}: answered {response.status_code}, not "
                             f"showing {counted.strip()!r}")  # fmt: skip
            if run:
                times.append(elapsed)
    return {"median_ms": median(times), "max_ms": max(times), "runs_ms": times, "wrong": wrong}


def explain(search: Search) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the API's first page: its queryset, as the view and
    the cursor pagination build it, with the plan the view chooses (``search.planned``; this
    process has the bench settings from staff_client)."""
    from webhooks_app import search as payload_search
    from webhooks_app.api import EventPagination
    from webhooks_app.models import WebhookEvent

    terms = [payload_search.Term.parse(path, value) for path, value in search.terms.items()]
    page = (
        WebhookEvent.objects.filter(payload_search.matching(terms))
        .order_by(*EventPagination.ordering)[: PAGE_SIZE + 1]
    )  # fmt: skip
    with payload_search.planned(terms, PAGE_SIZE):
        return page.explain(analyze=True, buffers=True)


def measure(
    env: dict[str, str], work: Path, client: Any, found: list[Search], counts: dict[str, int],
    repeats: int, label: str,
) -> dict[str, Any]:  # fmt: skip
    """The API through gunicorn, then the admin in process, then the plans."""
    load = os.getloadavg()[0]
    progress(f"{label}: timing {len(found)} searches through gunicorn (load {load:.2f})")
    with Gunicorn(env, GUNICORN_WORKERS, work / f"gunicorn-{label}.log") as server:
        cookie = session_cookie(client)
        for _ in range(10):  # every worker imported and connected
            if (status := get(server.base, "/webhooks/api/events/", cookie)[0]) != 200:
                raise RuntimeError(f"warm-up answered {status}")
        timed = {
            s.name: time_search(server.base, cookie, s, repeats, counts[s.name]) for s in found
        }
    for s in found:
        timed[s.name]["admin"] = time_admin(client, s, repeats, counts[s.name])
        timed[s.name]["plan"] = explain(s)
    return {"loadavg_at_start": load, "searches": timed}


# -- report ----------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def table(report: dict[str, Any]) -> str:
    seeded, with_, without = report["seed"], report["with_index"], report["without_index"]
    lines = [
        "",
        f"search: PostgreSQL {report['postgres']}, {seeded['rows']} events seeded in "
        f"{seeded['seed_seconds']:.1f} s; GIN index built CONCURRENTLY in "
        f"{seeded['index_seconds']:.1f} s, {seeded['index_mb']:.0f} MB (table "
        f"{seeded['table_mb']:.0f} MB, payloads {seeded['payload_bytes_avg']:.0f} B on average); "
        f"{os.cpu_count()} CPUs; load {with_['loadavg_at_start']:.2f} when timing with the "
        f"index, {without['loadavg_at_start']:.2f} without",
        f"{'':<22}{'':>8}{'with index: API':>20}{'admin':>14}{'no index: API':>20}",
        f"{'search':<22}{'matches':>8}{'median':>10}{'max':>10}{'median':>7}{'max':>7}"
        f"{'median':>10}{'max':>10}  ms; target: API < {TARGET_MS}",
    ]
    for name, count in report["counts"].items():
        api, none = with_["searches"][name], without["searches"][name]
        admin = api["admin"]
        met = api["median_ms"] < TARGET_MS and api["max_ms"] < TARGET_MS
        lines.append(
            f"{name:<22}{count:>8}{api['median_ms']:>10.1f}{api['max_ms']:>10.1f}"
            f"{admin['median_ms']:>7.0f}{admin['max_ms']:>7.0f}"
            f"{none['median_ms']:>10.1f}{none['max_ms']:>10.1f}  {verdict(met)}"
        )
    lines.append(
        f"(API: {GUNICORN_WORKERS} sync gunicorn workers, client wall time; admin: the "
        "changelist in process, server time)"
    )
    for label, phase in (("with index", with_), ("without index", without)):
        for name, timed in phase["searches"].items():
            lines += ["", f"EXPLAIN (ANALYZE, BUFFERS), {label}: {name}", timed["plan"]]
    return "\n".join(lines)


# -- driver ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="events seeded")
    parser.add_argument("--repeats", type=int, default=7, help="timed requests per search")
    parser.add_argument(
        "--repeats-without", type=int, default=3, help="timed requests per search, no index"
    )
    parser.add_argument("--keep", action="store_true", help=f"keep {DATABASE} (index rebuilt)")
    parser.add_argument("--smoke", action="store_true", help="CI: 20 000 rows, 2 requests each")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.repeats, args.repeats_without = 20_000, 2, 1
    return args


def main() -> int:
    args = parse_args()
    unwind_on_sigterm()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="webhooks-bench-search-"))
    env = leg_env("postgres", work, queue=f"bench-search-{uuid.uuid4().hex[:8]}")
    env["DATABASE_URL"] = DATABASE_URL
    try:
        progress(f"creating {DATABASE} and seeding {args.rows} events")
        create_named_database(DATABASE, env)
        seeded = seed(args.rows)
        found = searches()
        counts = {s.name: s.count() for s in found}
        client = staff_client(env)
        with bench_lock():
            with_index = measure(env, work, client, found, counts, args.repeats, "with index")
            execute(f"DROP INDEX {INDEX}")
            without_index = measure(
                env, work, client, found, counts, args.repeats_without, "without index"
            )
        from django.db import connections

        connections.close_all()
        if args.keep:
            execute(CREATE_INDEX)
        report = {"postgres": one("SHOW server_version"), "seed": seeded, "counts": counts,
                  "with_index": with_index, "without_index": without_index}  # fmt: skip
    finally:
        if not args.keep:
            drop_named_database(DATABASE)
        shutil.rmtree(work, ignore_errors=True)
    print(table(report), flush=True)
    wrong = [w for label in ("with_index", "without_index")
             for timed in report[label]["searches"].values()
             for w in (*timed["wrong"], *timed["admin"]["wrong"])]  # fmt: skip
    for finding in wrong:
        print(f"FINDING: {finding}", file=sys.stderr)
    config = {key: getattr(args, key) for key in ("rows", "repeats", "repeats_without", "smoke")}
    config |= {"cpus": os.cpu_count(), "loadavg_before": load_before,
               "loadavg_after": os.getloadavg()}  # fmt: skip
    print(json.dumps({"benchmark": "search", "config": config, "results": report}), flush=True)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
