"""The scheme registry: scheme names (``SOURCES[...]["SCHEME"]``) to scheme classes.

Built-in schemes are imported on first use. A project adds its own with
:func:`register_scheme` (for instance in its ``AppConfig.ready``) or with
``WEBHOOKS["SCHEMES"] = {"name": "dotted.path.Class"}``.
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from webhooks_app.schemes.base import Delivery, InboundRequest, Scheme

__all__ = ["Delivery", "InboundRequest", "Scheme", "get_scheme", "register_scheme", "scheme_names"]

BUILTIN_SCHEMES: dict[str, str] = {
    "generic": "webhooks_app.schemes.generic.GenericScheme",
}

_registered: dict[str, Scheme] = {}
_loaded: dict[str, Scheme] = {}


def register_scheme(name: str, scheme: type[Scheme] | Scheme) -> None:
    """Make ``name`` usable as a source's ``SCHEME``."""
    _registered[name] = scheme() if isinstance(scheme, type) else scheme
    _loaded.pop(name, None)


def scheme_names() -> set[str]:
    from webhooks_app.conf import webhook_settings

    return set(BUILTIN_SCHEMES) | set(webhook_settings.SCHEMES) | set(_registered)


def get_scheme(name: str) -> Scheme:
    """The scheme instance for ``name``; ``KeyError`` if nothing provides it."""
    if name in _loaded:
        return _loaded[name]
    from webhooks_app.conf import webhook_settings

    if name in _registered:
        scheme = _registered[name]
    elif name in webhook_settings.SCHEMES or name in BUILTIN_SCHEMES:
        path = webhook_settings.SCHEMES.get(name) or BUILTIN_SCHEMES[name]
        scheme = import_string(path)()
    else:
        raise KeyError(name)
    _loaded[name] = scheme
    return scheme


def clear_cache() -> None:
    """Forget loaded schemes (settings changed)."""
    _loaded.clear()
