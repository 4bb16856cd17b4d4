"""The demo project's settings (project/settings.py), in real processes: what a deployment gets
from its environment, and what a fresh checkout gets without one."""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from project.settings import development_secret
from tests.processes import REPO, manage_py

#: The variables a test below sets itself; inherited values would change what it measures.
_SCRUBBED_PREFIXES = ("DJANGO_", "WEBHOOK", "DATABASE_URL", "REDIS_URL")


def demo_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The demo settings with a private var/ directory and nothing else from the shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        WEBHOOKS_VAR_DIR=str(var_dir),
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def production_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """What the README tells a deployment to set."""
    return demo_env(
        var_dir,
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="hooks.example.com",
        WEBHOOK_SECRET_GENERIC=secrets.token_urlsafe(32),
        **extra,
    )


# -- a deployment: DEBUG off ---------------------------------------------------------------


def test_check_deploy_is_clean_with_the_production_environment(tmp_path):
    result = manage_py(production_env(tmp_path), "check", "--deploy")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "System check identified no issues (0 silenced).\n"
    assert result.stderr == ""


@pytest.mark.parametrize("secret_key", [None, "", "  "])
def test_debug_off_without_a_secret_key_refuses_to_start(tmp_path, secret_key):
    """The demo's development key is public: anyone could sign sessions with it."""
    env = production_env(tmp_path)
    del env["DJANGO_SECRET_KEY"]
    if secret_key is not None:
        env["DJANGO_SECRET_KEY"] = secret_key
    for args in (["check"], ["migrate", "--no-input"]):
        result = manage_py(env, *args)
        assert result.returncode != 0
        assert "ImproperlyConfigured: DJANGO_SECRET_KEY is not set" in result.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # nothing ran: migrate refused as well


def test_debug_on_by_default_needs_no_environment(tmp_path):
    """`make run` on a fresh checkout: no DJANGO_* variable at all."""
    result = manage_py(demo_env(tmp_path), "check")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_plain_http_deployment_turns_the_https_settings_off(tmp_path):
    env = production_env(tmp_path, DJANGO_HTTPS="false")
    result = manage_py(env, "check", "--deploy")
    assert result.returncode == 0, result.stderr
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


# -- SQLite, however it is configured ------------------------------------------------------

#: Two of these run at once: each reads, then writes, inside one transaction (as the receiving
#: view does when it looks for a duplicate before inserting). Deferred transactions let both
#: read; the second to write then fails at once with "database is locked".
_READ_THEN_WRITE = """
import os, sys, time, pathlib
import django
django.setup()
from django.db import connection, transaction
me, other = sys.argv[1], sys.argv[2]
here = pathlib.Path(os.environ["WEBHOOKS_VAR_DIR"])
(here / f"{me}-begin").touch()
while not (here / f"{other}-begin").exists():
    time.sleep(0.01)
with transaction.atomic(), connection.cursor() as cursor:
    cursor.execute("SELECT COUNT(*) FROM deliveries")
    (here / f"{me}-read").touch()
    deadline = time.monotonic() + 1
    while not (here / f"{other}-read").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    cursor.execute("INSERT INTO deliveries VALUES (%s)", [me])
"""


def test_sqlite_through_database_url_waits_instead_of_failing(tmp_path):
    database = tmp_path / "through-url.sqlite3"
    with sqlite3.connect(database) as db:
        db.execute("CREATE TABLE deliveries (name TEXT)")
    env = demo_env(tmp_path, DATABASE_URL=f"sqlite:///{database}")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _READ_THEN_WRITE, me, other],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    errors = [writer.communicate(timeout=60)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    with sqlite3.connect(database) as db:
        assert sorted(db.execute("SELECT name FROM deliveries")) == [("a",), ("b",)]


@pytest.mark.parametrize(
    "settings_module", ["project.settings", "tests.settings", "bench.settings"]
)
def test_no_sqlite_warning_for_the_projects_own_settings(tmp_path, settings_module):
    for env in (
        demo_env(tmp_path, DJANGO_SETTINGS_MODULE=settings_module),
        demo_env(
            tmp_path,
            DJANGO_SETTINGS_MODULE=settings_module,
            DATABASE_URL=f"sqlite:///{tmp_path / 'url.sqlite3'}",
        ),
    ):
        env["BENCH_VAR_DIR"] = str(tmp_path)
        result = manage_py(env, "check")
        assert result.returncode == 0, result.stderr
        assert "webhooks_app.W005" not in result.stderr


# -- var/dev-secret ------------------------------------------------------------------------


@pytest.fixture
def no_secret_in_env(monkeypatch):
    monkeypatch.delenv("WEBHOOK_SECRET_GENERIC", raising=False)
    monkeypatch.delenv("WEBHOOK_SECRET_DEFAULT", raising=False)


def test_dev_secret_is_private_from_its_first_byte(tmp_path, monkeypatch, no_secret_in_env):
    """No umask and no chmod afterwards: a file made readable, then fixed, was readable."""

    def no_chmod(*args, **kwargs):
        raise AssertionError("the secret was written first and made private afterwards")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    previous = os.umask(0)
    try:
        secret = development_secret(tmp_path)
    finally:
        os.umask(previous)
    path = tmp_path / "dev-secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == secret
    assert len(secret) >= 32
    assert [p.name for p in tmp_path.iterdir()] == ["dev-secret"]  # no temporary file left


def dev_secrets_made_at_once(var_dir: Path, count: int) -> list[str | None]:
    """``count`` threads released together, each making (or reading) the secret of ``var_dir``."""
    start = threading.Barrier(count)
    found: list[str | None] = []

    def make() -> None:
        start.wait()
        found.append(development_secret(var_dir))

    threads = [threading.Thread(target=make) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return found


def test_simultaneous_starts_agree_on_one_dev_secret(tmp_path, no_secret_in_env):
    for attempt in range(20):
        var_dir = tmp_path / str(attempt)
        var_dir.mkdir()
        found = dev_secrets_made_at_once(var_dir, 8)
        assert len(set(found)) == 1, found
        assert found[0] == (var_dir / "dev-secret").read_text()
        assert len(found[0] or "") >= 32
