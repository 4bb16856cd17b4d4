"""A read-only audit log of received events, with replay and purge.

Both actions call the same service functions as the commands and the API, need POST with a
CSRF token (Django admin actions) and their permission: *replay* the change permission, *purge*
(Django's delete confirmation page) the delete permission.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from webhooks_app import dashboard, services, sql
from webhooks_app.models import Dashboard, EventStatus, WebhookEvent


def _pretty(value: Any) -> str:
    return format_html(
        "<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    )


DETAIL_FIELDS: tuple[str, ...] = (
    "source", "webhook_id", "event_type", "workflow_name", "status", "attempts",
    "received_at", "started_at", "finished_at", "next_attempt_at",
    "pretty_payload", "pretty_headers", "pretty_result", "pretty_error", "pretty_history",
)  # fmt: skip


class CappedCountPaginator(Paginator):
    """Counts at most ``CAP + 1`` rows (``COUNT`` over a ``LIMIT`` subquery).

    On a table of millions, the admin's exact ``COUNT(*)`` per page view is the slowest query;
    past the cap the list simply offers the first pages, and filters or search narrow it down.
    """

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP + 1].count()  # type: ignore[attr-defined]  # a QuerySet here


STATUS_COLOURS: dict[str, str] = {
    EventStatus.PENDING: "#777",
    EventStatus.RUNNING: "#1f6feb",
    EventStatus.SUCCEEDED: "#1a7f37",
    EventStatus.FAILED: "#bf8700",
    EventStatus.DEAD: "#cf222e",
    EventStatus.IGNORED: "#777",
}


class IndexedValuesFilter(admin.SimpleListFilter):
    """A list filter offering the values an indexed column holds, found by one index probe per
    value (:func:`sql.distinct_values`), not Django's ``SELECT DISTINCT`` over the whole table."""

    #: More distinct values than this are not offered (search or the URL still filter by them).
    MAX_CHOICES = 100

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        connection = connections[DEFAULT_DB_ALIAS]
        with connection.cursor() as cursor:
            cursor.execute(
                sql.distinct_values(connection.vendor, self.parameter_name), [self.MAX_CHOICES]
            )
            return [(value, value) for (value,) in cursor.fetchall() if value]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset if value is None else queryset.filter(**{str(self.parameter_name): value})


class SourceFilter(IndexedValuesFilter):
    title = "source"
    parameter_name = "source"


class WorkflowFilter(IndexedValuesFilter):
    title = "workflow"
    parameter_name = "workflow_name"


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = [
        "received_at", "source", "webhook_id", "workflow_name", "coloured_status", "attempts", "duration",
    ]  # fmt: skip
    # Every filter is answered by an index on a table of millions. No date_hierarchy: its
    # drill-down runs SELECT DISTINCT date_trunc(...) over the whole range on every view
    # (0.2-0.6 s on a million events); the date filter's ranges cost nothing until chosen.
    list_filter = [
        "status", SourceFilter, WorkflowFilter, ("received_at", admin.DateFieldListFilter),
    ]  # fmt: skip
    # Exact and case-sensitive (provider ids are), so the webhook_id index serves it.
    search_fields = ["webhook_id__exact"]
    search_help_text = "An exact webhook id."
    show_full_result_count = False
    paginator = CappedCountPaginator
    change_list_template = "admin/webhooks_app/webhookevent/change_list.html"
    actions = ["replay", "purge"]
    fields = DETAIL_FIELDS
    readonly_fields = DETAIL_FIELDS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="status", ordering="status")
    def coloured_status(self, obj: WebhookEvent) -> str:
        return format_html(
            '<span style="color:{};font-weight:bold">{}</span>',
            STATUS_COLOURS.get(obj.status, "inherit"),
            obj.get_status_display(),
        )

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        """*Purge* replaces Django's *Delete selected*, which would load every row it deletes.

        ``action_location`` exists from Django 6.1 on; it is passed on only when given.
        """
        extra = () if action_location is None else (action_location,)
        actions = super().get_actions(request, *extra)
        actions.pop("delete_selected", None)
        return actions

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        services.purge_events(queryset)

    @admin.action(description="Purge selected events", permissions=["delete"])
    def purge(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> HttpResponse | None:
        """Ask first (a confirmation page, POST + CSRF), then delete through the purge service."""
        if request.POST.get("post") == "yes":
            count = services.purge_events(queryset)
            self.message_user(request, f"Purged {count} event(s).", messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Purge webhook events?",
            "opts": self.opts,
            "count": queryset.count(),
            "sample": list(queryset.order_by("-received_at")[:PURGE_SAMPLE]),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
        }
        return TemplateResponse(request, "admin/webhooks_app/purge_confirmation.html", context)

    @admin.display(description="payload")
    def pretty_payload(self, obj: WebhookEvent) -> str:
        return _pretty(obj.payload)

    @admin.display(description="headers")
    def pretty_headers(self, obj: WebhookEvent) -> str:
        return _pretty(obj.headers)

    @admin.display(description="result")
    def pretty_result(self, obj: WebhookEvent) -> str:
        return _pretty(obj.result)

    @admin.display(description="error")
    def pretty_error(self, obj: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", obj.error) if obj.error else "-"

    @admin.display(description="attempts timeline")
    def pretty_history(self, obj: WebhookEvent) -> str:
        return _pretty(obj.history)

    @admin.action(description="Replay selected events", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        count = services.replay_events(queryset)
        self.message_user(request, f"Queued {count} event(s) to run again.", messages.SUCCESS)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name="webhooks_app_dashboard"),
            path(
                "<int:pk>/replay/",
                wrap(require_POST(self.replay_one_view)),
                name="webhooks_app_webhookevent_replay",
            ),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Webhooks dashboard",
            "opts": self.opts,
            "can_replay": self.has_replay_permission(request),
            "refresh_seconds": DASHBOARD_REFRESH_SECONDS,
            **dashboard.snapshot(),
        }
        return TemplateResponse(request, "admin/webhooks_app/dashboard.html", context)

    def replay_one_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The dashboard's per-failure *Replay* button (POST, CSRF, change permission)."""
        if not self.has_replay_permission(request):
            raise PermissionDenied
        event = get_object_or_404(WebhookEvent, pk=pk)
        count = services.replay_events(WebhookEvent.objects.filter(pk=event.pk))
        self.message_user(request, f"Queued {count} event(s) to run again.", messages.SUCCESS)
        return HttpResponseRedirect(_local_next(request) or reverse("admin:webhooks_app_dashboard"))


def _local_next(request: HttpRequest) -> str | None:
    """The form's ``next`` if it stays on this site; a forged form must not turn the admin's
    redirect into one to another host (``//evil.example``, ``/\\evil.example`` included)."""
    url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


DASHBOARD_REFRESH_SECONDS = 30
PURGE_SAMPLE = 20


@admin.register(Dashboard)
class DashboardAdmin(admin.ModelAdmin):
    """The *Dashboard* entry in the admin index: it leads to the dashboard page."""

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return request.user.has_perm("webhooks_app.view_webhookevent")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: object = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:webhooks_app_dashboard"))
