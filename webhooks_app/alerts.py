"""Alert rules (contract §11): measure each rule, raise and resolve its alert exactly once,
notify.

A rule of ``WEBHOOKS["ALERTS"]`` holds or not at each evaluation (every minute: the django-q2
schedule ``webhooks_app:alerts``, or ``manage.py check_webhook_alerts`` from cron). The first
evaluation that finds it holding raises a :class:`~webhooks_app.models.WebhookAlert`, the
first that finds it no longer holding resolves it, and nothing is sent in between. Each step
happens once across every process and node, and the database decides it: of two evaluations
racing to raise, the partial unique constraint (one open alert per rule) lets one insert win;
of two racing to resolve, the second waits for the first's lock on the open row and then finds
it resolved (and the UPDATE is conditional as well). Only the winner notifies, after its
transaction committed.

Notifications: the signals ``alert_raised`` and ``alert_resolved``, ``mail_admins`` when
``ALERT_EMAIL`` is true, and a JSON POST to each of ``ALERT_URLS``. The POSTs are an outbox on
the alert row (``undelivered``), written in the transaction that raised or resolved it. Every
evaluation takes the waiting entries out in one short transaction (so two evaluations never
take the same one), posts them with one thread per URL (a URL that hangs delays no other
beyond its timeout; a URL's own notifications go in order, and stop at its first failure), and
puts back what a URL did not take, for the next evaluation. So a notification is posted at
most once per success: an entry taken by a process that dies before posting it is lost, never
sent twice. The signals and the mail come from the process that won, once; a crash between
its commit and them loses them too.

How each kind measures, in one query bounded by an index or by the window:

- ``failure_rate``: of the events whose latest attempt finished in the last ``WINDOW``
  seconds, the share that failed (``failed`` or ``dead``); no value with fewer than
  ``MIN_EVENTS`` of them. An event counts once, by its latest attempt.
- ``dead_events``: how many events turned ``dead`` in the last ``WINDOW`` seconds.
- ``oldest_pending``: how long, in seconds, the oldest ``pending`` event has waited since it was
  received (a replayed old event counts from its receipt too); no value when none waits.
- ``silence``: seconds since ``SOURCE``'s last stored delivery; no value if it never sent one.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.client import HTTPException
from typing import Any, NamedTuple, TypeGuard

from django.core.mail import mail_admins
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from webhooks_app import registry, signals, sources
from webhooks_app.conf import webhook_settings
from webhooks_app.logutil import printable
from webhooks_app.models import EventStatus, WebhookAlert, WebhookEvent
from webhooks_app.schemes.standard import StandardWebhooksScheme, signing_key
from webhooks_app.templatetags.webhooks_format import human_duration

logger = logging.getLogger("webhooks_app")

#: Seconds one POST to an alert URL may take (to connect, and for each read).
POST_TIMEOUT = 5.0
RAISED, RESOLVED = "raised", "resolved"

#: The thresholds each kind needs (besides NAME and WHEN; SOURCE and WORKFLOW narrow any rule
#: to one source or workflow, and a ``silence`` rule must name its SOURCE).
THRESHOLDS: dict[str, tuple[str, ...]] = {
    "failure_rate": ("ABOVE", "WINDOW", "MIN_EVENTS"),
    "dead_events": ("ABOVE", "WINDOW"),
    "oldest_pending": ("ABOVE",),
    "silence": ("WINDOW",),
}
SCOPE_KEYS = ("SOURCE", "WORKFLOW")
#: What a rule of each kind takes, for the system checks' hints.
TAKES: dict[str, str] = {
    "failure_rate": "ABOVE (a ratio, at least 0 and below 1), WINDOW (seconds) and MIN_EVENTS "
    "(a whole number of at least 1), and optionally SOURCE and WORKFLOW",
    "dead_events": "ABOVE (a number of events, at least 0) and WINDOW (seconds), and optionally "
    "SOURCE and WORKFLOW",
    "oldest_pending": "ABOVE (seconds, at least 0), and optionally SOURCE and WORKFLOW",
    "silence": "SOURCE and WINDOW (seconds), and optionally WORKFLOW",
}
MAX_NAME_LENGTH = WebhookAlert._meta.get_field("rule").max_length or 255


# Rules


@dataclass(frozen=True)
class Rule:
    """One rule as configured; its ``definition`` is what the alert stores."""

    definition: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.definition.get("NAME", ""))

    @property
    def kind(self) -> str:
        return str(self.definition.get("WHEN", ""))

    @property
    def above(self) -> float:
        return float(self.definition.get("ABOVE", 0))

    @property
    def window(self) -> float:
        return float(self.definition.get("WINDOW", 0))

    @property
    def min_events(self) -> int:
        return int(self.definition.get("MIN_EVENTS", 1))

    @property
    def source(self) -> str | None:
        return self.definition.get("SOURCE")

    @property
    def workflow(self) -> str | None:
        return self.definition.get("WORKFLOW")


class Problem(NamedTuple):
    """A configuration mistake: the id of its system check (a key of ``checks.MESSAGES``) and
    the message's parameters."""

    check_id: str
    params: dict[str, Any]


def parse_rules(*, database: bool = True) -> tuple[list[Rule], list[Problem]]:
    """The valid rules of ``ALERTS``, and what is wrong with the others (a rule with a problem
    is not evaluated; of two rules with one name, the first counts). Without ``database``, a
    ``SOURCE`` that no settings source has may be a database source, and is not judged."""
    raw = webhook_settings.ALERTS
    known_sources, complete = _known_sources(database)
    if not isinstance(raw, list | tuple):
        return [], [Problem("E015", {"where": "WEBHOOKS['ALERTS']", "problem": "not a list"})]
    rules: list[Rule] = []
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for index, spec in enumerate(raw):
        where = f"WEBHOOKS['ALERTS'][{index}]"
        if not isinstance(spec, Mapping):
            problems.append(Problem("E015", {"where": where, "problem": "not a dict"}))
            continue
        name = spec.get("NAME")
        if not _is_name(name):
            problem = f"its NAME is not a printable string of 1 to {MAX_NAME_LENGTH} characters"
            problems.append(Problem("E015", {"where": where, "problem": problem}))
            continue
        if name in first_index:
            params = {"name": name, "first": first_index[name], "index": index}
            problems.append(Problem("E016", params))
            continue
        first_index[name] = index
        found = _rule_problems(name, spec, known_sources, complete)
        problems += found
        if not found:
            rules.append(Rule(dict(spec)))
    return rules, problems


def _is_name(name: object) -> TypeGuard[str]:
    # Printable: the name goes into a mail's subject, where a line break is refused.
    return isinstance(name, str) and 0 < len(name.strip()) <= MAX_NAME_LENGTH and name.isprintable()


def _known_sources(database: bool) -> tuple[list[str], bool]:
    """The names of the sources served, and whether the database ones are among them."""
    if database:
        try:
            return sorted(sources.all_sources()), True
        except DatabaseError:  # no tables yet (migrate runs the checks first)
            pass
    return sorted(webhook_settings.sources), False


def _rule_problems(
    name: str, spec: Mapping[str, Any], known_sources: list[str], complete: bool
) -> list[Problem]:
    kind = spec.get("WHEN")
    if not isinstance(kind, str) or kind not in THRESHOLDS:
        return [Problem("E017", {"name": name, "kind": kind})]
    takes = {"kind": kind, "takes": TAKES[kind]}
    allowed = {"NAME", "WHEN", *THRESHOLDS[kind], *SCOPE_KEYS}
    problems = [
        Problem("E021", {"name": name, "key": key, **takes}) for key in spec if key not in allowed
    ]
    for key in THRESHOLDS[kind]:
        if key not in spec:
            problems.append(Problem("E018", {"name": name, "problem": f"has no {key}", **takes}))
        elif problem := threshold_problem(kind, key, spec[key]):
            text = f"has {key} = {spec[key]!r}, which is {problem}"
            problems.append(Problem("E018", {"name": name, "problem": text, **takes}))
    if kind == "silence" and spec.get("SOURCE") is None:
        problems.append(Problem("E019", {"name": name, "known": ", ".join(known_sources)}))
    for key, known in (("SOURCE", known_sources), ("WORKFLOW", registry.workflow_names())):
        value = spec.get(key)
        if key == "SOURCE" and not complete:
            continue  # perhaps a database source
        if value is not None and value not in known:
            params = {"name": name, "key": key, "value": value, "known": ", ".join(known)}
            problems.append(Problem("E020", params))
    return problems


def threshold_problem(kind: str, key: str, value: Any) -> str | None:
    """What is wrong with one threshold of a ``kind`` rule (check E018), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "not a number"
    if key == "MIN_EVENTS":
        return None if isinstance(value, int) and value >= 1 else "not a whole number of at least 1"
    if key == "WINDOW":
        return None if value > 0 else "not a number of seconds above 0"
    if kind == "failure_rate":
        return None if 0 <= value < 1 else "not a ratio of at least 0 and below 1"
    return None if value >= 0 else "below 0"


def problems(*, database: bool = True) -> list[Problem]:
    """Everything wrong with the alert settings: the rules, ``ALERT_URLS``,
    ``ALERT_SIGNING_SECRET`` and ``ALERT_EMAIL`` without ``ADMINS``."""
    from django.conf import settings

    found = parse_rules(database=database)[1]
    urls = webhook_settings.ALERT_URLS
    if not isinstance(urls, list | tuple):
        found.append(Problem("E022", {"problem": f"is {urls!r}, not a list of URLs"}))
    else:
        found += [
            Problem("E022", {"problem": f"holds {url!r}, which is not an http(s) URL"})
            for url in urls
            if not is_http_url(url)
        ]
    secret = webhook_settings.ALERT_SIGNING_SECRET
    if secret and (not isinstance(secret, str) or signing_key(secret) is None):
        found.append(Problem("E023", {}))
    if webhook_settings.ALERT_EMAIL and not settings.ADMINS:
        found.append(Problem("W008", {}))
    return found


def is_http_url(url: object) -> bool:
    """An absolute ``http://`` or ``https://`` URL with a host, nothing else (urllib would open
    ``file:`` and ``ftp:`` URLs too)."""
    if not isinstance(url, str) or not url.isprintable() or any(c.isspace() for c in url):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def alert_urls() -> list[str]:
    """The ``ALERT_URLS`` to post to: the http(s) ones (check E022 names the others), once each."""
    urls = webhook_settings.ALERT_URLS
    if not isinstance(urls, list | tuple):
        return []
    return list(dict.fromkeys(url for url in urls if is_http_url(url)))


# Measuring


def _events(rule: Rule) -> QuerySet[WebhookEvent]:
    events = WebhookEvent.objects.all()
    if rule.source is not None:
        events = events.filter(source=rule.source)
    if rule.workflow is not None:
        events = events.filter(workflow_name=rule.workflow)
    return events


def _failure_rate(rule: Rule, now: datetime) -> float | None:
    failed = [EventStatus.FAILED, EventStatus.DEAD]
    counts = (
        _events(rule)
        .filter(
            status__in=[EventStatus.SUCCEEDED, *failed],
            finished_at__gt=now - timedelta(seconds=rule.window),
            finished_at__lte=now,
        )
        .aggregate(total=Count("id"), failed=Count("id", filter=Q(status__in=failed)))
    )
    if counts["total"] < rule.min_events:
        return None
    return float(counts["failed"] / counts["total"])


def _dead_events(rule: Rule, now: datetime) -> float:
    return float(
        _events(rule)
        .filter(
            status=EventStatus.DEAD,
            finished_at__gt=now - timedelta(seconds=rule.window),
            finished_at__lte=now,
        )
        .count()
    )


def _oldest_pending(rule: Rule, now: datetime) -> float | None:
    # The (status, received_at) index gives the oldest at once.
    oldest = (
        _events(rule)
        .filter(status=EventStatus.PENDING, received_at__lte=now)
        .order_by("received_at")
        .values_list("received_at", flat=True)
        .first()
    )
    return None if oldest is None else (now - oldest).total_seconds()


def _silence(rule: Rule, now: datetime) -> float | None:
    received = _events(rule).filter(received_at__lte=now).order_by("-received_at")
    # A source that speaks is found within the window, walking the received_at index back from
    # now; its whole history is searched only while it is silent.
    latest = (
        received.filter(received_at__gt=now - timedelta(seconds=rule.window))
        .values_list("received_at", flat=True)
        .first()
    ) or received.aggregate(latest=Max("received_at"))["latest"]
    return None if latest is None else (now - latest).total_seconds()


_MEASURES = {
    "failure_rate": _failure_rate,
    "dead_events": _dead_events,
    "oldest_pending": _oldest_pending,
    "silence": _silence,
}


def measure(rule: Rule, now: datetime) -> float | None:
    """What the rule looks at, now (the module docstring says what, per kind)."""
    return _MEASURES[rule.kind](rule, now)


def holds(rule: Rule, value: float | None) -> bool:
    """Whether the rule's alert should be open, given what :func:`measure` found."""
    if rule.kind == "silence":
        return value is None or value >= rule.window
    return value is not None and value > rule.above


def describe(rule: Rule, value: float | None) -> str:
    """What the measurement means, in words, with the threshold."""

    def seconds(amount: float) -> str:
        return str(human_duration(amount * 1000))

    def percent(ratio: float) -> str:
        return f"{round(ratio * 100, 1):g}%"

    if rule.kind == "failure_rate":
        measured = (
            f"fewer than {rule.min_events} attempts finished"
            if value is None
            else f"{percent(value)} of the attempts that finished failed"
        )
        text = f"{measured} in the last {seconds(rule.window)} (alert above {percent(rule.above)})"
    elif rule.kind == "dead_events":
        text = (
            f"{value:.0f} events turned dead in the last {seconds(rule.window)} "
            f"(alert above {rule.above:g})"
        )
    elif rule.kind == "oldest_pending":
        measured = (
            "no event is pending"
            if value is None
            else f"the oldest pending event has waited {seconds(value)}"
        )
        text = f"{measured} (alert above {seconds(rule.above)})"
    elif rule.kind == "silence":
        measured = (
            f"no delivery from {rule.source!r} yet"
            if value is None
            else f"the last delivery from {rule.source!r} came {seconds(value)} ago"
        )
        text = f"{measured} (alert after {seconds(rule.window)} of silence)"
    else:  # a stored definition of no known kind
        text = f"measured {value!r}"
    scope = (
        [f"source {rule.source!r}"] if rule.source is not None and rule.kind != "silence" else []
    )
    scope += [f"workflow {rule.workflow!r}"] if rule.workflow is not None else []
    return f"{text} [{', '.join(scope)}]" if scope else text


# Raising and resolving


def open_alerts() -> QuerySet[WebhookAlert]:
    """The alerts open now, oldest first."""
    return WebhookAlert.objects.filter(resolved_at__isnull=True).order_by("raised_at", "pk")


def evaluate(now: datetime | None = None) -> list[WebhookAlert]:
    """Measure every rule, raise the alerts whose rule holds and resolve those whose rule no
    longer holds (or is no longer configured), then post what the URLs have not taken; returns
    the alerts open afterwards.

    Call it outside a transaction (the schedule and the command do): the notifications wait
    for the commit of the caller's transaction otherwise.
    """
    now = now or timezone.now()
    rules, found = parse_rules()
    if found:
        logger.warning(
            "%d alert rule(s) in WEBHOOKS['ALERTS'] are not evaluated: manage.py check names "
            "what is wrong.",
            len(found),
        )
    for rule in rules:
        value = measure(rule, now)
        if holds(rule, value):
            _raise(rule, value, now)
        else:
            _resolve(rule.name, now, value=value, text=describe(rule, value))
    gone = open_alerts().exclude(rule__in=[rule.name for rule in rules])
    for name in gone.values_list("rule", flat=True):
        _resolve(name, now, value=None, text="its rule is no longer configured")
    deliver()
    return list(open_alerts())


def _open(name: str) -> QuerySet[WebhookAlert]:
    return WebhookAlert.objects.filter(rule=name, resolved_at__isnull=True)


def _outbox(state: str, value: float | None, text: str) -> list[dict[str, Any]]:
    return [{"url": url, "state": state, "value": value, "text": text} for url in alert_urls()]


def _raise(rule: Rule, value: float | None, now: datetime) -> None:
    """Open the rule's alert, unless it is open: then only its value is brought up to date."""
    if _open(rule.name).update(value=value):
        return
    text = f"Alert raised: {rule.name}: {describe(rule, value)}"
    try:
        with transaction.atomic():
            alert = WebhookAlert.objects.create(
                rule=rule.name,
                definition=dict(rule.definition),
                value=value,
                raised_at=now,
                undelivered=_outbox(RAISED, value, text),
            )
            transaction.on_commit(lambda: _announce(alert, RAISED, text))
    except IntegrityError:
        pass  # another evaluation has just raised it (one open alert per rule), and notifies


def _resolve(name: str, now: datetime, *, value: float | None, text: str) -> None:
    if not _open(name).exists():  # the common case, decided without a lock
        return
    text = f"Alert resolved: {name}: {text}"
    with transaction.atomic():
        # Locked, so that a delivery pass taking the row's entries out waits for the resolved
        # ones (or this waits for it), and a second resolver finds the alert resolved.
        alert = _open(name).select_for_update().first()
        if alert is None:
            return
        undelivered = [*alert.undelivered, *_outbox(RESOLVED, value, text)]
        if not _open(name).filter(pk=alert.pk).update(resolved_at=now, undelivered=undelivered):
            return
        alert.resolved_at, alert.undelivered = now, undelivered
        transaction.on_commit(lambda: _announce(alert, RESOLVED, text))


def _announce(alert: WebhookAlert, state: str, text: str) -> None:
    """The signal and the mail, once, from the process whose transaction raised or resolved."""
    signal = signals.alert_raised if state == RAISED else signals.alert_resolved
    for receiver, result in signal.send_robust(sender=WebhookAlert, alert=alert):
        if isinstance(result, Exception):
            logger.error("A receiver of alert_%s (%r) failed.", state, receiver, exc_info=result)
    if webhook_settings.ALERT_EMAIL:
        definition = json.dumps(alert.definition, indent=2, sort_keys=True)
        try:
            mail_admins(text, f"{text}\n\nThe rule:\n{definition}\n")
        except Exception:
            logger.exception("Could not mail the admins that alert %r was %s.", alert.rule, state)


# Delivering


class _Notification(NamedTuple):
    alert_id: int
    url: str
    entry: dict[str, Any]
    webhook_id: str  # the same on every try: receivers deduplicate on it
    body: bytes


def payload(alert: WebhookAlert, entry: Mapping[str, Any]) -> dict[str, Any]:
    """What a notification POSTs: Slack's ``text``, and the alert, its state, the value the
    rule measured and the rule itself, for any other receiver."""
    return {
        "text": entry["text"],
        "alert": {
            "id": alert.pk,
            "rule": alert.rule,
            "raised_at": alert.raised_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        },
        "state": entry["state"],
        "value": entry["value"],
        "rule": alert.definition,
    }


def deliver() -> int:
    """Post every notification a URL has not taken yet, one thread per URL; put back those that
    failed, for the next call. Returns how many were taken."""
    taken = _take_undelivered()
    by_url: dict[str, list[_Notification]] = {}
    for notification in taken:
        by_url.setdefault(notification.url, []).append(notification)
    if not by_url:
        return 0
    with ThreadPoolExecutor(len(by_url), thread_name_prefix="webhooks-alerts") as pool:
        refused = [n for left in pool.map(_post_in_order, by_url.values()) for n in left]
    if refused:
        _put_back(refused)
    return len(taken) - len(refused)


def _locked(alerts: QuerySet[WebhookAlert]) -> QuerySet[WebhookAlert]:
    """Rows another evaluation is taking out are skipped, where the database can (PostgreSQL);
    SQLite's write transactions run one at a time anyway."""
    skip = connection.features.has_select_for_update_skip_locked
    return alerts.select_for_update(skip_locked=skip)


def _take_undelivered() -> list[_Notification]:
    """Take every waiting entry out of its row (a URL no longer configured loses its own)."""
    waiting = WebhookAlert.objects.exclude(undelivered=[]).order_by("pk")
    if not waiting.exists():  # the common case, decided without a (SQLite: database) lock
        return []
    urls = set(alert_urls())
    taken = []
    with transaction.atomic():
        for alert in _locked(waiting):
            for entry in alert.undelivered:
                if entry.get("url") in urls:
                    state = entry["state"]
                    body = json.dumps(payload(alert, entry)).encode()
                    webhook_id = f"alert_{alert.pk}_{state}"
                    taken.append(_Notification(alert.pk, entry["url"], entry, webhook_id, body))
            WebhookAlert.objects.filter(pk=alert.pk).update(undelivered=[])
    return taken


def _put_back(refused: Sequence[_Notification]) -> None:
    """Return what the URLs refused to the front of their rows' entries (in their order;
    anything added meanwhile, a resolution, comes after)."""
    by_alert: dict[int, list[dict[str, Any]]] = {}
    for notification in refused:
        by_alert.setdefault(notification.alert_id, []).append(notification.entry)
    with transaction.atomic():
        for alert_id, entries in by_alert.items():
            alert = WebhookAlert.objects.select_for_update().filter(pk=alert_id).first()
            if alert is not None:
                undelivered = [*entries, *alert.undelivered]
                WebhookAlert.objects.filter(pk=alert_id).update(undelivered=undelivered)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: urllib would follow it as a GET, without the body."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _post_in_order(notifications: list[_Notification]) -> list[_Notification]:
    """Post one URL's notifications in order; returns what is left from its first failure on
    (so a URL never gets an alert's resolution before its raising)."""
    for index, notification in enumerate(notifications):
        if not _post(notification):
            return notifications[index:]
    return []


def _post(notification: _Notification) -> bool:
    # A Slack webhook's URL is its secret: the log names the host alone.
    host = urllib.parse.urlsplit(notification.url).hostname
    headers = {"Content-Type": "application/json", "User-Agent": "webhooks_app-alerts"}
    try:
        if secret := webhook_settings.ALERT_SIGNING_SECRET:
            headers.update(
                StandardWebhooksScheme().sign(
                    notification.body, secret, webhook_id=notification.webhook_id
                )
            )
        request = urllib.request.Request(  # noqa: S310 - only http(s) URLs get here
            notification.url, data=notification.body, headers=headers, method="POST"
        )
        with _opener.open(request, timeout=POST_TIMEOUT):
            pass
    except (OSError, ValueError, HTTPException) as exc:  # HTTPError and timeouts are OSErrors
        logger.warning(
            "Alert notification %s to %s failed (%s); it is tried again at the next evaluation.",
            notification.webhook_id,
            host,
            printable(exc),
        )
        return False
    return True
