"""The scheme registry: scheme names (``SOURCES[...]["SCHEME"]``) to scheme instances.

Built-in schemes are the modules of this package (``generic.py``, ``github.py``…), each exposing
its class as ``SCHEME``: a new provider is one file. A project adds its own with
:func:`register_scheme` (for instance in its ``AppConfig.ready``) or with
``WEBHOOKS["SCHEMES"] = {"name": "dotted.path.Class"}``.
"""

from __future__ import annotations

import pkgutil
from functools import cache
from importlib import import_module
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from webhooks_app.conf import webhook_settings
from webhooks_app.schemes.base import Delivery, InboundRequest, Scheme

__all__ = ["Delivery", "InboundRequest", "Scheme", "get_scheme", "register_scheme", "scheme_names"]

_NOT_SCHEMES = {"base"}
_registered: dict[str, Scheme] = {}
_loaded: dict[str, Scheme] = {}


@cache
def builtin_scheme_names() -> frozenset[str]:
    return frozenset(
        module.name for module in pkgutil.iter_modules(__path__) if module.name not in _NOT_SCHEMES
    )


def register_scheme(name: str, scheme: type[Scheme] | Scheme) -> None:
    """Make ``name`` usable as a source's ``SCHEME``."""
    _registered[name] = scheme() if isinstance(scheme, type) else scheme
    _loaded.pop(name, None)


def scheme_names() -> set[str]:
    return set(builtin_scheme_names()) | set(webhook_settings.SCHEMES) | set(_registered)


def get_scheme(name: str) -> Scheme:
    """The scheme instance for ``name``; ``KeyError`` if nothing provides it."""
    if name in _loaded:
        return _loaded[name]
    if name in _registered:
        scheme = _registered[name]
    elif name in webhook_settings.SCHEMES:
        scheme = import_string(webhook_settings.SCHEMES[name])()
    elif name in builtin_scheme_names():
        scheme = import_module(f"{__name__}.{name}").SCHEME()
    else:
        raise KeyError(name)
    _loaded[name] = scheme
    return scheme


@receiver(setting_changed)
def _clear_on_change(*, setting: str, **kwargs: Any) -> None:
    """Forget loaded schemes when ``WEBHOOKS`` (its ``SCHEMES``) changes."""
    if setting == "WEBHOOKS":
        _loaded.clear()
