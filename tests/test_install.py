"""Install and first run as a newcomer meets them (issue #12): the quickstart's install section
(docs/quickstart.md) followed literally in a fresh ``django-admin startproject``, the demo's
console, and what ``make run`` / ``make test`` install.

The quickstart marks each install step with ``<!-- install:NAME -->`` before its code block; the
install test runs exactly those blocks, changing only what a test must: ``pip`` installs into a
private folder without dependencies (they are this virtualenv's), and the web server listens on
a free port instead of 8000.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.processes import REPO, Process, free_port, running, wait_until

README = REPO / "docs" / "quickstart.md"
SNIPPET = re.compile(r"<!-- install:(?P<name>[\w-]+) -->\n```\w+\n(?P<code>.*?)\n```", re.S)
INSTALL_STEPS = ["pip", "workflow", "settings", "urls", "migrate", "secret", "run", "sender"]
#: Where the README's commands and sender expect the web server (runserver's default).
README_BASE_URL = "http://127.0.0.1:8000"
#: Variables of this test run that a fresh shell would not have.
_SCRUBBED_PREFIXES = ("DJANGO_", "WEBHOOK", "DATABASE_URL", "REDIS_URL", "PYTHONPATH")


def readme_steps() -> dict[str, str]:
    return {match["name"]: match["code"] for match in SNIPPET.finditer(README.read_text())}


def fresh_shell(**extra: str) -> dict[str, str]:
    """A shell with this virtualenv activated (``python`` is its interpreter) and nothing of
    the test run's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def commands(snippet: str) -> list[list[str]]:
    """The shell lines of a snippet, comments dropped, ``python`` as this interpreter."""
    found = []
    for line in snippet.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            found.append([sys.executable if words[0] == "python" else words[0], *words[1:]])
    return found


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{shlex.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def test_the_readme_marks_every_install_step():
    assert list(readme_steps()) == INSTALL_STEPS


def checkout_copy(destination: Path) -> Path:
    """What a checkout holds for pip, copied so that the build leaves nothing in this tree."""
    destination.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, destination / name)
    shutil.copytree(
        REPO / "webhooks_app",
        destination / "webhooks_app",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    return destination


def event_row(project: Path, webhook_id: str) -> tuple[str, str]:
    """The event's status and result, read from the project's SQLite file."""
    with sqlite3.connect(project / "db.sqlite3") as db:
        return db.execute(
            "SELECT status, result FROM webhooks_app_webhookevent WHERE webhook_id = ?",
            [webhook_id],
        ).fetchone()


def event_status(project: Path, webhook_id: str) -> str | None:
    row = event_row(project, webhook_id)
    return row[0] if row else None


@pytest.mark.process
def test_a_fresh_startproject_installed_from_the_built_wheel_as_the_quickstart_says(tmp_path):
    steps = readme_steps()
    site = tmp_path / "site"
    project = tmp_path / "project"
    project.mkdir()
    shell = fresh_shell(PYTHONPATH=str(site))  # where pip --target put the app

    # pip install /path/to/webhooks_app, as the built wheel (the dependencies are this
    # virtualenv's: a fresh one would fetch them from the package index on every run)
    [pip] = commands(steps["pip"])
    assert pip == ["pip", "install", "/path/to/webhooks_app"]
    dist = tmp_path / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
         str(checkout_copy(tmp_path / "checkout"))],
        tmp_path, shell,
    )  # fmt: skip
    [wheel] = dist.glob("webhooks_app-*.whl")
    run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(wheel)],
        tmp_path, shell,
    )  # fmt: skip
    for shipped in ("py.typed", "samples/stripe/invoice.paid.json", "templates", "static"):
        assert (site / "webhooks_app" / shipped).exists(), f"the wheel lacks {shipped}"
    run([sys.executable, "-m", "django", "startproject", "mysite", str(project)], tmp_path, shell)
    run([sys.executable, "manage.py", "startapp", "myapp"], project, shell)
    workflow = steps["workflow"]
    assert workflow.startswith("# myapp/workflows.py\n")
    (project / "myapp" / "workflows.py").write_text(workflow + "\n")
    for snippet, module in (("settings", "settings.py"), ("urls", "urls.py")):
        with (project / "mysite" / module).open("a") as file:
            file.write("\n" + steps[snippet] + "\n")

    # migrate before any secret: it must succeed (a warning says what is missing)
    [migrate] = commands(steps["migrate"])
    migrated = run(migrate, project, shell)
    assert "(webhooks_app.W006)" in migrated.stderr
    assert "ERRORS" not in migrated.stderr

    # the secret, exactly as the README's line makes it
    secret = run(
        ["bash", "-c", steps["secret"] + '\nprintf %s "$WEBHOOK_SECRET_GENERIC"'], project, shell
    ).stdout
    assert len(secret) >= 32
    shell["WEBHOOK_SECRET_GENERIC"] = secret
    checked = run([sys.executable, "manage.py", "check"], project, shell)
    assert (checked.stdout, checked.stderr) == (
        "System check identified no issues (0 silenced).\n",
        "",
    )

    runserver, qcluster = commands(steps["run"])
    assert runserver[1:] == ["manage.py", "runserver"] and qcluster[1:] == ["manage.py", "qcluster"]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    web = Process(
        "install-runserver", [*runserver, "--noreload", f"127.0.0.1:{port}"], shell, project
    )
    cluster = Process("install-qcluster", qcluster, shell, project)
    with running(web, cluster):
        wait_until(lambda: _answers(f"{base_url}/webhooks/health/"), timeout=30, interval=0.2)
        sender = steps["sender"]
        assert sender.count(README_BASE_URL) == 1
        (project / "send_webhook.py").write_text(sender.replace(README_BASE_URL, base_url))
        status, answer = run([sys.executable, "send_webhook.py"], project, shell).stdout.split(
            " ", 1
        )
        assert (status, json.loads(answer)["status"]) == ("202", "accepted")
        wait_until(lambda: event_status(project, "evt-0001") == "succeeded", timeout=30)
        assert json.loads(event_row(project, "evt-0001")[1]) == {"welcomed": 42}
        status, answer = run([sys.executable, "send_webhook.py"], project, shell).stdout.split(
            " ", 1
        )
        assert (status, json.loads(answer)["status"]) == ("200", "duplicate")
    assert "webhooks_app.E003" not in web.output()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


# -- the demo's console --------------------------------------------------------------------

#: The minutely recovery schedule's run, as django-q2's scheduler does it, then one line of
#: each kind that must still show.
_SCHEDULER_PASS = """
import logging
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)  # creates the recovery schedule, due now
from django_q.scheduler import scheduler
from webhooks_app import queue
scheduler(broker=queue.broker())
print("queued", queue.broker().queue_size())
logging.getLogger("django-q").warning("a django-q2 warning")
logging.getLogger("webhooks_app").info("an app line")
"""
DEMO_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR) \S+ .*$")


def scheduler_pass(settings_module: str, var_dir: Path) -> subprocess.CompletedProcess[str]:
    env = fresh_shell(
        DJANGO_SETTINGS_MODULE=settings_module, WEBHOOKS_VAR_DIR=str(var_dir), PYTHONPATH=str(REPO)
    )
    return run([sys.executable, "-c", _SCHEDULER_PASS], REPO, env)


@pytest.mark.process
def test_the_demo_console_has_one_format_and_no_per_task_info(tmp_path):
    """django-q2 logs four INFO lines a minute for the recovery schedule alone, in a format of
    its own. The demo shows its warnings, in the demo's format, and none of those."""
    demo = scheduler_pass("project.settings", tmp_path / "demo")
    assert int(demo.stdout.removeprefix("queued ")) >= 1  # the recovery schedule did run
    lines = demo.stderr.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "WARNING django-q a django-q2 warning",
        "INFO webhooks_app an app line",
    ]
    assert all(DEMO_LINE.match(line) for line in lines), lines
    # The same pass where LOGGING leaves django-q2 alone (the test settings): what the demo hid.
    bare = scheduler_pass("tests.settings", tmp_path / "bare")
    assert "[Q] INFO" in bare.stderr and "from schedule [webhooks_app:recover]" in bare.stderr


# -- make run / make test ------------------------------------------------------------------


def make_plan(target: str, venv: Path) -> str:
    """What ``make`` would run for ``target`` with ``venv`` as the virtualenv (``make -n``)."""
    result = subprocess.run(
        ["make", "-n", target, f"VENV={venv}"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@needs_make
def test_make_run_installs_the_runtime_only(tmp_path):
    plan = make_plan("run", tmp_path / "venv")
    assert "-m pip install -q -r requirements.txt" in plan
    assert "requirements-dev.txt" not in plan


@needs_make
@pytest.mark.parametrize("target", ["test", "lint"])
def test_a_venv_that_make_run_set_up_does_not_satisfy_make_test(tmp_path, target):
    venv = tmp_path / "venv"
    assert "-m pip install -q -r requirements-dev.txt" in make_plan(target, venv)
    # What `make run` leaves behind: the interpreter and its stamp, newer than the requirements.
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed-run").touch()
    assert "pip install" not in make_plan("run", venv)
    assert "-m pip install -q -r requirements-dev.txt" in make_plan(target, venv)
    # After `make test` installed the development requirements, both are satisfied.
    (venv / ".installed-dev").touch()
    assert "pip install" not in make_plan(target, venv)
    assert "pip install" not in make_plan("run", venv)
