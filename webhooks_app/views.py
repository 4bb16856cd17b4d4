"""Thin DRF views: adapt HTTP to :mod:`webhooks_app.ingest` and back."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NoReturn

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from webhooks_app import checks, ingest, metrics, queue, refusals, sources
from webhooks_app.api import OperatorAuthentication, api_error, sees_operator_details
from webhooks_app.conf import SourceConfig, webhook_settings
from webhooks_app.exceptions import InvalidPayload, MethodNotAllowed, WebhookError
from webhooks_app.openapi import documented
from webhooks_app.reporting import REPORT_FILTER
from webhooks_app.schemes import InboundRequest, Scheme


def json_response(body: dict[str, Any], status: int) -> HttpResponse:
    """A JSON answer; the bodies are plain str/int dicts, so no ``DjangoJSONEncoder`` per call,
    and bytes, so Django does not look up the charset to encode a ``str`` per answer."""
    return json_bytes_response(json.dumps(body).encode(), status)


def json_bytes_response(content: bytes, status: int) -> HttpResponse:
    return HttpResponse(content, content_type="application/json", status=status)


def error_response(error: WebhookError) -> HttpResponse:
    response = json_bytes_response(_error_body(error.error, error.detail), error.status_code)
    for name, value in error.headers.items():
        response[name] = value
    return response


@functools.lru_cache(maxsize=256)
def _error_body(error: str, detail: str) -> bytes:
    """A refusal's body, built once: a flood of forgeries is answered with the same few."""
    return json.dumps({"error": error, "detail": detail}).encode()


def logged_refusal(response: HttpResponse) -> HttpResponse:
    """Mark a 4xx the app has counted and logged itself (:mod:`webhooks_app.refusals`) so
    Django's ``django.request`` logger does not build a WARNING for it, which a flood of bad
    signatures would pay for per request. 5xx answers keep Django's ERROR record, so
    error reporting (``mail_admins``, Sentry) still sees them."""
    if response.status_code < 500:
        response._has_been_logged = True  # type: ignore[attr-defined]  # read by log_response
    return response


class MetaHeaders(Mapping[str, str]):
    """The request's headers by lower-case name, looked up in the WSGI environ on demand.

    A scheme reads two or three headers of a delivery; building the whole header dict first
    (Django's ``request.headers``, then lower-casing it) was a measurable share of the refusal
    path. Same names as ``request.headers``: ``HTTP_*`` plus ``Content-Type``/``-Length``.
    """

    __slots__ = ("_meta",)
    _UNPREFIXED = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})

    def __init__(self, meta: Mapping[str, Any]) -> None:
        self._meta = meta

    def __getitem__(self, name: str) -> str:
        if "_" in name:  # not a name __iter__ yields: WSGI turns "-" into "_"
            raise KeyError(name)
        key = name.upper().replace("-", "_")
        value = self._meta[key if key in self._UNPREFIXED else f"HTTP_{key}"]
        return str(value)

    def __iter__(self) -> Iterator[str]:
        for key in self._meta:
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").lower()
            elif key in self._UNPREFIXED:
                yield key.replace("_", "-").lower()

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _inbound(
    request: HttpRequest,
    body: bytes,
    config: SourceConfig,
    scheme: Scheme,
    *,
    with_query: bool = False,
) -> InboundRequest:
    """The scheme's view of the request; the URL and query only for schemes that use them."""
    return InboundRequest(
        body=body,
        headers=MetaHeaders(request.META),
        # URL-signing schemes (Twilio) need the URL the sender saw: behind a proxy that is
        # PUBLIC_URL, or the Host/X-Forwarded-Host Django trusts (USE_X_FORWARDED_HOST).
        url=_signed_url(request, config.public_url) if scheme.signs_url else "",
        query=request.GET.dict() if with_query else {},
    )


def _signed_url(request: HttpRequest, public_url: str) -> str:
    """``PUBLIC_URL`` (scheme, host and path as the sender sees them) plus the query string as
    received, which the sender may have signed too (Twilio's ``bodySHA256``). A ``PUBLIC_URL``
    that carries a query of its own is used exactly as configured."""
    if not public_url:
        return request.build_absolute_uri()
    query = request.META.get("QUERY_STRING", "")
    return f"{public_url}?{query}" if query and "?" not in public_url else public_url


class FirstRendererNegotiation(BaseContentNegotiation):
    """The webhook views answer JSON whatever ``Accept`` says: no negotiation per request."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> None:
        return None

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


ERROR_BODY = inline_serializer(
    "WebhookError", {"error": serializers.CharField(), "detail": serializers.CharField()}
)
ENVELOPE = inline_serializer(
    "GenericEnvelope",
    {
        "workflow_name": serializers.CharField(help_text="A registered workflow."),
        "inputs": serializers.DictField(required=False, help_text="Passed to the workflow."),
        "webhook_id": serializers.CharField(
            required=False,
            max_length=255,
            help_text="Idempotency key (or the X-Webhook-ID header).",
        ),
    },
)
RECEIVE_SCHEMA = documented(
    summary="Receive a webhook",
    description=(
        "The body is verified against the source's secrets over the raw bytes (generic sources: "
        "`X-Webhook-Signature: sha256=<hex HMAC-SHA256>`; provider sources: the provider's "
        "scheme), stored once per (source, webhook_id) and per signed content, and run in the "
        "background. Provider "
        "sources accept the provider's own JSON (or form) body."
    ),
    parameters=[
        OpenApiParameter("source", str, OpenApiParameter.PATH, description="Configured source."),
        OpenApiParameter("X-Webhook-Signature", str, OpenApiParameter.HEADER, required=False),
        OpenApiParameter("X-Webhook-ID", str, OpenApiParameter.HEADER, required=False),
    ],
    request=ENVELOPE,
    responses={
        202: inline_serializer(
            "Accepted",
            {
                "status": serializers.CharField(),
                "webhook_id": serializers.CharField(),
                "event_id": serializers.IntegerField(),
            },
        ),
        200: inline_serializer(
            "DuplicateOrIgnored",
            {
                "status": serializers.CharField(),
                "webhook_id": serializers.CharField(),
                "event_status": serializers.CharField(required=False),
            },
        ),
        **{
            status: OpenApiResponse(ERROR_BODY, description=meaning)
            for status, meaning in [
                (400, "invalid_json / invalid_payload"),
                (401, "missing or invalid signature"),
                (404, "unknown_source"),
                (413, "payload_too_large"),
                (415, "unsupported_media_type"),
                (422, "unknown_workflow"),
                (503, "not_configured / unavailable (with Retry-After)"),
            ]
        },
    },
    auth=[],
)


_NEGOTIATOR = FirstRendererNegotiation()


class WebhookView(APIView):
    """``/webhooks/<source>/``: every check and the storage live in ``ingest.receive``.

    No authentication classes: the HMAC is the authentication, and DRF's
    ``SessionAuthentication`` would otherwise demand a CSRF token. No metadata class: ``OPTIONS``
    reveals nothing. The URL wraps the view in ``non_atomic_requests``: ``ATOMIC_REQUESTS``
    would hold the event's transaction open until the response, so a 2xx could be sent for a
    row that then fails to commit.
    """

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    metadata_class = None
    schema = AutoSchema()
    # The raw body is read straight from the stream; DRF's parsers and negotiation would only
    # cost time on the hot path (measured: bench/RESULTS.md).
    parser_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FirstRendererNegotiation

    @RECEIVE_SCHEMA
    def post(self, request: Request, source: str) -> HttpResponse:
        django_request = request._request
        config, scheme = ingest.get_source(source)
        ingest.check_content_length(config, django_request.META.get("CONTENT_LENGTH"))
        # Read at most one byte past the limit straight from the stream: neither Django's
        # DATA_UPLOAD_MAX_MEMORY_SIZE nor a lying Content-Length decides how much we buffer.
        # (Under ASGI, Django has read the whole body before this runs: webhooks_app.asgi's
        # WebhookBodyLimit bounds it there.)
        try:
            body = django_request.read(config.max_body_bytes + 1)
        except UnreadablePostError:
            raise InvalidPayload(
                "The body could not be read: the connection closed early."
            ) from None
        outcome = ingest.receive(config, scheme, _inbound(django_request, body, config, scheme))
        metrics.count_delivery(source, outcome)
        return json_response(outcome.body, outcome.status_code)

    @documented(
        summary="Subscription handshake (WhatsApp/Meta)",
        parameters=[
            OpenApiParameter("source", str, OpenApiParameter.PATH),
            OpenApiParameter("hub.mode", str),
            OpenApiParameter("hub.verify_token", str),
            OpenApiParameter("hub.challenge", str),
        ],
        responses={
            (200, "text/plain"): OpenApiResponse(str, description="The echoed challenge."),
            403: ERROR_BODY,
            404: ERROR_BODY,
            405: ERROR_BODY,
            503: ERROR_BODY,
        },
        auth=[],
    )
    def get(self, request: Request, source: str) -> HttpResponse:
        config, scheme = ingest.get_source(source)
        inbound = _inbound(request._request, b"", config, scheme, with_query=True)
        challenge = ingest.handshake(config, scheme, inbound)
        metrics.count_handshake(source)
        return HttpResponse(challenge, content_type="text/plain")

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        """DRF's request wrapper without what these views never use: a parser context, parser
        and authenticator lists, and a negotiator instance per request (bench/RESULTS.md)."""
        return Request(request, negotiator=_NEGOTIATOR)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """DRF's per-request setup minus what these views never use, measured on the refusal
        path (bench/RESULTS.md): no format suffix, no content negotiation (answers are built as
        JSON here), no versioning, no ``request.user`` (the signature is the authentication;
        it still resolves lazily if asked for), no permission objects (anyone may deliver).
        Throttles a project configures for DRF still apply. Error reports of these requests
        hide every scheme's signature headers (:mod:`webhooks_app.reporting`)."""
        request._request.exception_reporter_filter = REPORT_FILTER
        self.check_throttles(request)

    @property
    def default_response_headers(self) -> dict[str, str]:
        """No ``Allow`` on every answer (DRF computes it per request); the 405 carries its own."""
        return {}

    # DRF passes any HttpResponse through finalize_response, skipping its renderers.
    def handle_exception(self, exc: Exception) -> HttpResponse:  # type: ignore[override]
        source = self.kwargs.get("source", "")
        if isinstance(exc, drf_exceptions.MethodNotAllowed):
            exc = MethodNotAllowed()
        if not isinstance(exc, WebhookError):
            return super().handle_exception(exc)
        response = error_response(exc)
        if isinstance(exc, MethodNotAllowed):
            try:  # an unknown source is 404 whatever the method, as for POST
                _, scheme = ingest.get_source(source)
            except WebhookError as source_error:
                exc, response = source_error, error_response(source_error)
            else:
                response["Allow"] = "GET, POST" if scheme.has_handshake else "POST"
        refusals.record(source, exc)
        metrics.count_refusal(source, exc)
        return logged_refusal(response)

    def raise_uncaught_exception(self, exc: Exception) -> NoReturn:
        """Re-raise for Django's 500 handling and error report. DRF's own reads the negotiated
        renderer first, which ``initial`` skips: under ``DEBUG`` it raised AttributeError in
        place of ``exc``."""
        raise exc


class HealthView(OperatorAuthentication, APIView):
    """``GET /webhooks/health/``: 200 when the database answers, else 503.

    Anyone (a load balancer) learns what routing needs: the database and the queue broker, each
    ``"ok"`` or ``"unavailable"``. The broker's name, queue depth and the clusters with their
    ids are for staff who may view events (their session) or the bearer of
    ``WEBHOOKS["HEALTH_TOKEN"]``: they tell an outsider how the deployment is built and loaded.
    So is ``sources``: each configured source, ``"ok"`` or ``"not_configured"`` (no secret, so
    every delivery to it is refused with 503: system check E003).
    A broker that is down is still a 200: deliveries are stored and recovery enqueues them. So
    is a source without a secret: a probe taking the server out would refuse every other one.
    """

    permission_classes = [AllowAny]
    metadata_class = None
    schema = AutoSchema()

    @documented(
        summary="Health",
        description=(
            'Anonymous: `{"database": "ok", "queue": {"status": "ok"}}`. Staff sessions and '
            '`Authorization: Bearer <WEBHOOKS["HEALTH_TOKEN"]>` also get the queue\'s '
            "`broker`, `queued` and `clusters`, and `sources`: each source `ok` or "
            "`not_configured` (no secret: every delivery to it is refused with 503)."
        ),
        responses={
            200: inline_serializer(
                "Health",
                {
                    "database": serializers.CharField(),
                    "queue": serializers.DictField(),
                    "sources": serializers.DictField(child=serializers.CharField(), required=False),
                },
            ),
            503: inline_serializer(
                "Unhealthy",
                {
                    "database": serializers.CharField(),
                    "queue": serializers.DictField(),
                    "sources": serializers.DictField(child=serializers.CharField(), required=False),
                },
            ),
        },
        auth=[],
    )
    def get(self, request: Request) -> HttpResponse:
        body: dict[str, Any] = {}
        status = 200
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            body["database"] = "ok"
        except DatabaseError:
            body["database"] = "unavailable"
            status = 503
        if sees_operator_details(request, webhook_settings.HEALTH_TOKEN):
            info = queue.queue_info()
            body["queue"] = {"status": "unavailable" if info["queued"] is None else "ok", **info}
            # The database sources too, unless the database is what fails.
            configured = sources.all_sources() if status == 200 else webhook_settings.sources
            body["sources"] = {
                source.name: "not_configured" if checks.missing_secret(source) else "ok"
                for source in configured.values()
            }
        else:
            body["queue"] = {"status": "ok" if queue.broker_reachable() else "unavailable"}
        return JsonResponse(body, status=status)


class MetricsReader(BasePermission):
    """Staff who may view events, or the bearer of ``WEBHOOKS["METRICS_TOKEN"]``: the health
    details' rule, with the metrics' own token."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return sees_operator_details(request, webhook_settings.METRICS_TOKEN)


class MetricsView(OperatorAuthentication, APIView):
    """``GET /webhooks/metrics/``: the Prometheus text exposition (:mod:`webhooks_app.metrics`).

    Anyone else is answered 401 (403 for a session without the view permission) and sees no
    number: the counts tell an outsider how the deployment is loaded and what it refuses.
    """

    permission_classes = [MetricsReader]
    metadata_class = None
    schema = AutoSchema()
    # Refusals are JSON; the exposition is an HttpResponse, whatever Prometheus's Accept says
    # (DRF would answer 406 to a scraper that accepts only text/plain).
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FirstRendererNegotiation

    @documented(
        summary="Prometheus metrics",
        description=(
            "The Prometheus text exposition: `webhooks_events`, `webhooks_queue_depth`, "
            "`webhooks_oldest_pending_seconds`, `webhooks_received_total` and "
            "`webhooks_attempt_seconds`. For staff sessions with the view permission, or "
            '`Authorization: Bearer <WEBHOOKS["METRICS_TOKEN"]>`.'
        ),
        responses={
            (200, "text/plain"): OpenApiResponse(str, description="Text format 0.0.4."),
            401: api_error("No staff session and no valid METRICS_TOKEN."),
            403: api_error("A session without the view permission."),
        },
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE)

    def get_authenticate_header(self, request: Request) -> str:
        """A 401 (not DRF's 403 for session-only views) that names the scheme to use."""
        return 'Bearer realm="webhooks_app"'
