"""A read-only audit log of received events, with replay and purge.

Both actions call the same service functions as the commands and the API, need POST with a
CSRF token (Django admin actions) and their permission: *replay* the change permission, *purge*
(Django's delete confirmation page) the delete permission.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from webhooks_app import services
from webhooks_app.models import EventStatus, WebhookEvent


def _pretty(value: Any) -> str:
    return format_html(
        "<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    )


DETAIL_FIELDS: tuple[str, ...] = (
    "source", "webhook_id", "event_type", "workflow_name", "status", "attempts",
    "received_at", "started_at", "finished_at", "next_attempt_at",
    "pretty_payload", "pretty_headers", "pretty_result", "error", "pretty_history",
)  # fmt: skip


STATUS_COLOURS: dict[str, str] = {
    EventStatus.PENDING: "#777",
    EventStatus.RUNNING: "#1f6feb",
    EventStatus.SUCCEEDED: "#1a7f37",
    EventStatus.FAILED: "#bf8700",
    EventStatus.DEAD: "#cf222e",
    EventStatus.IGNORED: "#777",
}


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = [
        "received_at", "source", "webhook_id", "workflow_name", "coloured_status", "attempts", "duration",
    ]  # fmt: skip
    list_filter = ["status", "source", "workflow_name"]
    search_fields = ["=webhook_id"]
    date_hierarchy = "received_at"
    show_full_result_count = False
    actions = ["replay", "delete_selected"]
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

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        """Django's delete action (with its confirmation page), under the contract's name."""
        actions = super().get_actions(request)
        if (delete := actions.get("delete_selected")) is not None:
            func, name, _ = delete
            actions["delete_selected"] = (func, name, "Purge selected events")
        return actions

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        services.purge_events(queryset)

    @admin.display(description="payload")
    def pretty_payload(self, obj: WebhookEvent) -> str:
        return _pretty(obj.payload)

    @admin.display(description="headers")
    def pretty_headers(self, obj: WebhookEvent) -> str:
        return _pretty(obj.headers)

    @admin.display(description="result")
    def pretty_result(self, obj: WebhookEvent) -> str:
        return _pretty(obj.result)

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
