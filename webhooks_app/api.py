"""The staff-only REST API (events: list, detail, replay; sources and workflows: list, pause,
resume; open alerts; bulk replays: start, progress, cancel) and its OpenAPI schema.

The views carry drf-spectacular's ``AutoSchema`` themselves, so a host project needs no
``DEFAULT_SCHEMA_CLASS`` setting for ``/webhooks/api/schema/`` to work.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, ClassVar

from django.db.models import QuerySet
from django.urls import include, path, reverse
from django.utils.module_loading import import_string
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from drf_spectacular.views import SpectacularAPIView
from rest_framework import mixins, permissions, serializers, viewsets
from rest_framework.authentication import BaseAuthentication
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from webhooks_app import alerts, replays, search, services
from webhooks_app.conf import webhook_settings
from webhooks_app.models import (
    ControlKind,
    EventStatus,
    WebhookAlert,
    WebhookEvent,
    WebhookReplay,
)
from webhooks_app.openapi import documented


class OperatorAuthentication:
    """Mixin for the operator's views: DRF authentication from
    ``WEBHOOKS["API_AUTHENTICATION_CLASSES"]`` (the session by default), read per request.

    Not DRF's ``DEFAULT_AUTHENTICATION_CLASSES``: its default includes ``BasicAuthentication``,
    which browsers resend by themselves and which skips the CSRF check, so a forged form could
    replay events. A project that wants tokens for this API says so in ``WEBHOOKS``.
    """

    def get_authenticators(self) -> list[BaseAuthentication]:
        return [import_string(path)() for path in webhook_settings.API_AUTHENTICATION_CLASSES]


def is_staff_with(user: Any, action: str) -> bool:
    """Active staff holding ``webhooks_app.<action>_webhookevent``."""
    return bool(
        user
        and user.is_authenticated
        and user.is_staff
        and user.has_perm(f"webhooks_app.{action}_webhookevent")
    )


def bearer_token_matches(request: Request, token: str) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries ``token``; compared in constant time,
    and an unset (empty) token never matches."""
    kind, _, provided = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return (
        bool(token)
        and kind.lower() == "bearer"
        and hmac.compare_digest(provided.strip().encode(), token.encode())
    )


def sees_operator_details(request: Request, token: str) -> bool:
    """Staff who may view events (their session), or the bearer of ``token``: who may see what
    the operator's pages show beyond up/down (health details; metrics share the rule)."""
    return bearer_token_matches(request, token) or is_staff_with(request.user, "view")


#: The actions that change what runs: they need the change permission, reading needs view.
CHANGING_ACTIONS = frozenset({"replay", "pause", "resume", "create", "cancel"})


class StaffWithModelPermission(permissions.BasePermission):
    """Staff only, and the model permission for the action: view to read (the schema too),
    change to replay (one event or in bulk), pause, resume or cancel a bulk replay."""

    def has_permission(self, request: Request, view: Any) -> bool:
        changing = getattr(view, "action", None) in CHANGING_ACTIONS
        return is_staff_with(request.user, "change" if changing else "view")


class EventPagination(CursorPagination):
    """Cursor pagination: constant cost on any page of a large table (no COUNT, no OFFSET)."""

    ordering = ("-received_at", "-id")
    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"


class WebhookEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEvent
        fields = [
            "id", "source", "webhook_id", "event_type", "workflow_name", "status", "attempts",
            "payload", "headers", "result", "error", "history",
            "received_at", "started_at", "finished_at", "next_attempt_at",
        ]  # fmt: skip
        read_only_fields = fields


#: One serializer for every error body: drf-spectacular warns of (and may mix up) two
#: components of the same name.
API_ERROR = inline_serializer("ApiError", {"detail": serializers.CharField()})


def api_error(description: str) -> OpenApiResponse:
    return OpenApiResponse(API_ERROR, description=description)


MAX_FILTER_LENGTH = 255

REFUSALS = {
    401: api_error("Not logged in."),
    403: api_error("Not staff, or without the model permission."),
}

#: What get_queryset accepts, stated in the schema so clients (and schemathesis) know it.
FILTER_VALUE = {"type": "string", "maxLength": MAX_FILTER_LENGTH, "pattern": "^[^\\u0000]*$"}

FILTERS = [
    OpenApiParameter("status", str, enum=EventStatus.values, description="Only this status."),
    OpenApiParameter("source", FILTER_VALUE, description="Only this source."),
    OpenApiParameter("workflow", FILTER_VALUE, description="Only this workflow name."),
    # A family of parameters; OpenAPI 3.0 has no pattern for names, so it is named as one.
    OpenApiParameter(
        f"{search.PARAMETER_PREFIX}<path>",
        FILTER_VALUE,
        description=(
            "Payload search: any `payload.<dotted.path>=<value>` parameters, all of which must "
            "match, e.g. `payload.data.object.customer=cus_123`. The payload holds, at that "
            "path of object keys (arrays are not entered), a string equal to the value, or "
            'the number, `true`, `false` or `null` it writes (`42` finds 42, 42.0 and "42"). '
            f"At most {search.MAX_TERMS} terms; an empty path segment, a double quote in the "
            f"path, NUL or over {search.MAX_LENGTH} characters is a 400 `invalid_search`."
        ),
    ),
]


class WebhookEventViewSet(
    OperatorAuthentication,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet[WebhookEvent],
):
    """Received events, newest first."""

    schema = AutoSchema()
    serializer_class = WebhookEventSerializer
    permission_classes = [StaffWithModelPermission]
    pagination_class = EventPagination

    def get_queryset(self) -> QuerySet[WebhookEvent]:
        events = WebhookEvent.objects.all()
        params = self.request.query_params
        for param, field in (
            ("status", "status"),
            ("source", "source"),
            ("workflow", "workflow_name"),
        ):
            if value := params.get(param):
                # PostgreSQL refuses NUL in a string literal (DataError): a 400, not a 500.
                if "\x00" in value or len(value) > MAX_FILTER_LENGTH:
                    raise serializers.ValidationError(
                        {
                            "error": "invalid_filter",
                            "detail": f"{param}: a filter value holds no NUL character and at "
                            f"most {MAX_FILTER_LENGTH} characters.",
                        }
                    )
                events = events.filter(**{field: value})
        try:
            return events.filter(search.matching(search.api_terms(params)))
        except search.InvalidSearch as exc:
            raise serializers.ValidationError(
                {"error": "invalid_search", "detail": str(exc)}
            ) from None

    @documented(
        parameters=FILTERS,
        responses={
            200: WebhookEventSerializer(many=True),
            400: OpenApiResponse(
                description="A filter value with NUL or over 255 characters: "
                '`{"error": "invalid_filter", "detail": …}`; a payload search that cannot be '
                'searched: `{"error": "invalid_search", "detail": …}`.'
            ),
            **REFUSALS,
            404: api_error("Invalid cursor."),
        },
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            terms = search.api_terms(request.query_params)
        except search.InvalidSearch:
            terms = []  # get_queryset answers the 400
        page_size = EventPagination().get_page_size(request) or EventPagination.page_size
        with search.planned(terms, page_size):
            return super().list(request, *args, **kwargs)

    @documented(
        responses={200: WebhookEventSerializer, **REFUSALS, 404: api_error("No such event.")}
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @documented(
        request=None,
        responses={
            200: inline_serializer("Replayed", {"replayed": serializers.IntegerField()}),
            **REFUSALS,
            404: api_error("No such event."),
        },
    )
    @action(detail=True, methods=["post"])
    def replay(self, request: Request, pk: str | None = None) -> Response:
        """Run the event's workflow once more (running and ignored events are left alone)."""
        event = self.get_object()
        return Response(
            {"replayed": services.replay_events(WebhookEvent.objects.filter(pk=event.pk))}
        )


class ControlStateSerializer(serializers.Serializer):
    name = serializers.CharField()
    paused = serializers.BooleanField()
    waiting = serializers.IntegerField(help_text="Its pending and failed events.")
    changed_at = serializers.DateTimeField(
        allow_null=True, help_text="When it was last paused or resumed; null if never."
    )
    changed_by = serializers.CharField(help_text="Who did it: a user name, or the command's.")


CONTROL_NAME = OpenApiParameter(
    "name", str, OpenApiParameter.PATH, description="The source's or the workflow's name."
)
NO_SUCH_TARGET = api_error("No such source or workflow; the detail names the known ones.")


class ProcessingControlViewSet(OperatorAuthentication, viewsets.ViewSet):
    """Every configured source (or registered workflow), paused or not, with its waiting
    events; pausing and resuming it (contract §9). Subclasses say which ``kind``."""

    kind: ClassVar[str]
    schema = AutoSchema()
    permission_classes = [StaffWithModelPermission]
    lookup_field = "name"
    lookup_value_regex = "[^/]+"  # workflow names may hold dots

    @documented(responses={200: ControlStateSerializer(many=True), **REFUSALS})
    def list(self, request: Request) -> Response:
        return Response(ControlStateSerializer(services.controls(self.kind), many=True).data)

    @documented(
        request=None,
        parameters=[CONTROL_NAME],
        responses={
            200: inline_serializer(
                "Paused", {"name": serializers.CharField(), "paused": serializers.BooleanField()}
            ),
            **REFUSALS,
            404: NO_SUCH_TARGET,
        },
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, name: str) -> Response:
        """New attempts of its events wait until it is resumed; running ones finish."""
        self._steer(services.pause, name)
        return Response({"name": name, "paused": True})

    @documented(
        request=None,
        parameters=[CONTROL_NAME],
        responses={
            200: inline_serializer(
                "Resumed",
                {
                    "name": serializers.CharField(),
                    "paused": serializers.BooleanField(),
                    "requeued": serializers.IntegerField(),
                },
            ),
            **REFUSALS,
            404: NO_SUCH_TARGET,
        },
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, name: str) -> Response:
        """Its waiting events go back on the queue (``requeued``: how many)."""
        requeued = self._steer(services.resume, name)
        return Response({"name": name, "paused": False, "requeued": requeued})

    def _steer(self, step: Callable[..., Any], name: str) -> Any:
        try:
            return step(self.kind, name, by=self.request.user.get_username())
        except services.UnknownTarget as exc:
            raise NotFound(str(exc)) from None


class SourceControlViewSet(ProcessingControlViewSet):
    """``/webhooks/api/sources/``."""

    kind = ControlKind.SOURCE


class WorkflowControlViewSet(ProcessingControlViewSet):
    """``/webhooks/api/workflows/``."""

    kind = ControlKind.WORKFLOW


class WebhookAlertSerializer(serializers.ModelSerializer):
    description = serializers.SerializerMethodField(
        help_text="What the rule measured, in words, with its threshold."
    )

    class Meta:
        model = WebhookAlert
        fields = ["id", "rule", "definition", "value", "raised_at", "description"]
        read_only_fields = fields

    def get_description(self, alert: WebhookAlert) -> str:
        return alerts.describe(alerts.Rule(alert.definition), alert.value)


class WebhookAlertViewSet(OperatorAuthentication, viewsets.ViewSet):
    """``/webhooks/api/alerts/``: the open alerts (contract §11), oldest first; their history
    is in the admin."""

    schema = AutoSchema()
    permission_classes = [StaffWithModelPermission]

    @documented(responses={200: WebhookAlertSerializer(many=True), **REFUSALS})
    def list(self, request: Request) -> Response:
        return Response(WebhookAlertSerializer(alerts.open_alerts(), many=True).data)


class WebhookReplaySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookReplay
        fields = [
            "id", "state", "count", "done", "filters", "created_at", "created_by", "finished_at",
        ]  # fmt: skip
        read_only_fields = fields


_WHEN = {
    "oneOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "pattern": "^[0-9]{1,5}[smhd]$"},
    ],
}
_WHEN_HELP = "ISO 8601, or a time ago: 30m, 6h, 2d."
_NAME = {**FILTER_VALUE, "minLength": 1}
#: The body of ``POST /webhooks/api/replays/``, for the schema: the view checks it itself
#: (:func:`replays.parse_filters`), so that every refusal is one ``invalid_filter``.
REPLAY_REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "source": _NAME,
        "workflow": _NAME,
        "status": {
            "type": "array",
            "items": {"type": "string", "enum": list(replays.REPLAYABLE_STATUSES)},
            "minItems": 1,
            "default": replays.DEFAULT_STATUSES,
            "description": "Running events are never replayed.",
        },
        "event_type": _NAME,
        "since": {**_WHEN, "description": f"Received at or after this. {_WHEN_HELP}"},
        "until": {**_WHEN, "description": f"Received before this. {_WHEN_HELP}"},
        "dry_run": {"type": "boolean", "default": False, "description": "Only count."},
    },
}
INVALID_FILTER = OpenApiResponse(
    inline_serializer(
        "InvalidFilter",
        {"error": serializers.ChoiceField(["invalid_filter"]), "detail": serializers.CharField()},
    ),
    description="A filter unknown, of the wrong type or that does not parse; the detail names it.",
)
NO_SUCH_REPLAY = api_error("No such replay.")


def invalid_filter(detail: str) -> Response:
    """The one answer to bad replay filters: ``400 {"error": "invalid_filter", "detail": …}``."""
    return Response({"error": "invalid_filter", "detail": detail}, status=400)


class WebhookReplayViewSet(
    OperatorAuthentication, mixins.RetrieveModelMixin, viewsets.GenericViewSet[WebhookReplay]
):
    """Bulk replays by filter (contract §10): counted, or started to run in the background;
    their progress; cancel."""

    schema = AutoSchema()
    queryset = WebhookReplay.objects.all()
    serializer_class = WebhookReplaySerializer
    permission_classes = [StaffWithModelPermission]
    parser_classes = [JSONParser]
    lookup_value_regex = "[0-9]+"

    @documented(
        request={"application/json": REPLAY_REQUEST},
        responses={
            200: inline_serializer("ReplayCount", {"count": serializers.IntegerField()}),
            202: WebhookReplaySerializer,
            400: INVALID_FILTER,
            **REFUSALS,
            415: api_error("Not sent as application/json."),
        },
    )
    def create(self, request: Request) -> Response:
        """With ``dry_run``, how many events the filters select (``200 {"count"}``); without,
        a replay of them, started in the background (``202``; then poll its progress)."""
        try:
            body = request.data
        except ParseError as exc:
            return invalid_filter(f"The body is not valid JSON: {exc.detail}")
        if not isinstance(body, dict):
            return invalid_filter("The body must be a JSON object of filters.")
        filters = dict(body)
        dry_run = filters.pop("dry_run", False)
        if not isinstance(dry_run, bool):
            return invalid_filter(f"dry_run: expected true or false, got {dry_run!r:.60}.")
        try:
            if dry_run:
                return Response({"count": replays.count_matching(filters)})
            replay = replays.start_replay(filters, by=request.user.get_username())
        except replays.InvalidFilter as exc:
            return invalid_filter(str(exc))
        location = reverse("webhooks_app:replay-detail", args=[replay.pk])
        return Response(
            self.get_serializer(replay).data, status=202, headers={"Location": location}
        )

    @documented(responses={200: WebhookReplaySerializer, **REFUSALS, 404: NO_SUCH_REPLAY})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Its state (``running``, ``finished``, ``cancelled``) and progress: ``done`` of
        ``count`` queued so far."""
        return super().retrieve(request, *args, **kwargs)

    @documented(
        request=None, responses={200: WebhookReplaySerializer, **REFUSALS, 404: NO_SUCH_REPLAY}
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Queue no more of it (what it queued already still runs); a finished or cancelled
        replay is left as it is."""
        replay = replays.cancel_replay(self.get_object().pk)
        return Response(self.get_serializer(replay).data)


class SchemaView(OperatorAuthentication, SpectacularAPIView):
    """``GET /webhooks/api/schema/``: this app's endpoints only, at the prefix the host chose;
    for the staff who may read the API, like the API itself."""

    schema = None  # not part of the schema itself
    permission_classes = [StaffWithModelPermission]
    custom_settings = {
        "TITLE": "webhooks_app",
        "DESCRIPTION": "Receiving endpoints and the staff API.",
    }

    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        prefix = reverse("webhooks_app:health").removesuffix("health/").lstrip("/")
        self.patterns = [path(prefix, include("webhooks_app.urls"))]
        return super().get(request, *args, **kwargs)
