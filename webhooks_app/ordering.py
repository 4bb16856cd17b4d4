"""Which ordering key an incoming event gets (contract §9): the sender's own (the generic
envelope's ``order_key``), else what the source's ``ORDER_KEY`` finds in the payload.

``ORDER_KEY`` is a dotted path into the payload (``"data.object.customer"``; a digit steps into
a list) or ``"module.path:function"`` called with ``(payload, event_type)``. A payload without
the path is unordered, not an error; a function that raises leaves the event unordered and is
logged, so a bug in it never refuses a delivery the sender signed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
from collections.abc import Callable
from typing import Any

from webhooks_app.conf import SourceConfig
from webhooks_app.logutil import printable
from webhooks_app.schemes import Delivery

logger = logging.getLogger("webhooks_app")

#: The column's length: a longer key is stored as its SHA-256 (the same key, the same digest).
MAX_KEY_LENGTH = 255

KeyFunction = Callable[[Any, str], object]


def order_key(source: SourceConfig, delivery: Delivery) -> str | None:
    """The event's ordering key, or None for an unordered event."""
    if delivery.order_key is not None:
        return _fit(delivery.order_key)
    if not source.order_key:
        return None
    if ":" in source.order_key:
        try:
            value = load_function(source.order_key)(delivery.payload, delivery.event_type)
        except Exception:
            logger.exception(
                "ORDER_KEY %s of source %s failed; the event is stored unordered.",
                printable(source.order_key),
                printable(source.name),
            )
            return None
    else:
        value = lookup(delivery.payload, source.order_key)
    return key_text(value)


def lookup(payload: Any, path: str) -> Any:
    """The value at a dotted path, or None where the payload has nothing there."""
    value = payload
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def key_text(value: object) -> str | None:
    """A key from a string or a whole number; anything else (None, objects, lists, floats,
    booleans) leaves the event unordered."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not value:
        return None
    return _fit(value)


def _fit(key: str) -> str:
    if len(key) <= MAX_KEY_LENGTH:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@functools.cache
def load_function(spec: str) -> KeyFunction:
    """``"module.path:function"`` imported (ImportError/AttributeError if it is not there)."""
    module_name, _, name = spec.partition(":")
    func: KeyFunction = getattr(importlib.import_module(module_name), name)
    if not callable(func):
        raise TypeError(f"{spec} is not callable")
    return func
