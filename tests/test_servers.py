"""The servers the outage soak owns (bench/servers.py): real ones, broken for real, and gone
when the run ends, also when it fails. ``bench.soak --faults --smoke`` (CI) runs the outages
themselves against the app; this is the promise that they never leak into the machine."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import pytest
import redis

from bench.common import wait_until
from bench.servers import Namespace, PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.process

SHARED_PORTS = {5432, 6379}


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def alive(pid: int) -> bool:
    """Running, or stopped; not a zombie that its new parent (init) has yet to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


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
