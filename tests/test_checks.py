"""System checks, compared by equality (messages live in webhooks_app.checks.MESSAGES)."""

from __future__ import annotations

import base64
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.core import checks as django_checks
from django.test import override_settings

from tests.processes import REPO, subprocess_env
from webhooks_app import checks
from webhooks_app.checks import message

GOOD_Q = {"timeout": 10, "retry": 40}
TOKEN = "a-token-that-travels-in-clear-0123456789"


def run_checks() -> list:
    return [
        *checks.check_sources(),
        *checks.check_token_reuse(),
        *checks.check_settings(),
        *checks.check_database(),
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
        assert run_checks() == [
            message(
                "E003", source="generic", env="WEBHOOK_SECRET_GENERIC or WEBHOOK_SECRET_DEFAULT"
            )
        ]
    assert run_checks() == []


def test_a_token_scheme_without_secret_is_not_told_to_use_the_default(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET_DEFAULT", TOKEN)
    with override_settings(WEBHOOKS={"SOURCES": {"generic": None, "telegram": {}}}):
        assert run_checks() == [message("E003", source="telegram", env="WEBHOOK_SECRET_TELEGRAM")]


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


def whsec(key_bytes: int) -> str:
    return "whsec_" + base64.b64encode(bytes(range(key_bytes))).decode()


@pytest.mark.parametrize("scheme", ["standard", "gitlab"])
def test_a_whsec_secret_is_measured_by_its_decoded_key(scheme):
    """An 18-byte key is 30 characters as whsec_<base64>: the text passed, the key is short."""
    assert len(whsec(18)) >= 24
    sources = {"generic": None, "s": {"SCHEME": scheme, "SECRETS": [whsec(24), whsec(18)]}}
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == [message("W004", source="s", min_bytes=24)]
    sources["s"]["SECRETS"] = [whsec(24), "whsec_not*base64"]
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == [message("W004", source="s", min_bytes=24)]
    sources["s"]["SECRETS"] = [whsec(24)]
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == []


def in_settings(source: str, field: str) -> str:
    return f"WEBHOOKS['SOURCES'][{source!r}][{field!r}]"


def test_a_token_that_is_also_an_hmac_key_is_an_error():
    """Telegram sends its token in clear: as generic's HMAC key it signs any workflow's run."""
    sources = {
        "generic": {"SECRETS": [TOKEN]},
        "telegram": {"SCHEME": "telegram", "SECRETS": [TOKEN]},
    }
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == [
            message(
                "E006",
                key_source="generic",
                key_origin=in_settings("generic", "SECRETS"),
                token_source="telegram",
                token_origin=in_settings("telegram", "SECRETS"),
            )
        ]


def test_a_token_reused_as_a_key_through_the_environment_is_an_error(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET_DEFAULT", TOKEN)  # generic's and github's HMAC key
    monkeypatch.setenv("WEBHOOK_SECRET_GITLAB", TOKEN)
    sources = {"generic": {}, "github": {}, "gitlab": {}, "telegram": {"SECRETS": ["t" * 30]}}
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == [
            message(
                "E006",
                key_source=name,
                key_origin="WEBHOOK_SECRET_DEFAULT",
                token_source="gitlab",
                token_origin="WEBHOOK_SECRET_GITLAB",
            )
            for name in ("generic", "github")
        ]


def test_a_verify_token_that_is_also_an_hmac_key_is_an_error():
    """WhatsApp's handshake sends VERIFY_TOKEN in its URL; the app secret signs the events."""
    sources = {
        "generic": None,
        "whatsapp": {"SCHEME": "whatsapp", "SECRETS": [TOKEN], "VERIFY_TOKEN": TOKEN},
    }
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == [
            message(
                "E006",
                key_source="whatsapp",
                key_origin=in_settings("whatsapp", "SECRETS"),
                token_source="whatsapp",
                token_origin=in_settings("whatsapp", "VERIFY_TOKEN"),
            )
        ]


def test_tokens_shared_between_token_schemes_or_distinct_secrets_are_fine():
    sources = {
        "generic": {"SECRETS": [TOKEN + "-generic"]},
        "telegram": {"SCHEME": "telegram", "SECRETS": [TOKEN]},
        "gitlab": {"SCHEME": "gitlab", "SECRETS": [TOKEN]},
    }
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == []


@contextmanager
def default_database(**database: Any) -> Iterator[None]:
    """DATABASES['default'] replaced for a check; Django warns that connections do not follow,
    which is the point: only the settings are read."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Overriding setting DATABASES")
        with override_settings(DATABASES={"default": database}):
            yield


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        ({"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}, [message("W005")]),
        (
            {
                "ENGINE": "django.db.backends.sqlite3",
                "OPTIONS": {"transaction_mode": "DEFERRED", "timeout": 20},
            },
            [message("W005")],
        ),
        (
            {"ENGINE": "django.db.backends.sqlite3", "OPTIONS": {"transaction_mode": "immediate"}},
            [],
        ),
        (
            {"ENGINE": "django.db.backends.sqlite3", "OPTIONS": {"transaction_mode": "EXCLUSIVE"}},
            [],
        ),
        ({"ENGINE": "django.db.backends.postgresql", "NAME": "webhooks"}, []),
    ],
)
def test_sqlite_without_immediate_transactions_warns(database, expected):
    with default_database(**database):
        assert checks.check_database() == expected


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
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="a-deployment-key-0123456789-abcdefghijklmnopqrstuvwxyz",
    )
    for name in [n for n in env if n.startswith("WEBHOOK_SECRET_")]:
        del env[name]
    result = manage_py_check(env)
    assert result.returncode != 0
    assert "webhooks_app.E003" in result.stderr
    env["WEBHOOK_SECRET_GENERIC"] = "a-long-enough-secret-for-the-demo-1234"
    result = manage_py_check(env)
    assert result.returncode == 0, result.stderr
