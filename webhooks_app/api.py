"""The staff-only REST API (events: list, detail, replay; sources and workflows: list, pause,
resume) and its OpenAPI schema.

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
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from webhooks_app import services
from webhooks_app.conf import webhook_settings
from webhooks_app.models import ControlKind, EventStatus, WebhookEvent
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
CHANGING_ACTIONS = frozenset({"replay", "pause", "resume"})


class StaffWithModelPermission(permissions.BasePermission):
    """Staff only, and the model permission for the action: view to read (the schema too),
    change to replay, pause or resume."""

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
                    raise serializers.ValidationError({param: "Not a valid filter value."})
                events = events.filter(**{field: value})
        return events

    @documented(
        parameters=FILTERS,
        responses={
            200: WebhookEventSerializer(many=True),
            400: OpenApiResponse(description="A filter value with NUL or over 255 characters."),
            **REFUSALS,
            404: api_error("Invalid cursor."),
        },
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
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
