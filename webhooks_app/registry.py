"""The workflow registry: names to callables.

Workflows come from two places: the :func:`workflow` decorator in any installed app's
``workflows`` module (imported by ``AppConfig.ready``), and ``WEBHOOKS["WORKFLOWS"]``
(dotted paths, imported on first use). A name may be registered once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules, import_string

from webhooks_app.conf import webhook_settings

if TYPE_CHECKING:
    from webhooks_app.models import WebhookEvent

WorkflowFunc = Callable[[dict[str, Any], "WebhookEvent"], Any]
F = TypeVar("F", bound=Callable[..., Any])

_decorated: dict[str, WorkflowFunc] = {}
_from_settings: dict[str, WorkflowFunc] = {}


def _qualname(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def workflow(name: str) -> Callable[[F], F]:
    """Register the decorated callable as the workflow ``name``.

    It is called as ``func(inputs, event)`` in a qcluster worker and may run more than once for
    one event (retries, crash recovery): make its side effects idempotent on ``event.webhook_id``.
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


def clear_settings_cache() -> None:
    _from_settings.clear()


webhook_settings.on_reload(clear_settings_cache)
