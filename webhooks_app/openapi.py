"""``documented``: drf-spectacular's ``extend_schema`` independent of the host's settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import extend_schema

F = TypeVar("F", bound=Callable[..., Any])


def documented(**kwargs: Any) -> Callable[[F], F]:
    """``extend_schema(**kwargs)`` built on drf-spectacular's ``AutoSchema``.

    ``extend_schema`` on a view method otherwise extends the host's
    ``REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]`` (DRF's own by default), which breaks
    ``/webhooks/api/schema/`` in projects that never configured drf-spectacular.
    """

    def decorate(func: F) -> F:
        func.schema = AutoSchema  # type: ignore[attr-defined]  # read by extend_schema as its base
        return extend_schema(**kwargs)(func)

    return decorate
