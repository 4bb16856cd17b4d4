"""The workflow registry: names to callables.

Workflows come from two places: the :func:`workflow` decorator in any installed app's
``workflows`` module (imported by ``AppConfig.ready``), and ``WEBHOOKS["WORKFLOWS"]``
(dotted paths, imported on first use). A name may be registered once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import autodiscover_modules, import_string

from webhooks_app.conf import Rate, parse_rate, webhook_settings

#: ``func(inputs, event)``, the event a :class:`~webhooks_app.models.WebhookEvent` (not imported:
#: the models validate a source's routes against this registry).
WorkflowFunc = Callable[[dict[str, Any], Any], Any]
F = TypeVar("F", bound=Callable[..., Any])

_decorated: dict[str, WorkflowFunc] = {}
_from_settings: dict[str, WorkflowFunc] = {}
#: ``@workflow(name, concurrency=…, rate=…)``, as the settings spell them.
_decorated_limits: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Limits:
    """What a workflow may use at once (``concurrency``) and start per period (``rate``)."""

    concurrency: int | None = None
    rate: Rate | None = None


def _qualname(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def workflow(
    name: str, *, concurrency: int | None = None, rate: str | None = None
) -> Callable[[F], F]:
    """Register the decorated callable as the workflow ``name``.

    It is called as ``func(inputs, event)`` in a qcluster worker and may run more than once for
    one event (retries, crash recovery): make its side effects idempotent on ``event.webhook_id``.
    ``concurrency`` and ``rate`` limit it as ``WEBHOOKS["WORKFLOW_LIMITS"]`` does (which wins).
    """
    if not isinstance(name, str) or not name:
        raise ImproperlyConfigured("workflow() needs a non-empty name.")

    def register(func: F) -> F:
        existing = _decorated.get(name)
        # The same function seen twice (a module imported under two names in tests) is fine.
        if existing is not None and _qualname(existing) != _qualname(func):
            raise ImproperlyConfigured(
                f"Workflow {name!r} is registered twice: by {_qualname(existing)} "
                f"and by {_qualname(func)}. Workflow names must be unique."
            )
        _decorated[name] = func
        declared = {"CONCURRENCY": concurrency, "RATE": rate}
        _decorated_limits[name] = {k: v for k, v in declared.items() if v is not None}
        clear_settings_cache()
        return func

    return register


def autodiscover() -> None:
    """Import ``workflows`` from every installed app, then check settings against them."""
    autodiscover_modules("workflows")
    clash = sorted(set(_decorated) & set(webhook_settings.WORKFLOWS))
    if clash:
        raise ImproperlyConfigured(
            f"Workflow(s) {', '.join(clash)} are registered both with @workflow and in "
            "WEBHOOKS['WORKFLOWS']. Workflow names must be unique."
        )


def get_workflow(name: str) -> WorkflowFunc | None:
    """The callable registered as ``name``, or ``None``."""
    if name in _decorated:
        return _decorated[name]
    if name in _from_settings:
        return _from_settings[name]
    path = webhook_settings.WORKFLOWS.get(name)
    if path is None:
        return None
    func: WorkflowFunc = import_string(path) if isinstance(path, str) else path
    _from_settings[name] = func
    return func


def is_registered(name: str) -> bool:
    return name in _decorated or name in webhook_settings.WORKFLOWS


def workflow_names() -> list[str]:
    return sorted(set(_decorated) | set(webhook_settings.WORKFLOWS))


def limit_options(name: str) -> dict[str, Any]:
    """The workflow's limits as configured: the decorator's, overridden key by key by
    ``WORKFLOW_LIMITS`` (unvalidated: the system checks report what is wrong)."""
    configured = webhook_settings.WORKFLOW_LIMITS.get(name) or {}
    return {**_decorated_limits.get(name, {}), **configured}


NO_LIMITS = Limits()
#: Every limited workflow's parsed limits, built on first use (cleared with the settings).
_limits: dict[str, Limits] | None = None


def _all_limits() -> dict[str, Limits]:
    global _limits
    if _limits is None:
        parsed = {
            name: _parse_limits(limit_options(name))
            for name in set(_decorated_limits) | set(webhook_settings.WORKFLOW_LIMITS)
        }
        _limits = {name: value for name, value in parsed.items() if value != NO_LIMITS}
    return _limits


def limits(name: str) -> Limits:
    """The workflow's limits; a malformed value counts as no limit (check E009 names it)."""
    return _all_limits().get(name, NO_LIMITS)


def limit_problem(key: str, value: Any) -> str | None:
    """What is wrong with one limit's value (check E009), or None."""
    if key == "CONCURRENCY":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else "not a whole number of at least 1"
    if key == "RATE":
        try:
            parse_rate(value)
        except ValueError:
            return "not a rate like '10/s' or '100/m'"
        return None
    return "not a limit this app knows (CONCURRENCY, RATE)"


def _parse_limits(options: dict[str, Any]) -> Limits:
    valid = {k: v for k, v in options.items() if limit_problem(k, v) is None}
    rate = valid.get("RATE")
    return Limits(
        concurrency=valid.get("CONCURRENCY"), rate=None if rate is None else parse_rate(rate)
    )


def limited_workflows() -> frozenset[str]:
    """The workflows with a concurrency or rate limit: their claims take the slow path."""
    global _limited
    if _limited is None:
        _limited = frozenset(_all_limits())
    return _limited


_limited: frozenset[str] | None = None


def clear_settings_cache() -> None:
    global _limits, _limited
    _from_settings.clear()
    _limits = _limited = None


@receiver(setting_changed)
def _clear_on_change(*, setting: str, **kwargs: Any) -> None:
    """``WORKFLOWS`` and ``WORKFLOW_LIMITS`` are read once, until ``WEBHOOKS`` changes."""
    if setting == "WEBHOOKS":
        clear_settings_cache()
