"""System checks, compared by equality (messages live in webhooks_app.checks.MESSAGES)."""

from __future__ import annotations

import subprocess
import sys

from django.conf import settings
from django.core import checks as django_checks
from django.test import override_settings

from tests.processes import REPO, subprocess_env
from webhooks_app import checks
from webhooks_app.checks import message

GOOD_Q = {"timeout": 10, "retry": 40}


def run_checks() -> list:
    return [
        *checks.check_sources(),
        *checks.check_settings(),
        *checks.check_queue(),
    ]


def test_the_test_configuration_is_clean():
    assert run_checks() == []


def test_unknown_scheme():
    with override_settings(
        WEBHOOKS={"SOURCES": {"generic": None, "x": {"SCHEME": "nope", "SECRETS": ["s" * 30]}}}
    ):
        found = run_checks()
    assert len(found) == 1
    assert found[0].id == "webhooks_app.E001"
    assert found[0].msg == "Webhook source 'x' uses the unknown scheme 'nope'."


def test_route_to_unknown_workflow():
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {
        "generic": {"SECRETS": [settings.SECRET_A], "ROUTES": {"push": "missing"}},
    }}):  # fmt: skip
        assert run_checks() == [message("E002", source="generic", event="push", workflow="missing")]


def test_missing_secret_while_required():
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SECRETS": [""]}}}):
        assert run_checks() == [message("E003", source="generic", env="WEBHOOK_SECRET_GENERIC")]
    assert run_checks() == []


def test_signatures_off_without_debug_warns(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SIGNATURE_REQUIRED", "false")
    with override_settings(DEBUG=False, WEBHOOKS={"SOURCES": {"generic": {}}}):
        assert run_checks() == [message("W001")]
    with override_settings(DEBUG=True, WEBHOOKS={"SOURCES": {"generic": {}}}):
        assert run_checks() == []


def test_short_retention_warns():
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "RETENTION_DAYS": 2}):
        assert run_checks() == [message("W002", days=2)]


def test_short_secret_warns():
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SECRETS": ["short"]}}}):
        assert run_checks() == [message("W004", source="generic", min_bytes=24)]


def test_unimportable_workflow_path():
    with override_settings(
        WEBHOOKS={**settings.WEBHOOKS, "WORKFLOWS": {"w": "no.such.module.func"}}
    ):
        found = run_checks()
    assert [m.id for m in found] == ["webhooks_app.E005"]


def test_retry_not_longer_than_timeout():
    with override_settings(Q_CLUSTER={"timeout": 60, "retry": 60}):
        assert run_checks() == [message("E004", retry=60, timeout=60)]
    with override_settings(Q_CLUSTER={"retry": 60}):
        assert run_checks() == [message("W003")]
    with override_settings(Q_CLUSTER=GOOD_Q):
        assert run_checks() == []


def test_levels_follow_the_ids():
    assert message("E003", source="s", env="E").level == django_checks.ERROR
    assert message("W001").level == django_checks.WARNING


def manage_py_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_manage_py_check_reports_a_missing_secret_and_fails():
    """The real command, in the demo project with no secret in the environment."""
    # DEBUG off: the demo then invents no development secret.
    env = subprocess_env(DJANGO_SETTINGS_MODULE="project.settings", DJANGO_DEBUG="false")
    for name in [n for n in env if n.startswith("WEBHOOK_SECRET_")]:
        del env[name]
    result = manage_py_check(env)
    assert result.returncode != 0
    assert "webhooks_app.E003" in result.stderr
    env["WEBHOOK_SECRET_GENERIC"] = "a-long-enough-secret-for-the-demo-1234"
    result = manage_py_check(env)
    assert result.returncode == 0, result.stderr
