"""System checks, compared by equality (messages live in webhooks_app.checks.MESSAGES)."""

from __future__ import annotations

import base64
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import global_settings, settings
from django.core import checks as django_checks
from django.test import override_settings

from tests.processes import Server, manage_py, subprocess_env
from webhooks_app import alerts, checks, registry
from webhooks_app.checks import message

GOOD_Q = {"orm": "default", "timeout": 10, "retry": 40}
TOKEN = "a-token-that-travels-in-clear-0123456789"
GENERIC_ENV = "WEBHOOK_SECRET_GENERIC or WEBHOOK_SECRET_DEFAULT"


def run_checks() -> list:
    """What every command runs (``manage.py check``, ``migrate``, ``runserver``)."""
    return [
        *checks.check_sources(),
        *checks.check_token_reuse(),
        *checks.check_settings(),
        *checks.check_database(),
        *checks.check_queue(),
        *checks.check_workflow_limits(),
        *checks.check_alerts(),
    ]


def deploy_checks() -> list:
    """What ``manage.py check --deploy`` adds."""
    return checks.check_secrets_for_deployment()


def test_the_test_configuration_is_clean():
    assert run_checks() == []
    assert deploy_checks() == []


def test_the_check_functions_are_registered_as_tested():
    """The deploy-only check runs under --deploy alone, the others for every command."""
    registered = django_checks.registry.registry
    assert checks.check_secrets_for_deployment in registered.get_checks(True)
    assert checks.check_secrets_for_deployment not in registered.get_checks(False)
    for check in (
        checks.check_sources,
        checks.check_queue,
        checks.check_settings,
        checks.check_workflow_limits,
        checks.check_alerts,
    ):
        assert check in registered.get_checks(False)
    # What reads the database is tagged so: run with --database, migrate and the test runner.
    for check in (
        checks.check_database_sources,
        checks.check_stored_secrets_for_deployment,
        checks.check_alert_sources,
    ):
        assert django_checks.Tags.database in check.tags


def test_no_untagged_check_reads_the_database_when_handed_every_alias():
    """Django 6 hands every check the database aliases (``run_checks(databases=None)``), so an
    untagged check of this app must not take them as leave to query: ``manage.py check`` works
    without a database. This test has no database access; a query fails it."""
    rule = {"NAME": "quiet", "WHEN": "silence", "SOURCE": "elsewhere", "WINDOW": 60}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "ALERTS": [rule]}):
        for check in django_checks.registry.registry.get_checks(include_deployment_checks=True):
            if (
                check.__module__ == checks.__name__
                and django_checks.Tags.database not in check.tags
            ):
                check(app_configs=None, databases=["default"])


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


def test_missing_secret_warns_and_is_an_error_for_deployment():
    """A warning for every command (migrate must run before the secret exists), an error under
    check --deploy."""
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SECRETS": [""]}}}):
        assert run_checks() == [message("W006", source="generic", env=GENERIC_ENV)]
        assert deploy_checks() == [message("E003", source="generic", env=GENERIC_ENV)]
    assert run_checks() == []
    assert deploy_checks() == []


def test_the_missing_secret_messages():
    assert message("W006", source="generic", env=GENERIC_ENV).msg == (
        "Webhook source 'generic' has no secret yet: every delivery to it is refused with 503 "
        "not_configured (manage.py check --deploy reports this as the error webhooks_app.E003)."
    )
    assert message("E003", source="generic", env=GENERIC_ENV).hint == (
        "Set WEBHOOKS['SOURCES']['generic']['SECRETS'], or the environment variable "
        "WEBHOOK_SECRET_GENERIC or WEBHOOK_SECRET_DEFAULT. To disable the source, set it to None "
        "in WEBHOOKS['SOURCES']."
    )


def test_no_secret_is_needed_while_signatures_are_off(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SIGNATURE_REQUIRED", "false")
    with override_settings(DEBUG=True, WEBHOOKS={"SOURCES": {"generic": {}}}):
        assert run_checks() == []
        assert deploy_checks() == []


def test_a_token_scheme_without_secret_is_not_told_to_use_the_default(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET_DEFAULT", TOKEN)
    with override_settings(WEBHOOKS={"SOURCES": {"generic": None, "telegram": {}}}):
        assert run_checks() == [message("W006", source="telegram", env="WEBHOOK_SECRET_TELEGRAM")]
        assert deploy_checks() == [
            message("E003", source="telegram", env="WEBHOOK_SECRET_TELEGRAM")
        ]


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


#: A real Ed25519 public key (key A of tests/vectors, standard_webhooks_v1a).
WHPK = "whpk_HAIRujSGI5vamJ6arFbjeZ+80sEy1Qs7eW/XFGhWjRk="


@pytest.mark.parametrize(
    "bad",
    [
        "whpk_" + base64.b64encode(bytes(range(1, 32))).decode(),  # 31 bytes
        "whpk_" + base64.b64encode(bytes(range(1, 34))).decode(),  # 33 bytes
        "whpk_not*base64",
        "whpk_" + base64.b64encode(bytes(32)).decode(),  # a point of small order
        "whsk_" + base64.b64encode(bytes(range(32))).decode(),  # the sender's private key
    ],
)
def test_a_whpk_secret_must_be_a_32_byte_public_key(bad):
    """Measured as a key, not as text: 32 bytes of base64, not some 24 bytes."""
    sources = {"generic": None, "s": {"SCHEME": "standard", "SECRETS": [WHPK]}}
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == []
    sources["s"]["SECRETS"] = [WHPK, bad]
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert run_checks() == [message("W004", source="s", min_bytes=24)]


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


def test_a_limit_on_an_unknown_workflow_is_an_error():
    limits = {**settings.WEBHOOKS["WORKFLOW_LIMITS"], "recrod": {"CONCURRENCY": 1}}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "WORKFLOW_LIMITS": limits}):
        assert run_checks() == [message("E008", workflow="recrod")]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("RATE", "5 per second", "not a rate like '10/s' or '100/m'"),
        ("RATE", "0/s", "not a rate like '10/s' or '100/m'"),
        ("RATE", 5, "not a rate like '10/s' or '100/m'"),
        ("CONCURRENCY", 0, "not a whole number of at least 1"),
        ("CONCURRENCY", "2", "not a whole number of at least 1"),
        ("CONCURRENCY", True, "not a whole number of at least 1"),
        ("BURST", 3, "not a limit this app knows (CONCURRENCY, RATE)"),
    ],
)
def test_a_malformed_limit_is_an_error_naming_the_setting(key, value, problem):
    limits = {"record": {key: value}}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "WORKFLOW_LIMITS": limits}):
        assert run_checks() == [
            message("E009", workflow="record", key=key, value=value, problem=problem)
        ]
        assert "WEBHOOKS['WORKFLOW_LIMITS']['record']" in run_checks()[0].hint


def test_good_limits_are_clean():
    limits = {"record": {"CONCURRENCY": 3, "RATE": " 100 / m "}}
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "WORKFLOW_LIMITS": limits}):
        assert run_checks() == []


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("no.such.module:key", "No module named 'no'"),
        ("tests.testapp.workflows:no_such_function", "module 'tests.testapp.workflows' has no attribute 'no_such_function'"),
        ("tests.testapp.workflows:UNSTORABLE_RESULTS", "tests.testapp.workflows:UNSTORABLE_RESULTS is not callable"),
    ],
)  # fmt: skip
def test_an_unloadable_order_key_function_is_an_error(spec, error):
    sources = {**settings.WEBHOOKS["SOURCES"], "ordered": {
        "SCHEME": "generic", "SECRETS": [settings.SECRET_A], "ORDER_KEY": spec,
    }}  # fmt: skip
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": sources}):
        setting = "WEBHOOKS['SOURCES']['ordered']['ORDER_KEY']"
        assert run_checks() == [message("E010", setting=setting, spec=spec, error=error)]


def test_unimportable_workflow_path():
    with override_settings(
        WEBHOOKS={**settings.WEBHOOKS, "WORKFLOWS": {"w": "no.such.module.func"}}
    ):
        found = run_checks()
    assert [m.id for m in found] == ["webhooks_app.E005"]


def test_retry_not_longer_than_timeout():
    with override_settings(Q_CLUSTER={"orm": "default", "timeout": 60, "retry": 60}):
        assert run_checks() == [message("E004", retry=60, timeout=60)]
    with override_settings(Q_CLUSTER={"orm": "default", "retry": 60}):
        assert run_checks() == [message("W003")]
    with override_settings(Q_CLUSTER=GOOD_Q):
        assert run_checks() == []


TIMING = {"timeout": 10, "retry": 40}


@pytest.mark.parametrize(
    "broker",
    [
        {"orm": "default"},
        {"redis": "redis://127.0.0.1:6379/0"},
        {"redis": {}},  # Redis with its defaults, chosen on purpose
        {"django_redis": "default"},
        {"sqs": {"aws_region": "eu-west-1"}},
        {"iron_mq": {"token": "t"}},
        {"mongo": {"host": "127.0.0.1"}},
        {"broker_class": "myapp.brokers.Broker"},
    ],
)
def test_every_django_q2_broker_key_names_a_broker(broker):
    with override_settings(Q_CLUSTER={**broker, **TIMING}):
        assert checks.check_queue() == []


@pytest.mark.parametrize(
    "q_cluster",
    [
        TIMING,
        {**TIMING, "orm": None},
        {**TIMING, "orm": ""},
        {**TIMING, "orm": {}},  # django-q2 skips an empty value
        {**TIMING, "sqs": "eu-west-1"},  # django-q2 takes sqs only as a dict of options
        {**TIMING, "name": "webhooks_app", "workers": 2},
    ],
)
def test_a_q_cluster_without_a_broker_is_an_error(q_cluster):
    """django-q2 would try Redis on localhost, and no event would ever run."""
    with override_settings(Q_CLUSTER=q_cluster):
        assert run_checks() == [message("E007")]


def test_no_q_cluster_at_all_is_an_error(settings):
    del settings.Q_CLUSTER
    assert checks.check_queue() == [message("E007"), message("W003")]


def test_the_missing_broker_message():
    assert message("E007").msg == (
        "Q_CLUSTER names no broker, so django-q2 connects to Redis on localhost:6379: where none "
        "runs there, no webhook event is ever processed."
    )


LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
DUMMY = "django.core.cache.backends.dummy.DummyCache"
FILES = "django.core.cache.backends.filebased.FileBasedCache"


def caches(**backends: str) -> dict[str, dict[str, str]]:
    return {
        alias: {"BACKEND": backend, "LOCATION": "/tmp/unused"}
        for alias, backend in backends.items()
    }


@pytest.mark.parametrize("backend", [LOCMEM, DUMMY])
def test_the_orm_broker_with_a_per_process_cache_warns(backend):
    """Clusters publish their state to that cache: no other process (the web server's health
    endpoint and dashboard) can see it."""
    with override_settings(Q_CLUSTER=GOOD_Q, CACHES=caches(default=backend)):
        assert run_checks() == [message("W007", broker="orm", alias="default", backend=backend)]


def test_the_per_process_cache_message():
    assert message("W007", broker="orm", alias="default", backend=LOCMEM).msg == (
        "Q_CLUSTER uses the 'orm' broker, whose clusters report their state through the cache "
        "'default', and that cache is django.core.cache.backends.locmem.LocMemCache, which no "
        "other process can read: the health endpoint and the dashboard show no cluster while "
        "one runs."
    )


def test_the_cache_named_in_q_cluster_is_the_one_judged():
    with override_settings(
        Q_CLUSTER={**GOOD_Q, "cache": "stats"}, CACHES=caches(default=FILES, stats=LOCMEM)
    ):
        assert run_checks() == [message("W007", broker="orm", alias="stats", backend=LOCMEM)]
    with override_settings(
        Q_CLUSTER={**GOOD_Q, "cache": "stats"}, CACHES=caches(default=LOCMEM, stats=FILES)
    ):
        assert run_checks() == []


def test_the_redis_broker_keeps_cluster_state_in_redis_whatever_the_cache():
    with override_settings(
        Q_CLUSTER={"redis": "redis://127.0.0.1:6379/0", **TIMING}, CACHES=caches(default=LOCMEM)
    ):
        assert checks.check_queue() == []


def test_the_demo_and_test_settings_share_their_cache():
    """The test settings are the demo's (file cache, or Redis with REDIS_URL): no W007."""
    assert checks.check_queue() == []


# The task runner (contract §14)

TASKS_DB = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
ON_DJANGO_TASKS = {**settings.WEBHOOKS, "TASK_RUNNER": "django_tasks"}


def test_an_unknown_task_runner_is_an_error():
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "TASK_RUNNER": "celery"}):
        assert run_checks() == [message("E011", runner="celery")]
    assert message("E011", runner="celery").msg == (
        "WEBHOOKS['TASK_RUNNER'] is 'celery', which is no task runner: no webhook event would "
        "ever run."
    )


def test_django_tasks_without_the_framework_is_an_error(monkeypatch):
    with override_settings(WEBHOOKS=ON_DJANGO_TASKS, TASKS=TASKS_DB), monkeypatch.context() as m:
        # What find_spec reports for a module that sys.modules holds as None: not installed.
        # (Only while the settings hold: the framework's receivers import it when they change.)
        m.setitem(sys.modules, "django.tasks", None)
        m.setitem(sys.modules, "django_tasks", None)
        assert run_checks() == [message("E012")]
    assert message("E012").hint == (
        "pip install 'webhooks-app[tasks]' (django-tasks and django-tasks-db), or set "
        "WEBHOOKS['TASK_RUNNER'] to 'django_q'."
    )


def test_django_tasks_without_a_tasks_setting_is_an_error(settings):
    """Django's default backend would run each workflow inside the request that delivered it."""
    settings.WEBHOOKS = ON_DJANGO_TASKS
    if django.VERSION >= (6,):
        settings.TASKS = global_settings.TASKS  # Django 6 always has TASKS: its default
    else:
        del settings.TASKS
    assert run_checks() == [message("E013")]
    assert message("E013").hint == (
        "Set TASKS = {'default': {'BACKEND': 'django_tasks_db.DatabaseBackend'}}, add "
        "'django_tasks_db' to INSTALLED_APPS and run manage.py db_worker."
    )


def test_django_tasks_skips_the_django_q2_checks():
    """With the database backend, after webhooks_app (whose db_worker then wins): clean, and no
    Q_CLUSTER is needed."""
    with override_settings(
        WEBHOOKS=ON_DJANGO_TASKS, TASKS=TASKS_DB, INSTALLED_APPS=with_django_tasks_db(after=True)
    ):
        del settings.Q_CLUSTER
        assert run_checks() == []


def test_django_tasks_db_before_webhooks_app_is_an_error():
    """Its own db_worker would then be the one manage.py runs, without the heartbeat."""
    with override_settings(
        WEBHOOKS=ON_DJANGO_TASKS, TASKS=TASKS_DB, INSTALLED_APPS=with_django_tasks_db(after=False)
    ):
        assert run_checks() == [message("E014")]


def with_django_tasks_db(*, after: bool) -> list[str]:
    """The test apps with django_tasks_db right after or right before webhooks_app."""
    installed = [app for app in settings.INSTALLED_APPS if app != "django_tasks_db"]
    at = installed.index("webhooks_app") + after
    return [*installed[:at], "django_tasks_db", *installed[at:]]


def test_levels_follow_the_ids():
    assert message("E003", source="s", env="E").level == django_checks.ERROR
    assert message("E007").level == django_checks.ERROR
    assert message("W001").level == django_checks.WARNING
    assert message("W006", source="s", env="E").level == django_checks.WARNING


DEPLOYMENT_KEY = "a-deployment-key-0123456789-abcdefghijklmnopqrstuvwxyz"


def demo_without_secret(var_dir: Path) -> dict[str, str]:
    """The demo project with DEBUG off (it then invents no development secret), no webhook
    secret, and its own SQLite file in ``var_dir`` (never the demo's or the test database)."""
    env = subprocess_env(
        DJANGO_SETTINGS_MODULE="project.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=DEPLOYMENT_KEY,
        DJANGO_HTTPS="false",  # plain HTTP to the test server; check --deploy then warns
        WEBHOOKS_VAR_DIR=str(var_dir),
    )
    for name in [n for n in env if n.startswith("WEBHOOK_SECRET_")]:
        del env[name]
    for name in ("DATABASE_URL", "REDIS_URL", "WEBHOOKS_TEST_SUBPROCESS_DB"):
        env.pop(name, None)
    return env


def test_migrate_runs_before_any_secret_and_check_deploy_fails_without_one(tmp_path):
    """The README's order: migrate (a build step too) before the secret exists. The real
    commands, in the demo project with no secret in the environment."""
    env = demo_without_secret(tmp_path)
    result = manage_py(env, "migrate", "--no-input")
    assert result.returncode == 0, result.stderr
    assert "(webhooks_app.W006)" in result.stderr
    assert (tmp_path / "db.sqlite3").exists()
    result = manage_py(env, "check")
    assert result.returncode == 0, result.stderr
    assert "(webhooks_app.W006)" in result.stderr and "ERRORS" not in result.stderr
    result = manage_py(env, "check", "--deploy")
    assert result.returncode != 0
    assert "(webhooks_app.E003)" in result.stderr
    env["WEBHOOK_SECRET_GENERIC"] = "a-long-enough-secret-for-the-demo-1234"
    result = manage_py(env, "check", "--deploy")
    assert result.returncode == 0, result.stderr
    assert "webhooks_app." not in result.stderr


@pytest.mark.process
def test_a_server_logs_a_source_without_secret_once_at_its_first_request(tmp_path):
    """gunicorn runs no system checks: its log says it, at the first request (here the
    readiness probe on /webhooks/health/), once however many requests follow."""
    server = Server(workers=1, env=demo_without_secret(tmp_path))
    try:
        body = b'{"workflow_name": "log_event", "inputs": {}}'
        for _ in range(3):
            status, answer, _ = server.request(
                "POST", "/webhooks/generic/", body, {"Content-Type": "application/json"}
            )
            assert (status, answer["error"]) == (503, "not_configured")
    finally:
        server.stop()
    error = message("E003", source="generic", env=GENERIC_ENV)
    line = f"ERROR webhooks_app {error.msg} {error.hint} (webhooks_app.E003)"
    assert server.output().count(line) == 1, server.output()


# Alerts (contract §11)

GOOD_RULE = {
    "NAME": "failures", "WHEN": "failure_rate", "ABOVE": 0.2, "WINDOW": 300, "MIN_EVENTS": 20,
}  # fmt: skip
KNOWN_SOURCES = "generic, github, ordered"


def alert_checks(**webhooks: Any) -> list:
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, **webhooks}):
        return run_checks()


def test_good_alert_settings_are_clean():
    rules = [
        GOOD_RULE,
        {"NAME": "dead", "WHEN": "dead_events", "ABOVE": 0, "WINDOW": 60.5, "SOURCE": "github",
         "WORKFLOW": "record"},
        {"NAME": "stuck", "WHEN": "oldest_pending", "ABOVE": 300},
        {"NAME": "quiet", "WHEN": "silence", "SOURCE": "generic", "WINDOW": 3600},
    ]  # fmt: skip
    urls = ["https://hooks.slack.com/services/T0/B0/x", "http://127.0.0.1:8080/alerts"]
    assert alert_checks(ALERTS=rules, ALERT_URLS=urls, ALERT_SIGNING_SECRET=whsec(32)) == []


def rule_problem(name: str, problem: str, kind: str = "failure_rate") -> Any:
    return message("E018", name=name, kind=kind, problem=problem, takes=alerts.TAKES[kind])


ALERT_CASES: dict[str, tuple[Any, list[Any]]] = {
    "not a list": (
        GOOD_RULE, [message("E015", where="WEBHOOKS['ALERTS']", problem="not a list")],
    ),
    "not a dict": ([5], [message("E015", where="WEBHOOKS['ALERTS'][0]", problem="not a dict")]),
    "no name": (
        [GOOD_RULE, {"WHEN": "silence"}],
        [message("E015", where="WEBHOOKS['ALERTS'][1]",
                 problem="its NAME is not a printable string of 1 to 255 characters")],
    ),
    "a line break in the name": (
        [{**GOOD_RULE, "NAME": "a\nb"}],
        [message("E015", where="WEBHOOKS['ALERTS'][0]",
                 problem="its NAME is not a printable string of 1 to 255 characters")],
    ),
    "duplicate name": (
        [GOOD_RULE, {"NAME": "stuck", "WHEN": "oldest_pending", "ABOVE": 1}, GOOD_RULE],
        [message("E016", name="failures", first=0, index=2)],
    ),
    "unknown kind": (
        [{"NAME": "x", "WHEN": "failures", "ABOVE": 1}], [message("E017", name="x", kind="failures")],
    ),
    "missing thresholds": (
        [{"NAME": "x", "WHEN": "failure_rate", "ABOVE": 0.5}],
        [rule_problem("x", "has no WINDOW"), rule_problem("x", "has no MIN_EVENTS")],
    ),
    "a ratio of 1": (
        [{**GOOD_RULE, "ABOVE": 1}],
        [rule_problem("failures", "has ABOVE = 1, which is not a ratio of at least 0 and below 1")],
    ),
    "invalid thresholds": (
        [{**GOOD_RULE, "ABOVE": True, "WINDOW": 0, "MIN_EVENTS": 2.5}],
        [
            rule_problem("failures", "has ABOVE = True, which is not a number"),
            rule_problem("failures", "has WINDOW = 0, which is not a number of seconds above 0"),
            rule_problem(
                "failures", "has MIN_EVENTS = 2.5, which is not a whole number of at least 1"
            ),
        ],
    ),
    "a negative count": (
        [{"NAME": "d", "WHEN": "dead_events", "ABOVE": -1, "WINDOW": "60"}],
        [
            rule_problem("d", "has ABOVE = -1, which is below 0", kind="dead_events"),
            rule_problem("d", "has WINDOW = '60', which is not a number", kind="dead_events"),
        ],
    ),
    "silence without a source": (
        [{"NAME": "q", "WHEN": "silence", "WINDOW": 60}],
        [message("E019", name="q", known=KNOWN_SOURCES)],
    ),
    "unknown scope": (
        # Without --database, "stripe" may be a database source: tests/test_sources.py judges it.
        [{**GOOD_RULE, "SOURCE": "stripe", "WORKFLOW": "nope"}],
        [
            message("E020", name="failures", key="WORKFLOW", value="nope",
                    known=", ".join(registry.workflow_names())),
        ],
    ),
    "unknown keys": (
        [{**GOOD_RULE, "WINDOWS": 60}, {"NAME": "s", "WHEN": "oldest_pending", "ABOVE": 1,
                                         "WINDOW": 60}],
        [
            message("E021", name="failures", key="WINDOWS", kind="failure_rate",
                    takes=alerts.TAKES["failure_rate"]),
            message("E021", name="s", key="WINDOW", kind="oldest_pending",
                    takes=alerts.TAKES["oldest_pending"]),
        ],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", ALERT_CASES)
def test_bad_alert_rules_are_errors(case):
    rules, expected = ALERT_CASES[case]
    assert alert_checks(ALERTS=rules) == expected


def test_alert_urls_that_are_not_http_urls_are_errors():
    urls = ["https://ok.example/a", "ftp://x.example/", "https://", "hooks.slack.com/x", 5]
    assert alert_checks(ALERT_URLS=urls) == [
        message("E022", problem=f"holds {url!r}, which is not an http(s) URL") for url in urls[1:]
    ]
    assert alert_checks(ALERT_URLS="https://ok.example/a") == [
        message("E022", problem="is 'https://ok.example/a', not a list of URLs")
    ]


def test_an_unusable_signing_secret_is_an_error():
    assert alert_checks(ALERT_SIGNING_SECRET="whsec_not*base64") == [message("E023")]
    assert alert_checks(ALERT_SIGNING_SECRET="a-plain-secret-is-used-as-it-is") == []


def test_alert_email_without_admins_warns():
    with override_settings(ADMINS=[]):
        assert alert_checks(ALERT_EMAIL=True) == [message("W008")]
    with override_settings(ADMINS=[("Ops", "ops@example.com")]):
        assert alert_checks(ALERT_EMAIL=True) == []


def test_the_alert_messages():
    assert message("E015", where="WEBHOOKS['ALERTS'][0]", problem="not a dict").msg == (
        "WEBHOOKS['ALERTS'][0] is not an alert rule: not a dict."
    )
    assert message("E015", where="WEBHOOKS['ALERTS']", problem="not a list").hint == (
        "WEBHOOKS['ALERTS'] is a list of dicts, each with a NAME and a WHEN, e.g. "
        "{'NAME': 'failures', 'WHEN': 'failure_rate', 'ABOVE': 0.2, 'WINDOW': 300, "
        "'MIN_EVENTS': 20}."
    )
    error = rule_problem("failures", "has no WINDOW")
    assert (error.msg, error.hint) == (
        "Alert rule 'failures' (failure_rate) has no WINDOW: it is never evaluated.",
        "A failure_rate rule takes ABOVE (a ratio, at least 0 and below 1), WINDOW (seconds) and "
        "MIN_EVENTS (a whole number of at least 1), and optionally SOURCE and WORKFLOW.",
    )
    assert message("E022", problem="holds 'ftp://x', which is not an http(s) URL").msg == (
        "WEBHOOKS['ALERT_URLS'] holds 'ftp://x', which is not an http(s) URL: no alert is ever "
        "posted there."
    )
