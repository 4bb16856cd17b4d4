"""Error reports without signatures: the exception reporter filter of the webhook views.

Django's ``SafeExceptionReporterFilter`` hides the ``request.META`` entries whose names match
``API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE``: ``HTTP_X_SHOPIFY_HMAC_SHA256`` matches none of
them, and frame variables are hidden only where ``sensitive_variables`` says so. A signature
in an error report lets whoever reads the report (a mailbox, a ticket, a chat channel) replay
the delivery it came with, or sign the body a buggy scheme was given.

The webhook views set :data:`REPORT_FILTER` on each request (``request.exception_reporter_
filter``, which Django's technical 500 page and ``AdminEmailHandler`` both honour). It is the
project's own filter (``DEFAULT_EXCEPTION_REPORTER_FILTER``) with every scheme's signature
headers hidden from ``META``, and any frame variable that holds one of their values hidden too,
whether ``DEBUG`` is on or not. What it cannot see: a signature re-encoded (decoded bytes), and
exception messages; Sentry and other reporters have their own scrubbing.
"""

from __future__ import annotations

import re
from collections.abc import ItemsView
from types import FrameType
from typing import Any

from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter, get_default_exception_reporter_filter

from webhooks_app import schemes

#: Pieces of a header value shorter than this (``sha256``, ``v1``, a timestamp) are not hidden
#: on their own: they are not secret, and would hide unrelated values. A whole value always is.
MIN_PIECE = 16
_SEPARATORS = re.compile(r"[\s,;=]+")


def _project_filter() -> Any:
    project = get_default_exception_reporter_filter()
    # A project that made this filter its default must not get one that wraps itself.
    return SafeExceptionReporterFilter() if isinstance(project, SignatureFilter) else project


def signature_meta_keys() -> frozenset[str]:
    """The ``request.META`` names of every known scheme's signature headers."""
    headers: set[str] = set()
    for name in schemes.scheme_names():
        try:
            headers |= schemes.get_scheme(name).signature_headers
        except Exception:  # noqa: S112 - a report is built whatever else is broken
            continue
    return frozenset("HTTP_" + header.upper().replace("-", "_") for header in headers)


def signature_pieces(request: HttpRequest) -> frozenset[str]:
    """The request's signature header values, and their long parts (``sha256=<hex>``'s hex,
    Stripe's ``v1=`` entries), as frame variables may hold them after parsing."""
    pieces: set[str] = set()
    meta = getattr(request, "META", {})
    for key in signature_meta_keys():
        value = meta.get(key)
        if isinstance(value, str) and value:
            pieces.add(value)
            pieces.update(p for p in _SEPARATORS.split(value) if len(p) >= MIN_PIECE)
    return frozenset(pieces)


def _holds(value: Any, pieces: frozenset[str]) -> bool:
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # Django's report shows the failing repr itself
        return False
    return any(piece in text for piece in pieces)


class SignatureFilter(SafeExceptionReporterFilter):
    """The project's exception reporter filter, with signature headers hidden (module doc):
    each part of a report comes from the project's filter, two of them cleansed further."""

    def get_safe_settings(self) -> dict[str, Any]:
        return _project_filter().get_safe_settings()

    def get_safe_cookies(self, request: HttpRequest) -> dict[str, Any]:
        return _project_filter().get_safe_cookies(request)

    def get_post_parameters(self, request: HttpRequest | None) -> Any:
        return _project_filter().get_post_parameters(request)

    def get_safe_request_meta(self, request: HttpRequest) -> dict[str, Any]:
        project = _project_filter()
        hidden = signature_meta_keys()
        return {
            key: project.cleansed_substitute if key in hidden else value
            for key, value in project.get_safe_request_meta(request).items()
        }

    def get_traceback_frame_variables(
        self, request: HttpRequest, tb_frame: FrameType
    ) -> ItemsView[str, Any]:
        project = _project_filter()
        variables = dict(project.get_traceback_frame_variables(request, tb_frame))
        if pieces := signature_pieces(request):
            for name, value in variables.items():
                if _holds(value, pieces):
                    variables[name] = project.cleansed_substitute
        return variables.items()


REPORT_FILTER = SignatureFilter()
