"""The database of ``bench.bulk``: created, seeded with a realistic million events in SQL, dropped.

A million events through the ORM (or the app's ingest path) would take tens of minutes; one
``INSERT ... SELECT ... FROM generate_series`` writes them in under a minute, JSON included, and
the resulting table looks like production's to the planner and to the admin: ids in the order of
``received_at``, a few sources and workflows, mostly successes, payloads of about 400 bytes.

No Django here, like bench/common.py: only psycopg, with the schema that ``manage.py migrate``
made (the driver runs it first).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

from bench.common import PG_ADMIN_URL, create_named_database, drop_named_database

DATABASE = os.environ.get("BENCH_BULK_DATABASE", "bench_bulk")
DATABASE_URL = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + DATABASE
TABLE = "webhooks_app_webhookevent"
#: The statuses cleanup may delete (webhooks_app.models.FINISHED_STATUSES, without Django).
FINISHED = ("succeeded", "ignored", "dead")
#: (status, share), in this order: the top-up draws only from the finished head of the list.
STATUSES = [("succeeded", 0.93), ("ignored", 0.04), ("dead", 0.02), ("failed", 0.006),
            ("pending", 0.004)]  # fmt: skip
#: (source, share, user agent, webhook id prefix, [(event type, workflow)]): 10 workflows.
SOURCES = [
    ("generic", 0.40, "python-requests/2.32.3", "wh-",
     [("", "noop"), ("", "crm.sync_contact")]),
    ("stripe", 0.30, "Stripe/1.0 (+https://stripe.com/docs/webhooks)", "evt_",
     [("payment_intent.succeeded", "stripe.record_payment"), ("invoice.paid", "stripe.record_invoice"),
      ("customer.subscription.updated", "stripe.sync_subscription")]),
    ("github", 0.20, "GitHub-Hookshot/8f2c1a4", "gh-",
     [("push", "github.deploy"), ("pull_request", "github.review_ping"), ("issues", "github.triage")]),
    ("shopify", 0.10, "Shopify-Captain-Hook", "shp-",
     [("orders/create", "shopify.fulfil_order"), ("orders/paid", "shopify.record_payment")]),
]  # fmt: skip
#: The seeded history: this many days back, most of it older than the cleanup window.
HISTORY_DAYS = 60
#: Share of the events inside the cleanup window (the last ``days``): about 200 k of 1 M in 7
#: days, so the dashboard's 24 hours hold about 29 k.
RECENT_SHARE = 0.2
#: No event is seeded this close to the cleanup cutoff, so minutes between seeding and cleanup
#: do not change which events are eligible.
CUTOFF_MARGIN = timedelta(hours=1)
#: The top-up (see :func:`top_up`) is seeded over this many days before the history.
TOP_UP_DAYS = 30


# -- database --------------------------------------------------------------------------------


def create_database(env: dict[str, str]) -> None:
    """``bench_bulk`` recreated and migrated (its own database: other benchmarks use theirs)."""
    create_named_database(DATABASE, env)


def drop_database() -> None:
    drop_named_database(DATABASE)


def server_version() -> str:
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def wal_position() -> tuple[str, int]:
    """The WAL insert position and the checkpoints so far: what a phase wrote and forced."""
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute(
            "SELECT pg_current_wal_lsn()::text, checkpoints_timed + checkpoints_req"
            " FROM pg_stat_bgwriter"
        ).fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


def wal_since(start: tuple[str, int]) -> dict[str, float]:
    lsn, checkpoints = start
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", [lsn]).fetchone()
    assert row is not None
    return {"wal_mb": float(row[0]) / 2**20, "checkpoints": wal_position()[1] - checkpoints}


def vacuum_analyze() -> None:
    """As after a restore: visibility map set, statistics current (autovacuum would, later)."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))


# -- seeding ---------------------------------------------------------------------------------


Window = tuple[datetime, datetime]


@dataclass(frozen=True)
class Span:
    """``count`` events with ids from ``first_id``: the first ``count - recent`` spread evenly
    (ids in time order) over ``old``, the last ``recent`` over ``new``."""

    first_id: int
    count: int
    recent: int
    old: Window
    new: Window
    finished_only: bool = False


def windows(now: datetime, days: int) -> tuple[Window, Window]:
    """The history before the cleanup cutoff and the window after it, a margin off the cutoff."""
    cutoff = now - timedelta(days=days)
    old = (now - timedelta(days=HISTORY_DAYS), cutoff - CUTOFF_MARGIN)
    new = (cutoff + CUTOFF_MARGIN, now - timedelta(minutes=1))
    return old, new


def seed(rows: int, days: int, reserve: int) -> None:
    """``rows`` events over the last 60 days, ids above ``reserve`` (kept for :func:`top_up`)."""
    old, new = windows(datetime.now(UTC), days)
    recent = round(rows * RECENT_SHARE)
    insert(Span(reserve + 1, rows, recent, old, new))
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence({t}, 'id'), (SELECT max(id) FROM {i}))")
            .format(t=sql.Literal(TABLE), i=sql.Identifier(TABLE))
        )  # fmt: skip


def eligible(days: int) -> int:
    """What ``cleanup_webhook_events --days`` would delete now."""
    query = sql.SQL(
        "SELECT count(*) FROM {} WHERE status = ANY(%s) AND received_at < now() - %s"
    ).format(sql.Identifier(TABLE))
    with psycopg.connect(DATABASE_URL) as conn:
        row = conn.execute(query, [list(FINISHED), timedelta(days=days)]).fetchone()
    return int(row[0]) if row else 0


def top_up(target: int, days: int, reserve: int) -> int:
    """Add old finished events until ``target`` are eligible for cleanup; returns how many.

    They take the highest ids of the reserve and the 30 days before the seeded history, so ids
    stay in ``received_at`` order across the whole table, as in production (the cleanup's
    ``ORDER BY id`` meets the events in the order it would there).
    """
    need = target - eligible(days)
    if need <= 0:
        return 0
    if need > reserve:
        raise ValueError(f"{need} events needed, only {reserve} ids reserved")
    history_start = datetime.now(UTC) - timedelta(days=HISTORY_DAYS)
    old = (history_start - timedelta(days=TOP_UP_DAYS), history_start)
    insert(Span(reserve - need + 1, need, 0, old, old, finished_only=True))
    return need


def insert(span: Span) -> None:
    with psycopg.connect(DATABASE_URL) as conn:
        conn.execute(insert_sql(span.finished_only), parameters(span))


def parameters(span: Span) -> dict[str, object]:
    old_count = span.count - span.recent
    return {
        "first_id": span.first_id,
        "count": span.count,
        "old_count": old_count,
        "old_start": span.old[0],
        "old_step": (span.old[1] - span.old[0]) / max(old_count, 1),
        "new_start": span.new[0],
        "new_step": (span.new[1] - span.new[0]) / max(span.recent, 1),
    }


def insert_sql(finished_only: bool) -> sql.Composed:
    """The one INSERT: random picks per row, then status-dependent fields, then the JSON.

    ``received_at`` of row i lies in the i-th equal slice of its window, so ids follow time.
    """
    statuses = [(s, share) for s, share in STATUSES if s in FINISHED or not finished_only]
    scale = sum(share for _, share in statuses)
    return sql.SQL(_INSERT).format(
        table=sql.Identifier(TABLE),
        source=catalog(),
        status=pick("r_status", [(sql.Literal(s), share) for s, share in statuses]),
        scale=sql.Literal(scale),
    )


def catalog() -> sql.Composed:
    """The sources as one JSON array literal, and a CASE picking an index into it by share.

    A lookup instead of a join keeps the rows in ``generate_series`` order: ids, heap order and
    ``received_at`` agree, as in a table filled over time.
    """
    entries = [
        {"source": source, "agent": agent, "prefix": prefix, "routes": routes}
        for source, _, agent, prefix, routes in SOURCES
    ]
    return sql.SQL("{}::jsonb -> ({})").format(
        sql.Literal(json.dumps(entries)),
        pick("r_source", [(sql.Literal(i), share) for i, (_, share, *_) in enumerate(SOURCES)]),
    )


def pick(column: str, choices: list[tuple[sql.Composable, float]]) -> sql.Composed:
    """``CASE`` over a uniform random ``column``: each choice with its share (the last: the rest)."""
    parts, bound = [], 0.0
    for choice, share in choices[:-1]:
        bound += share
        parts.append(
            sql.SQL("WHEN {} < {} THEN {}").format(
                sql.Identifier(column), sql.Literal(bound), choice
            )
        )
    return sql.SQL("CASE {} ELSE {} END").format(sql.SQL(" ").join(parts), choices[-1][0])


_INSERT = """
WITH picks AS (
    SELECT %(first_id)s + i - 1 AS id, i, random() AS r_source, random() AS r_route,
           random() * {scale} AS r_status, random() AS r_time, random() AS r_ms,
           md5((%(first_id)s + i - 1)::text) AS h
    FROM generate_series(1, %(count)s) AS i
),
sourced AS (
    SELECT p.*, {source} AS c FROM picks p
),
routes AS (
    SELECT s.*, s.c -> 'routes' -> floor(s.r_route * jsonb_array_length(s.c -> 'routes'))::int AS route
    FROM sourced s
),
drawn AS (
    SELECT p.*, p.c ->> 'source' AS source, p.c ->> 'agent' AS agent,
           p.c ->> 'prefix' AS prefix, (p.c ->> 'prefix') || p.h AS webhook_id,
           p.route ->> 0 AS event_type, p.route ->> 1 AS routed,
           {status} AS status,
           CASE WHEN p.i <= %(old_count)s
                THEN %(old_start)s + (p.i - 1 + p.r_time) * %(old_step)s::interval
                ELSE %(new_start)s + (p.i - %(old_count)s - 1 + p.r_time) * %(new_step)s::interval
           END AS received_at
    FROM routes p
),
attempted AS (
    SELECT d.*,
           CASE d.status WHEN 'succeeded' THEN 1 + (d.r_ms < 0.03)::int WHEN 'dead' THEN 5
                         WHEN 'failed' THEN 1 + floor(d.r_ms * 3)::int ELSE 0 END AS attempts,
           jsonb_build_object(
               'id', d.prefix || substr(d.h, 1, 24), 'type', coalesce(nullif(d.event_type, ''), 'generic'),
               'created', extract(epoch FROM d.received_at)::bigint, 'livemode', true,
               'api_version', '2024-06-20',
               'data', jsonb_build_object('object', jsonb_build_object(
                   'id', 'obj_' || substr(d.h, 9, 20), 'amount', floor(d.r_ms * 100000)::int,
                   'currency', 'eur', 'customer', 'cus_' || substr(d.h, 3, 14),
                   'description', 'Order ' || d.id || ' for customer ' || substr(d.h, 20, 8),
                   'metadata', jsonb_build_object('order_id', d.id, 'channel', 'web',
                                                  'region', 'eu-west-1'),
                   'status', 'complete')),
               'request', jsonb_build_object('id', 'req_' || substr(d.h, 5, 16),
                                             'idempotency_key', md5(d.h))
           ) AS payload
    FROM drawn d
),
timed AS (
    SELECT a.*,
           a.received_at + (a.attempts - 1) * interval '10 minutes'
               + (20 + a.r_ms * 300) * interval '1 millisecond' AS started_at,
           5 + a.r_time * 200 AS duration_ms
    FROM attempted a
)
INSERT INTO {table} (id, source, webhook_id, event_type, workflow_name, payload, headers, status,
                     attempts, result, error, history, received_at, started_at, finished_at,
                     next_attempt_at)
SELECT t.id, t.source, t.webhook_id, t.event_type,
       CASE WHEN t.status = 'ignored' THEN '' ELSE t.routed END,
       t.payload,
       jsonb_build_object('content-type', 'application/json',
                          'content-length', length(t.payload::text)::text,
                          'user-agent', t.agent, 'x-request-id', substr(t.h, 1, 32)),
       t.status, t.attempts,
       CASE WHEN t.status = 'succeeded'
            THEN jsonb_build_object('ok', true, 'records', 1 + floor(t.r_ms * 5)::int) END,
       CASE WHEN t.status IN ('dead', 'failed')
            THEN 'RuntimeError: upstream answered 503 Service Unavailable for order ' || t.id
                 || ' (https://api.example.com/v2/orders/' || substr(t.h, 1, 12) || ')'
            ELSE '' END,
       coalesce((
           SELECT jsonb_agg(jsonb_build_object(
               'attempt', n,
               'started_at', t.started_at - (t.attempts - n) * interval '10 minutes',
               'finished_at', t.started_at - (t.attempts - n) * interval '10 minutes'
                              + t.duration_ms * interval '1 millisecond',
               'duration_ms', round(t.duration_ms::numeric, 1),
               'outcome', CASE WHEN n = t.attempts AND t.status = 'succeeded'
                               THEN 'succeeded' ELSE 'failed' END)
               || CASE WHEN n < t.attempts OR t.status <> 'succeeded'
                       THEN jsonb_build_object('error', 'RuntimeError: upstream answered 503')
                       ELSE '{{}}' END ORDER BY n)
           FROM generate_series(1, t.attempts) AS n), '[]'::jsonb),
       t.received_at,
       CASE WHEN t.attempts > 0 THEN t.started_at END,
       CASE WHEN t.attempts > 0 THEN t.started_at + t.duration_ms * interval '1 millisecond' END,
       CASE WHEN t.status = 'failed' THEN t.started_at + interval '30 minutes' END
FROM timed t
"""
