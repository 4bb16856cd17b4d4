"""The servers the outage soak owns (bench/servers.py): real ones, broken for real, and gone
when the run ends, also when it fails. ``bench.soak --faults --smoke`` (CI) runs the outages
themselves against the app; this is the promise that they never leak into the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
import redis

from bench.common import REPO, wait_until
from bench.servers import Namespace, PrivatePostgres, PrivateRedis, alive, sweep_leftovers

pytestmark = pytest.mark.process

SHARED_PORTS = {5432, 6379}


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root (CI runs as root)")
def test_every_server_is_gone_after_a_failure_inside_the_run():
    seen = {}
    with (
        pytest.raises(RuntimeError, match="the test failed here"),
        Namespace() as namespace,
        PrivatePostgres(namespace) as pg,
        PrivateRedis() as rd,
    ):
        assert not {pg.port, rd.port} & SHARED_PORTS
        with psycopg.connect(pg.url(), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(rd.url).ping()
        seen = {
            "postmaster": int((pg.data / "postmaster.pid").read_text().split()[0]),
            "redis": rd.popen.pid if rd.popen else 0,
            "pg_root": pg.root,
            "redis_root": rd.root,
            "namespace": namespace.name,
            "link": namespace.outer,
        }
        raise RuntimeError("the test failed here")
    assert not alive(seen["postmaster"])
    assert not alive(seen["redis"])
    assert not seen["pg_root"].exists() and not seen["redis_root"].exists()
    assert seen["namespace"] not in namespaces()
    assert not os.path.exists(f"/sys/class/net/{seen['link']}")


def test_an_immediate_stop_is_an_outage_and_a_start_ends_it():
    with PrivatePostgres() as pg, PrivateRedis() as rd:
        pg.execute("CREATE TABLE t (n int)")
        conn = psycopg.connect(pg.url(), autocommit=True, connect_timeout=5)
        pg.stop("immediate")
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        pg.start()
        with psycopg.connect(pg.url(), connect_timeout=5) as again:
            assert again.execute("SELECT count(*) FROM t").fetchone() == (0,)
        client = redis.Redis.from_url(rd.url)
        client.rpush("queue", "task")
        rd.kill()
        with pytest.raises(redis.ConnectionError):
            client.llen("queue")
        rd.start()
        assert client.llen("queue") == 0  # no persistence: the queue died with the server
        client.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root (CI runs as root)")
def test_a_cut_link_loses_packets_until_it_comes_back():
    with Namespace() as namespace, PrivatePostgres(namespace) as pg:
        conn = psycopg.connect(pg.url(), autocommit=True, tcp_user_timeout=2000)
        namespace.set_inner_link(up=False)
        with pytest.raises(psycopg.OperationalError, match="timed out"):
            conn.execute("SELECT 1")
        namespace.set_inner_link(up=True)
        assert wait_until(lambda: answers(pg), timeout=10, interval=0.2)


def answers(pg: PrivatePostgres) -> bool:
    """A new connection works (right after the link is back, the first may still fail)."""
    try:
        with psycopg.connect(pg.url(), connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)
    except psycopg.OperationalError:
        return False


RUN_THEN_HANG = """
import json, sys, time
from bench.servers import Namespace, PrivatePostgres, PrivateRedis
namespace = Namespace()
pg, rd = PrivatePostgres(namespace), PrivateRedis()
postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
print(json.dumps([postmaster, rd.popen.pid, str(pg.root), str(rd.root), namespace.name]))
sys.stdout.flush()
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root (CI runs as root)")
def test_what_a_run_killed_with_sigkill_left_is_swept_by_the_next_one():
    """No ``finally`` runs in a SIGKILLed soak: the next run's deployment sweeps its servers."""
    run = subprocess.Popen(
        [sys.executable, "-c", RUN_THEN_HANG], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        postmaster, redis_pid, pg_root, redis_root, name = json.loads(run.stdout.readline())
    finally:
        run.kill()
        run.wait(10)
    assert alive(postmaster) and alive(redis_pid) and name in namespaces()
    removed = sweep_leftovers()
    assert pg_root in removed and redis_root in removed and f"namespace {name}" in removed
    assert wait_until(lambda: not alive(postmaster) and not alive(redis_pid), timeout=10)
    assert not Path(pg_root).exists() and not Path(redis_root).exists()
    assert name not in namespaces()
