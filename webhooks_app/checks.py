"""System checks (``manage.py check``): configuration mistakes that would lose or forge events.

Messages and hints live in :data:`MESSAGES`, one place, so tests compare them by equality.

A source without a secret refuses every delivery (503 ``not_configured``) but blocks nothing
else: ``migrate`` and a build step must run before the secret exists. So it is a warning
(W006) for every command and an error (E003) where a deployment is judged: ``check --deploy``,
the first request a server process answers (its log), the health details and the dashboard.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, timedelta
from importlib.util import find_spec
from typing import Any

from django.apps import apps
from django.conf import global_settings, settings
from django.core import checks
from django.core.management import get_commands
from django.core.signals import request_started
from django.db import DEFAULT_DB_ALIAS, DatabaseError
from django.utils import timezone
from django.utils.module_loading import import_string

from webhooks_app import alerts, crypto, metrics, ordering, registry
from webhooks_app.conf import TASK_RUNNERS, SourceConfig, secret_env_names, webhook_settings
from webhooks_app.models import WebhookSource
from webhooks_app.schemes import get_scheme, scheme_names
from webhooks_app.schemes.base import SharedTokenScheme
from webhooks_app.schemes.standard import PUBLIC_KEY_PREFIX, public_key, signing_key
from webhooks_app.sources import all_sources

#: Check W011 lists the secrets of database sources that end sooner than this.
EXPIRY_WARNING_DAYS = 7
#: Senders retry for days (Stripe 3 days); the idempotency record must outlive that.
MIN_RETENTION_DAYS = 3
#: Standard Webhooks asks for at least 24 random bytes.
MIN_SECRET_BYTES = 24
#: SQLite transaction modes that take the write lock at BEGIN, so that a writer waits for the
#: busy timeout instead of failing at once when its read transaction cannot become a write one.
SQLITE_WRITE_LOCK_MODES = frozenset({"IMMEDIATE", "EXCLUSIVE"})
#: django-q2's broker keys in the order ``django_q.brokers.get_broker`` tries them; Redis is
#: its fall-back, also when ``Q_CLUSTER`` names none (``django_redis`` is the Redis broker on
#: a django-redis connection).
BROKER_KEYS = ("broker_class", "iron_mq", "sqs", "orm", "mongo", "redis", "django_redis")
#: Brokers whose clusters publish their state (``Stat``) through the Django cache; the Redis
#: broker keeps it in Redis, and a custom ``broker_class`` may do either.
CACHE_STAT_BROKERS = frozenset({"iron_mq", "sqs", "orm", "mongo"})
#: Cache backends no other process can read.
PER_PROCESS_CACHES = frozenset(
    {
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.dummy.DummyCache",
    }
)

logger = logging.getLogger("webhooks_app")

_STORED_SOURCE_HINT = (
    "Add one: the admin's Add secret, or WebhookSource.objects.get(name={source!r})"
    ".add_secret(value). A secret past its not_after, or one that no key decrypts (E030), "
    "does not count."
)
_CONFIGURE_SOURCE_HINT = (
    "Set WEBHOOKS['SOURCES'][{source!r}]['SECRETS'], or the environment variable "
    "{env}. To disable the source, set it to None in WEBHOOKS['SOURCES']."
)

MESSAGES: dict[str, tuple[str, str]] = {
    "E001": (
        "Webhook source {source!r} uses the unknown scheme {scheme!r}.",
        "Use one of: {known}; or register your scheme with "
        "webhooks_app.schemes.register_scheme() or WEBHOOKS['SCHEMES'].",
    ),
    "E002": (
        "Webhook source {source!r} routes {event!r} to the unknown workflow {workflow!r}.",
        "Register it with @workflow({workflow!r}) in an installed app's workflows.py, "
        "or in WEBHOOKS['WORKFLOWS'].",
    ),
    "E003": (
        "Webhook source {source!r} has no secret while signatures are required; "
        "every delivery to it is refused with 503.",
        _CONFIGURE_SOURCE_HINT,
    ),
    "E004": (
        "Q_CLUSTER['retry'] ({retry}s) is not longer than Q_CLUSTER['timeout'] ({timeout}s): "
        "django-q2 would deliver a still-running task again and the workflow would run twice.",
        "Set retry > timeout * (queue_limit / workers + 2), e.g. timeout=60, retry=240.",
    ),
    "E005": (
        "WEBHOOKS['WORKFLOWS'][{workflow!r}] = {path!r} cannot be imported: {error}.",
        "Give the dotted path of a callable taking (inputs, event).",
    ),
    "E006": (
        "Webhook source {key_source!r} uses as its HMAC key ({key_origin}) the value that "
        "source {token_source!r} uses as a shared token ({token_origin}), which travels in "
        "clear: whoever sees one request to {token_source!r} can sign any request to "
        "{key_source!r}.",
        "Give {key_source!r} a random secret of its own in {key_origin}, e.g. python -c "
        '"import secrets; print(secrets.token_urlsafe(32))".',
    ),
    "E007": (
        "Q_CLUSTER names no broker, so django-q2 connects to Redis on localhost:6379: where "
        "none runs there, no webhook event is ever processed.",
        "Set Q_CLUSTER['orm'] = 'default' (the queue lives in your database) or "
        "Q_CLUSTER['redis'] = 'redis://…' (see the README's Queue configuration); django-q2 "
        "also takes 'django_redis', 'sqs', 'iron_mq', 'mongo' or 'broker_class'.",
    ),
    "E008": (
        "WEBHOOKS['WORKFLOW_LIMITS'] limits {workflow!r}, which is not a registered workflow.",
        "Register it with @workflow({workflow!r}) or in WEBHOOKS['WORKFLOWS'], or remove the "
        "entry (a misspelt name would leave the real workflow unlimited).",
    ),
    "E009": (
        "The {key} limit of workflow {workflow!r} is {value!r}: {problem}.",
        "CONCURRENCY is a whole number of at least 1; RATE is 'N/s' or 'N/m', e.g. '10/s'. "
        "Set them in WEBHOOKS['WORKFLOW_LIMITS'][{workflow!r}] or @workflow({workflow!r}, "
        "concurrency=…, rate=…).",
    ),
    "E010": (
        "{setting} = {spec!r} cannot be loaded: {error}.",
        "Give 'module.path:function' of a callable taking (payload, event_type) and returning "
        "a string or None, or a dotted path into the payload such as 'data.object.customer'.",
    ),
    "E011": (
        "WEBHOOKS['TASK_RUNNER'] is {runner!r}, which is no task runner: no webhook event "
        "would ever run.",
        "Set it to 'django_q' (django-q2's qcluster, the default) or 'django_tasks' (Django's "
        "Tasks framework).",
    ),
    "E012": (
        "WEBHOOKS['TASK_RUNNER'] is 'django_tasks', but Django's Tasks framework is not "
        "installed: it is django.tasks from Django 6 on, the django-tasks backport on Django 5.2.",
        "pip install 'webhooks-app[tasks]' (django-tasks and django-tasks-db), or set "
        "WEBHOOKS['TASK_RUNNER'] to 'django_q'.",
    ),
    "E013": (
        "WEBHOOKS['TASK_RUNNER'] is 'django_tasks', but settings.TASKS is not set: Django's "
        "default backend (ImmediateBackend) would run every workflow inside the request that "
        "delivered it.",
        "Set TASKS = {{'default': {{'BACKEND': 'django_tasks_db.DatabaseBackend'}}}}, add "
        "'django_tasks_db' to INSTALLED_APPS and run manage.py db_worker.",
    ),
    "E014": (
        "manage.py db_worker is django_tasks_db's own, not webhooks_app's, because "
        "'django_tasks_db' comes before 'webhooks_app' in INSTALLED_APPS: its workers would "
        "neither renew the leases of the attempts they run nor recover stranded events.",
        "Put 'webhooks_app' before 'django_tasks_db' in INSTALLED_APPS.",
    ),
    "E015": (
        "{where} is not an alert rule: {problem}.",
        "WEBHOOKS['ALERTS'] is a list of dicts, each with a NAME and a WHEN, e.g. "
        "{{'NAME': 'failures', 'WHEN': 'failure_rate', 'ABOVE': 0.2, 'WINDOW': 300, "
        "'MIN_EVENTS': 20}}.",
    ),
    "E016": (
        "WEBHOOKS['ALERTS'][{first}] and WEBHOOKS['ALERTS'][{index}] are both named {name!r}: "
        "an alert is kept per name, so the second rule is never evaluated.",
        "Give each rule in WEBHOOKS['ALERTS'] a NAME of its own.",
    ),
    "E017": (
        "Alert rule {name!r} has the unknown WHEN {kind!r}: it is never evaluated.",
        "WHEN is one of 'failure_rate', 'dead_events', 'oldest_pending', 'silence'.",
    ),
    "E018": (
        "Alert rule {name!r} ({kind}) {problem}: it is never evaluated.",
        "A {kind} rule takes {takes}.",
    ),
    "E019": (
        "Alert rule {name!r} watches for silence but names no SOURCE: it is never evaluated.",
        "Set its SOURCE to the source whose deliveries it watches: one of {known}.",
    ),
    "E020": (
        "Alert rule {name!r} is scoped to the {key} {value!r}, which is not configured: it is "
        "never evaluated.",
        "Use one of: {known}; or remove the rule's {key}.",
    ),
    "E021": (
        "Alert rule {name!r} has the key {key!r}, which a {kind} rule does not take: it is "
        "never evaluated.",
        "A {kind} rule takes {takes}.",
    ),
    "E022": (
        "WEBHOOKS['ALERT_URLS'] {problem}: no alert is ever posted there.",
        "List absolute http:// or https:// URLs, e.g. a Slack incoming webhook's "
        "'https://hooks.slack.com/services/…'.",
    ),
    "E023": (
        "WEBHOOKS['ALERT_SIGNING_SECRET'] is not a usable Standard Webhooks secret: no alert "
        "notification could be signed, so none is posted.",
        "Use whsec_ followed by base64 (what Standard Webhooks libraries generate), or a plain "
        'random string, e.g. python -c "import secrets; print(secrets.token_urlsafe(32))".',
    ),
    "W001": (
        "Webhook signatures are switched off while DEBUG is False: anyone can post events.",
        "Remove WEBHOOK_SIGNATURE_REQUIRED=false (or WEBHOOKS['REQUIRE_SIGNATURE'] = False) "
        "outside development.",
    ),
    "W002": (
        "WEBHOOKS['RETENTION_DAYS'] is {days}: senders redeliver for up to "
        f"{MIN_RETENTION_DAYS} days, and a cleaned-up event would run again.",
        f"Keep RETENTION_DAYS at {MIN_RETENTION_DAYS} or more (the default is 30).",
    ),
    "W003": (
        "Q_CLUSTER['timeout'] is not set: a hung workflow blocks its worker forever, and "
        "django-q2 redelivers it after 'retry' seconds while it still runs.",
        "Set Q_CLUSTER['timeout'] (e.g. 60) and a 'retry' well above it (e.g. 240).",
    ),
    "W004": (
        "A secret of webhook source {source!r} is shorter than {min_bytes} bytes "
        "(a whsec_ secret counts the bytes of its base64-decoded key), or is a whpk_ key "
        "that is not the base64 of a 32-byte Ed25519 public key.",
        "Use a random secret of at least 24 bytes, e.g. python -c "
        '"import secrets; print(secrets.token_urlsafe(32))"; for ed25519 (v1a) signatures, '
        "the sender's whpk_ public key as it shows it (its whsk_ private key stays with the "
        "sender).",
    ),
    "W005": (
        "DATABASES['default'] is SQLite without OPTIONS['transaction_mode'] = 'IMMEDIATE': "
        'concurrent deliveries fail at once with "database is locked" instead of waiting '
        "their turn.",
        "Add to DATABASES['default']['OPTIONS']: \"transaction_mode\": \"IMMEDIATE\", "
        '"timeout": 20, "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" '
        "(as the demo project's settings do).",
    ),
    "W006": (
        "Webhook source {source!r} has no secret yet: every delivery to it is refused with 503 "
        "not_configured (manage.py check --deploy reports this as the error webhooks_app.E003).",
        _CONFIGURE_SOURCE_HINT,
    ),
    "W007": (
        "Q_CLUSTER uses the {broker!r} broker, whose clusters report their state through the "
        "cache {alias!r}, and that cache is {backend}, which no other process can read: the "
        "health endpoint and the dashboard show no cluster while one runs.",
        "Make CACHES[{alias!r}] a cache every process shares (FileBasedCache on one machine, "
        "Redis or Memcached across machines), or name such a cache in Q_CLUSTER['cache'].",
    ),
    "W008": (
        "WEBHOOKS['ALERT_EMAIL'] is on, but settings.ADMINS is empty: mail_admins sends the "
        "alerts to no one.",
        "Set ADMINS (e.g. [('Ops', 'ops@example.com')]), or set ALERT_EMAIL to False.",
    ),
    "W009": (
        "PROMETHEUS_MULTIPROC_DIR is {path!r}, but {problem}: no delivery or attempt is counted "
        "for /webhooks/metrics/.",
        "Point it at an existing directory that every web and worker process of the node can "
        "write to, emptied when the node starts (docs: Operating, Metrics); or unset it to "
        "count in each process alone.",
    ),
    "E030": (
        "Webhook source {source!r} has secrets that no key in WEBHOOKS['ENCRYPTION_KEYS'] "
        "decrypts ({secrets}): they are skipped, and deliveries signed with them are refused.",
        "Put the key they were encrypted with back into WEBHOOKS['ENCRYPTION_KEYS'] (after the "
        "current one) and run manage.py reencrypt_webhook_secrets; or delete those secrets and "
        "add the sender's secret again.",
    ),
    "E031": (
        "WEBHOOKS['ENCRYPTION_KEYS'] {problem}: no secret of a database source can be stored "
        "or read.",
        "Give a list of random strings of at least {min_length} characters, the one that "
        'encrypts first, e.g. python -c "import secrets; print(secrets.token_urlsafe(32))"; or '
        "leave it unset, and the key is derived from SECRET_KEY.",
    ),
    "E032": (
        "Webhook source {source!r} (in the database) has no valid secret while signatures are "
        "required; every delivery to it is refused with 503.",
        _STORED_SOURCE_HINT,
    ),
    "W010": (
        "Webhook source {source!r} is configured in WEBHOOKS['SOURCES'] and in the database: "
        "the settings one is served, the database one is ignored.",
        "Remove one of them, or give the database source another name.",
    ),
    "W011": (
        "Secret {secret} of webhook source {source!r} stops verifying at {not_after} (in less "
        "than {days} days).",
        "Configure the sender's next secret before then: the admin's Add secret (or Rotate "
        "secret), or source.add_secret(value).",
    ),
    "W012": (
        "Webhook source {source!r} (in the database) has no valid secret yet: every delivery "
        "to it is refused with 503 not_configured (manage.py check --deploy --database default "
        "reports this as the error webhooks_app.E032).",
        _STORED_SOURCE_HINT,
    ),
}


def message(check_id: str, **params: Any) -> checks.CheckMessage:
    text, hint = MESSAGES[check_id]
    level = checks.Error if check_id.startswith("E") else checks.Warning
    return level(text.format(**params), hint=hint.format(**params), id=f"webhooks_app.{check_id}")


@checks.register()
def check_sources(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    known_schemes = scheme_names()
    found: list[checks.CheckMessage] = []
    for source in webhook_settings.sources.values():
        found += source_problems(source, known_schemes)
    return found


def source_problems(source: SourceConfig, known_schemes: set[str]) -> list[checks.CheckMessage]:
    """What is wrong with one source, from settings or the database."""
    found: list[checks.CheckMessage] = []
    if source.scheme not in known_schemes:
        found.append(
            message(
                "E001",
                source=source.name,
                scheme=source.scheme,
                known=", ".join(sorted(known_schemes)),
            )
        )
    for event, workflow_name in source.routes.items():
        if not registry.is_registered(workflow_name):
            found.append(message("E002", source=source.name, event=event, workflow=workflow_name))
    if ":" in source.order_key:
        try:
            ordering.load_function(source.order_key)
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            setting = (
                f"The ORDER_KEY option of the database source {source.name!r}"
                if source.stored
                else f"WEBHOOKS['SOURCES'][{source.name!r}]['ORDER_KEY']"
            )
            found.append(message("E010", setting=setting, spec=source.order_key, error=exc))
    if missing_secret(source) and source.stored:
        found.append(message("W012", source=source.name))
    elif missing_secret(source):
        found.append(message("W006", **_secret_params(source)))
    if any(map(_weak_secret, source.secrets)):
        found.append(message("W004", source=source.name, min_bytes=MIN_SECRET_BYTES))
    return found


def _weak_secret(secret: str) -> bool:
    if secret.startswith(PUBLIC_KEY_PREFIX):
        return public_key(secret) is None
    # The key's bytes, not the text's: "whsec_" and base64 add characters but no entropy.
    return len(signing_key(secret) or b"") < MIN_SECRET_BYTES


def missing_secret(source: SourceConfig) -> bool:
    """True when ``source`` answers every delivery 503 ``not_configured`` for want of a secret."""
    return bool(webhook_settings.REQUIRE_SIGNATURE) and not source.secrets


def sources_without_secret(*, database: bool = True) -> list[SourceConfig]:
    """The sources without a usable secret; the database ones too unless ``database`` is
    false (where the database may not be there yet)."""
    configured = webhook_settings.sources
    if database:
        try:
            configured = all_sources()
        except DatabaseError:  # no tables yet, or no database: the settings ones
            configured = webhook_settings.sources
    return [source for source in configured.values() if missing_secret(source)]


def _secret_params(source: SourceConfig) -> dict[str, str]:
    return {"source": source.name, "env": " or ".join(secret_env_names(source.name, source.scheme))}


def missing_secret_errors(*, database: bool = True) -> list[checks.CheckMessage]:
    """E003 (E032 for a database source) for each source without a secret: what the
    dashboard, a server's log and ``check --deploy`` say."""
    return [
        message("E032", source=source.name)
        if source.stored
        else message("E003", **_secret_params(source))
        for source in sources_without_secret(database=database)
    ]


@checks.register(deploy=True)
def check_secrets_for_deployment(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E003 for the settings sources; the database ones are
    :func:`check_stored_secrets_for_deployment`'s."""
    return missing_secret_errors(database=False)


@checks.register(checks.Tags.database, deploy=True)
def check_stored_secrets_for_deployment(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """E032 for the database sources without a usable secret. Tagged ``database``, as Django's
    own checks that read it: run by ``check --database default``, ``migrate`` and the test
    runner, never by a plain ``check`` (Django 6 hands every check the databases, tagged or
    not, so their presence says nothing)."""
    if not databases:
        return []
    settings_only = missing_secret_errors(database=False)
    return [error for error in missing_secret_errors(database=True) if error not in settings_only]


_REPORT_ONCE = "webhooks_app.checks.report_missing_secrets_once"


def report_missing_secrets_once(**kwargs: Any) -> None:
    """Log E003 for each source without a secret at the first request this process answers.

    That is a web server's start-up log: gunicorn and uvicorn run no system checks, and
    ``AppConfig.ready`` runs for every command (``migrate`` included), where a missing secret is
    no error. One line per source and process, whatever the traffic; the refusals themselves are
    counted and logged by :mod:`webhooks_app.refusals`.
    """
    request_started.disconnect(dispatch_uid=_REPORT_ONCE)
    # Settings sources: a database source's unreadable secrets are logged when it loads.
    for error in missing_secret_errors(database=False):
        logger.error("%s %s (%s)", error.msg, error.hint, error.id)


request_started.connect(report_missing_secrets_once, dispatch_uid=_REPORT_ONCE)


@checks.register()
def check_token_reuse(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E006: one value that is a shared token somewhere and an HMAC key somewhere else.

    Compared after every fall-back (``SECRETS``, ``WEBHOOK_SECRET_<SOURCE>``,
    ``WEBHOOK_SECRET_DEFAULT``), so a reuse through the environment is found too. Shared tokens
    are what a request carries as is: the secrets of token schemes (Telegram, GitLab) and the
    ``VERIFY_TOKEN`` of a handshake (sent in its URL).
    """
    return token_reuse(list(webhook_settings.sources.values()))


def token_reuse(sources: list[SourceConfig]) -> list[checks.CheckMessage]:
    """E006 among ``sources``."""
    token_sources = {source.name for source in sources if _is_token_scheme(source.scheme)}
    tokens: dict[str, tuple[str, str]] = {}  # value -> (source, setting); the first one wins
    for source in sources:
        if source.verify_token:
            origin = f"WEBHOOKS['SOURCES'][{source.name!r}]['VERIFY_TOKEN']"
            tokens.setdefault(source.verify_token, (source.name, origin))
        if source.name in token_sources:
            for secret in source.secrets:
                tokens.setdefault(secret, (source.name, source.secret_origin))
    found: list[checks.CheckMessage] = []
    for source in sources:
        if source.name in token_sources:
            continue
        for secret in source.secrets:
            if secret in tokens:
                token_source, token_origin = tokens[secret]
                found.append(
                    message(
                        "E006",
                        key_source=source.name,
                        key_origin=source.secret_origin,
                        token_source=token_source,
                        token_origin=token_origin,
                    )
                )
    return found


def _is_token_scheme(name: str) -> bool:
    try:
        return isinstance(get_scheme(name), SharedTokenScheme)
    except (KeyError, ImportError):  # E001 (or the import error) is reported on its own
        return False


@checks.register()
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E031: ``ENCRYPTION_KEYS`` cannot encrypt or decrypt the database sources' secrets."""
    problem = crypto.keys_problem()
    if problem is None:
        return []
    return [message("E031", problem=problem, min_length=crypto.MIN_KEY_LENGTH)]


@checks.register(checks.Tags.database)
def check_database_sources(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """The database sources: shadowed by settings (W010), secrets no key decrypts (E030) or
    ending soon (W011), and what :func:`source_problems` and E006 find in settings sources.

    Only when the checks are given databases (``check --database default``, ``migrate``,
    Django's test runner), as Django's own database checks: ``manage.py check`` must work
    without a database. Before ``migrate`` has created the tables, there is nothing to check.
    """
    if not databases:
        return []
    try:
        rows = list(WebhookSource.objects.prefetch_related("secrets"))
        served = all_sources()
    except DatabaseError:
        return []
    found: list[checks.CheckMessage] = []
    soon = timezone.now() + timedelta(days=EXPIRY_WARNING_DAYS)
    for row in rows:
        if row.enabled and row.name in webhook_settings.sources:
            found.append(message("W010", source=row.name))
        unreadable = [] if crypto.keys_problem() else _undecryptable(row)
        if unreadable:
            found.append(message("E030", source=row.name, secrets=", ".join(unreadable)))
        for secret in row.secrets.all():
            if secret.not_after is not None and timezone.now() < secret.not_after <= soon:
                ends = f"{secret.not_after.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
                found.append(
                    message(
                        "W011",
                        secret=secret,
                        source=row.name,
                        not_after=ends,
                        days=EXPIRY_WARNING_DAYS,
                    )
                )
    known_schemes = scheme_names()
    stored = [source for source in served.values() if source.stored]
    for source in stored:
        found += source_problems(source, known_schemes)
    settings_reuse = check_token_reuse()
    found += [m for m in token_reuse(list(served.values())) if m not in settings_reuse]
    return found


def _undecryptable(row: WebhookSource) -> list[str]:
    found = []
    for secret in row.secrets.all():
        try:
            crypto.decrypt(secret.ciphertext)
        except crypto.Undecryptable:
            found.append(str(secret))
    return found


@checks.register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    if not webhook_settings.REQUIRE_SIGNATURE and not settings.DEBUG:
        found.append(message("W001"))
    if webhook_settings.RETENTION_DAYS < MIN_RETENTION_DAYS:
        found.append(message("W002", days=webhook_settings.RETENTION_DAYS))
    for name, path in webhook_settings.WORKFLOWS.items():
        if isinstance(path, str):
            try:
                import_string(path)
            except ImportError as exc:
                found.append(message("E005", workflow=name, path=path, error=exc))
    return found


@checks.register()
def check_workflow_limits(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    for name in webhook_settings.WORKFLOW_LIMITS:
        if not registry.is_registered(name):
            found.append(message("E008", workflow=name))
    for name in sorted(set(webhook_settings.WORKFLOW_LIMITS) | set(registry.workflow_names())):
        options = registry.limit_options(name)
        for key, value in options.items():
            problem = registry.limit_problem(key, value)
            if problem:
                found.append(message("E009", workflow=name, key=key, value=value, problem=problem))
    return found


@checks.register()
def check_alerts(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The alert rules, URLs and signing secret (:func:`webhooks_app.alerts.problems`); a rule's
    ``SOURCE`` that may be a database source is :func:`check_alert_sources`'."""
    found = alerts.problems(database=False)
    return [message(problem.check_id, **problem.params) for problem in found]


@checks.register(checks.Tags.database)
def check_alert_sources(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """What the alert rules get wrong once the database sources are known too: a ``SOURCE``
    that no source has (see :func:`check_stored_secrets_for_deployment` on the tag)."""
    if not databases:
        return []
    static = alerts.problems(database=False)
    return [
        message(problem.check_id, **problem.params)
        for problem in alerts.problems(database=True)
        if problem not in static
    ]


@checks.register()
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """W009: prometheus_client's multiprocess directory cannot hold the counts."""
    problem = metrics.multiproc_dir_problem()
    if problem is None:
        return []
    return [message("W009", path=os.environ[metrics.MULTIPROC_ENV], problem=problem)]


@checks.register()
def check_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    database = settings.DATABASES.get(DEFAULT_DB_ALIAS, {})
    if not database.get("ENGINE", "").endswith(("sqlite3", "spatialite")):
        return []
    mode = (database.get("OPTIONS") or {}).get("transaction_mode") or ""
    return [] if mode.upper() in SQLITE_WRITE_LOCK_MODES else [message("W005")]


@checks.register()
def check_queue(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The configuration of the runner ``TASK_RUNNER`` names."""
    runner = webhook_settings.TASK_RUNNER
    if runner not in TASK_RUNNERS:
        return [message("E011", runner=runner)]
    if runner == "django_tasks":
        return _check_django_tasks()
    q_cluster = getattr(settings, "Q_CLUSTER", {}) or {}
    found: list[checks.CheckMessage] = []
    broker = configured_broker(q_cluster)
    if broker is None:
        found.append(message("E007"))
    elif broker in CACHE_STAT_BROKERS:
        alias = q_cluster.get("cache", "default")
        backend = settings.CACHES.get(alias, {}).get("BACKEND", "")
        if backend in PER_PROCESS_CACHES:
            found.append(message("W007", broker=broker, alias=alias, backend=backend))
    timeout, retry = q_cluster.get("timeout"), q_cluster.get("retry", 60)
    if timeout is None:
        found.append(message("W003"))
    elif retry <= timeout:
        found.append(message("E004", retry=retry, timeout=timeout))
    return found


def _check_django_tasks() -> list[checks.CheckMessage]:
    # find_spec: whether it could be imported, without importing what TASKS may not configure.
    if not (find_spec("django.tasks") or find_spec("django_tasks")):
        return [message("E012")]
    # Not set, or the framework's own default (Django 6 has one in global_settings), which the
    # framework also tells by identity.
    configured = getattr(settings, "TASKS", None)
    if not configured or configured is getattr(global_settings, "TASKS", None):
        return [message("E013")]
    if apps.is_installed("django_tasks_db") and get_commands().get("db_worker") != "webhooks_app":
        return [message("E014")]
    return []


def configured_broker(q_cluster: Mapping[str, Any]) -> str | None:
    """The ``Q_CLUSTER`` key of the broker django-q2 will use, or None when it names none."""
    for key in BROKER_KEYS:
        value = q_cluster.get(key)
        if key == "redis" and isinstance(value, dict):  # {}: a choice, Redis with its defaults
            return key
        # django-q2 skips a broker key whose value is empty, and takes "sqs" only as a dict.
        if not value or (key == "sqs" and not isinstance(value, dict)):
            continue
        return key
    return None
