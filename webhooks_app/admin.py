"""A read-only audit log of received events, with replay and purge, the processing controls
(pause and resume a source or a workflow), and the read-only history of alerts. The sources'
pages are :mod:`webhooks_app.source_admin`, registered here.

Both actions call the same service functions as the commands and the API, need POST with a
CSRF token (Django admin actions) and their permission: *replay* the change permission, *purge*
(Django's delete confirmation page) the delete permission; so do *Pause* and *Resume* on the
controls page (the change permission). An event's page answers the operator's first questions
at the top (what happened, when, how often it failed, what holds it back, what happens next)
and offers *Replay*; it has no *Delete*: one event is purged like many, from the list.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import (
    ERROR_FLAG,
    IGNORED_PARAMS,
    PAGE_VAR,
    SEARCH_VAR,
    ChangeList,
)
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from webhooks_app import dashboard, lifecycle, replays, search, services, sql
from webhooks_app.conf import webhook_settings
from webhooks_app.models import (
    ControlKind,
    Dashboard,
    EventStatus,
    ProcessingControl,
    ReplayState,
    WebhookAlert,
    WebhookEvent,
    WebhookReplay,
    WebhookSource,
)
from webhooks_app.source_admin import WebhookSourceAdmin
from webhooks_app.templatetags.webhooks_format import human_duration, last_error, local_time


def _pretty(value: Any) -> str:
    return format_html(
        "<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    )


def _shown_time(field: str, description: str) -> Callable[[Any, WebhookEvent], str]:
    """An admin column or field showing a time column through :func:`local_time` (Django's
    own rendering stops at the minute)."""

    @admin.display(description=description, ordering=field)
    def show(model_admin: Any, obj: WebhookEvent) -> str:
        return local_time(getattr(obj, field))

    return show


DETAIL_FIELDS: tuple[str, ...] = (
    "source", "webhook_id", "event_type", "workflow_name", "coloured_status", "attempts",
    "received", "started", "finished", "next_attempt", "attempts_timeline",
    "pretty_payload", "pretty_headers", "pretty_result",
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


#: The list's word for what the claim last found holding a waiting event back (``waiting_for``).
WAITING_HINTS: dict[str, str] = {
    "key": "held by its key",
    "concurrency": "concurrency limit",
    "rate": "rate limit",
}


def waiting_hint(event: WebhookEvent, paused: bool) -> str:
    """A word or two for the list on why a pending or failed event waits, from its own row and
    whether its source or workflow is ``paused``; the event's page says it exactly
    (:func:`lifecycle.waiting_reason`, a query per event)."""
    if event.status not in (EventStatus.PENDING, EventStatus.FAILED):
        return ""
    return "paused" if paused else WAITING_HINTS.get(event.waiting_for, "")


class EventChangeList(ChangeList):
    """The event list; each listed event is annotated with ``paused_control``: whether its
    source or workflow is paused. An index probe per listed row inside the page's one query, and
    nothing at all where the page is not drawn (an action's POST builds the list too)."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        pausing = ProcessingControl.objects.filter(paused=True).filter(
            Q(kind=ControlKind.SOURCE, name=OuterRef("source"))
            | Q(kind=ControlKind.WORKFLOW, name=OuterRef("workflow_name"))
        )
        self.result_list = self.result_list.annotate(paused_control=Exists(pausing))


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
        "received", "source", "listed_webhook_id", "workflow", "coloured_status", "attempts",
        "last_duration",
    ]  # fmt: skip
    # Every filter is answered by an index on a table of millions. No date_hierarchy: its
    # drill-down runs SELECT DISTINCT date_trunc(...) over the whole range on every view
    # (0.2-0.6 s on a million events); the date filter's ranges cost nothing until chosen.
    list_filter = [
        "status", SourceFilter, WorkflowFilter, ("received_at", admin.DateFieldListFilter),
    ]  # fmt: skip
    # Exact and case-sensitive (provider ids are), so the webhook_id index serves it; a term
    # with "=" is a payload search as well (get_search_results).
    search_fields = ["webhook_id__exact"]
    search_help_text = (
        "An exact webhook id, or a value in the payload as path=value "
        "(data.object.customer=cus_123); several terms must all match."
    )
    show_full_result_count = False
    paginator = CappedCountPaginator
    change_list_template = "admin/webhooks_app/webhookevent/change_list.html"
    actions = ["replay", "purge"]
    fields = DETAIL_FIELDS
    readonly_fields = DETAIL_FIELDS

    class Media:
        css = {"all": ["webhooks_app/events.css"]}

    received = _shown_time("received_at", "received at")
    started = _shown_time("started_at", "started at")
    finished = _shown_time("finished_at", "finished at")
    next_attempt = _shown_time("next_attempt_at", "next attempt at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Purging (the list's action, asked without an ``obj``) needs the delete permission;
        one event's *Delete* button and page are refused: the log is read-only, and an event
        is purged like many, through the confirmation page that says what a purge means."""
        return obj is None and super().has_delete_permission(request)

    @admin.display(description="status", ordering="status")
    def coloured_status(self, obj: WebhookEvent) -> str:
        """The status; in the list, with what holds a waiting event back (``pending · paused``)."""
        status = format_html(
            '<span style="color:{};font-weight:bold">{}</span>',
            STATUS_COLOURS.get(obj.status, "inherit"),
            obj.get_status_display(),
        )
        # Only the list's rows carry the annotation (EventChangeList); the event's page says more.
        paused = getattr(obj, "paused_control", None)
        hint = "" if paused is None else waiting_hint(obj, paused)
        if not hint:
            return status
        return format_html(
            '{} <small class="wh-waiting" title="Its page says what it waits for">· {}</small>',
            status,
            hint,
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return EventChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[WebhookEvent], search_term: str
    ) -> tuple[QuerySet[WebhookEvent], bool]:
        """``path=value`` terms search the payload (:func:`search.admin_search`), the others
        ``search_fields``; a term that is no valid payload search says why."""
        terms = search.admin_search(search_term)
        for problem in terms.problems:
            self.message_user(request, problem, messages.WARNING)
        queryset, may_have_duplicates = super().get_search_results(request, queryset, terms.rest)
        return queryset.filter(terms.condition), may_have_duplicates

    # The list's columns are kept narrow so that all of them fit beside the navigation and
    # filter sidebars at 1280 px: a long id is cut (whole in its title), headers are short.
    @admin.display(description="webhook id", ordering="webhook_id")
    def listed_webhook_id(self, obj: WebhookEvent) -> str:
        return format_html(
            '<span class="wh-id" title="{}">{}</span>', obj.webhook_id, obj.webhook_id
        )

    @admin.display(description="workflow", ordering="workflow_name")
    def workflow(self, obj: WebhookEvent) -> str:
        return obj.workflow_name

    @admin.display(description="duration")
    def last_duration(self, obj: WebhookEvent) -> str:
        return human_duration(obj.duration)

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

    @admin.display(description="attempts")
    def attempts_timeline(self, obj: WebhookEvent) -> str:
        """One row per attempt; the last failed one opens onto the stored traceback (only the
        latest failure's traceback is kept, each attempt keeps its one-line error)."""
        history = [entry for entry in obj.history if isinstance(entry, dict)]
        rows = [
            {
                "attempt": entry.get("attempt"),
                "started": local_time(entry.get("started_at")),
                "duration": human_duration(entry.get("duration_ms")),
                "outcome": entry.get("outcome", ""),
                "shown_outcome": shown_outcome(entry),
                "error": entry.get("error", ""),
            }
            for entry in history
        ]
        failed_last = not history or history[-1].get("outcome") != EventStatus.SUCCEEDED
        return render_to_string(
            "admin/webhooks_app/attempts.html",
            {"rows": rows, "traceback": obj.error if failed_last else ""},
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: WebhookEvent | None = None,
    ) -> HttpResponse:
        """The event page's summary and *Replay* button, above the fields."""
        if obj is not None:
            waiting = lifecycle.waiting_reason(obj)
            context["summary"] = {
                "status": self.coloured_status(obj),
                "waiting": _linked_reason(waiting) if waiting else "",
                "failed": sum(
                    1
                    for entry in obj.history
                    if isinstance(entry, dict) and entry.get("outcome") != EventStatus.SUCCEEDED
                ),
                "error": last_error(obj),
                "next": what_happens_next(obj, timezone.now(), held=bool(waiting)),
                # What services.replay_events leaves alone is not offered.
                "can_replay": self.has_replay_permission(request)
                and obj.status != EventStatus.RUNNING
                and bool(obj.workflow_name),
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Replay selected events", permissions=["replay"])
    def replay(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        count = services.replay_events(queryset)
        self.message_user(request, f"Queued {count} event(s) to run again.", messages.SUCCESS)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def has_pause_permission(self, request: HttpRequest) -> bool:
        """Pausing and resuming change what runs, like a replay: the change permission."""
        return self.has_replay_permission(request)

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name="webhooks_app_dashboard"),
            path("controls/", wrap(self.controls_view), name="webhooks_app_controls"),
            path(
                "controls/steer/",
                wrap(require_POST(self.steer_view)),
                name="webhooks_app_steer",
            ),
            path(
                "<int:pk>/replay/",
                wrap(require_POST(self.replay_one_view)),
                name="webhooks_app_webhookevent_replay",
            ),
            path(
                "replay-matching/",
                wrap(self.replay_matching_view),
                name="webhooks_app_webhookevent_replay_matching",
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
            "time_zone": timezone.get_current_timezone_name(),
            **dashboard.snapshot(),
        }
        return TemplateResponse(request, "admin/webhooks_app/dashboard.html", context)

    def controls_view(self, request: HttpRequest) -> HttpResponse:
        """*Processing controls*: every source and workflow, paused or not, with its waiting
        events and who changed it when; *Pause* and *Resume* for those who may change."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "title": "Processing controls",
            "opts": self.opts,
            "can_steer": self.has_pause_permission(request),
            "tables": [
                {
                    "caption": "Sources",
                    "kind": ControlKind.SOURCE.value,
                    "filter": "source",
                    "rows": services.controls(ControlKind.SOURCE),
                },
                {
                    "caption": "Workflows",
                    "kind": ControlKind.WORKFLOW.value,
                    "filter": "workflow_name",
                    "rows": services.controls(ControlKind.WORKFLOW),
                },
            ],
        }
        return TemplateResponse(request, "admin/webhooks_app/controls.html", context)

    def steer_view(self, request: HttpRequest) -> HttpResponse:
        """The controls page's *Pause* and *Resume* buttons (POST, CSRF, change permission):
        form fields ``kind``, ``name`` and ``step``; back to the page with what was done."""
        if not self.has_pause_permission(request):
            raise PermissionDenied
        kind, name, step = (request.POST.get(field, "") for field in ("kind", "name", "step"))
        if kind not in ControlKind.values or step not in ("pause", "resume"):
            return HttpResponseBadRequest("kind: source or workflow; step: pause or resume.")
        by = request.user.get_username()
        try:
            if step == "pause":
                services.pause(kind, name, by=by)
                done = services.paused_sentence(kind, name)
            else:
                done = services.resumed_sentence(kind, name, services.resume(kind, name, by=by))
        except services.UnknownTarget as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:webhooks_app_controls"))

    def replay_one_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The *Replay* button of the dashboard's failures and of an event's page (POST, CSRF,
        change permission)."""
        if not self.has_replay_permission(request):
            raise PermissionDenied
        event = get_object_or_404(WebhookEvent, pk=pk)
        if services.replay_events(WebhookEvent.objects.filter(pk=event.pk)):
            self.message_user(request, "Queued 1 event(s) to run again.", messages.SUCCESS)
        else:
            self.message_user(
                request, "Not queued: the event is running or has no workflow.", messages.WARNING
            )
        return HttpResponseRedirect(_local_next(request) or reverse("admin:webhooks_app_dashboard"))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The list, with *Replay all N matching* when it is filtered (N counted up to
        :attr:`CappedCountPaginator.CAP`; the confirmation page counts exactly)."""
        if request.method == "GET" and self.has_replay_permission(request):
            extra_context = {**(extra_context or {}), "replay_matching": _replay_offer(request)}
        return super().changelist_view(request, extra_context)

    def replay_matching_view(self, request: HttpRequest) -> HttpResponse:
        """*Replay all N matching*: the list's filters (its query string) and the exact count on
        a confirmation page; its POST (CSRF, change permission) starts the replay in the
        background and leads to the replay's page. A list narrowed by what a replay cannot
        select (a search, another lookup) is refused, never replayed as a different set."""
        if not self.has_replay_permission(request):
            raise PermissionDenied
        changelist = reverse("admin:webhooks_app_webhookevent_changelist")
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Replay all matching webhook events?",
            "opts": self.opts,
            "back": f"{changelist}?{request.GET.urlencode()}",
        }
        try:
            filters = replays.parse_filters(changelist_replay_filters(request.GET))
            if request.method == "POST":
                replay = replays.start_replay(filters, by=request.user.get_username())
                self.message_user(
                    request,
                    f"Replay {replay.pk} started: {replay.count} event(s) to queue in the "
                    "background.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:webhooks_app_webhookreplay_change", args=[replay.pk])
                )
            context |= {
                "count": replays.count_matching(filters),
                "described": replays.describe(filters),
            }
        except replays.InvalidFilter as exc:
            context["refused"] = str(exc)
        return TemplateResponse(request, "admin/webhooks_app/replay_confirmation.html", context)


#: The event list's query parameters that a bulk replay can select by, and its filter for each.
CHANGELIST_REPLAY_FILTERS = {
    "status__exact": "status", "status": "status", "status__in": "status",
    "source": "source", "source__exact": "source",
    "workflow_name": "workflow", "workflow_name__exact": "workflow",
    "event_type": "event_type", "event_type__exact": "event_type",
    "received_at__gte": "since", "received_at__lt": "until",
}  # fmt: skip
#: The list's parameters that change how it is shown, not which events it holds.
_DISPLAY_PARAMS = (set(IGNORED_PARAMS) - {SEARCH_VAR}) | {PAGE_VAR, ERROR_FLAG}


def changelist_replay_filters(params: Any) -> dict[str, Any]:
    """The replay filters of the event list's query string; ``InvalidFilter`` for what a
    replay cannot express. Without a status filter the list holds every status, and so does
    the replay (running events excepted, as always)."""
    filters: dict[str, Any] = {}
    for name in params:
        values = params.getlist(name)
        if name in _DISPLAY_PARAMS or (name == SEARCH_VAR and not any(values)):
            continue
        if name == SEARCH_VAR:
            raise replays.InvalidFilter(
                f"the list is narrowed by a search ({values[0]!r:.60}), which a bulk replay "
                "cannot select by: filter by status, source, workflow, event type or date only."
            )
        key = CHANGELIST_REPLAY_FILTERS.get(name)
        if key is None:
            raise replays.InvalidFilter(
                f"the list is filtered by {name}, which a bulk replay cannot select by: filter "
                "by status, source, workflow, event type or date only."
            )
        if key in filters or len(values) > 1:
            raise replays.InvalidFilter(f"the list is filtered by {key} more than once.")
        filters[key] = values[0].split(",") if name == "status__in" else values[0]
    filters.setdefault("status", list(replays.REPLAYABLE_STATUSES))
    return filters


def _replay_offer(request: HttpRequest) -> dict[str, str] | None:
    """The list's *Replay all N matching* link, when the list is filtered (or searched: the
    confirmation page then says why that cannot be replayed)."""
    if not any(value for name, value in request.GET.items() if name not in _DISPLAY_PARAMS):
        return None
    url = f"{reverse('admin:webhooks_app_webhookevent_replay_matching')}?{request.GET.urlencode()}"
    try:
        filters = replays.parse_filters(changelist_replay_filters(request.GET))
    except replays.InvalidFilter:
        return {"url": url, "label": "Replay all matching…"}
    cap = CappedCountPaginator.CAP
    count = replays.matching_events(filters)[: cap + 1].count()
    return {"url": url, "label": f"Replay all {count if count <= cap else f'{cap}+'} matching"}


def _local_next(request: HttpRequest) -> str | None:
    """The form's ``next`` if it stays on this site; a forged form must not turn the admin's
    redirect into one to another host (``//evil.example``, ``/\\evil.example`` included)."""
    url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


def shown_outcome(entry: dict[str, Any]) -> str:
    """An attempt's outcome in the history table; a lapsed lease says what happened to it."""
    outcome = str(entry.get("outcome", ""))
    if outcome == "lost" and entry.get("lease_lapsed"):
        return "lease lapsed: taken over"
    return outcome


_HELD_BY = re.compile(r"held by event (\d+)")


def _linked_reason(reason: str) -> str:
    """:func:`lifecycle.waiting_reason`, escaped, the event holding this one back a link to its
    page: the next thing to look at."""
    held_by = _HELD_BY.match(reason)
    if held_by is None:
        return format_html("{}", reason)
    url = reverse("admin:webhooks_app_webhookevent_change", args=[int(held_by[1])])
    return format_html(
        'held by <a href="{}">event {}</a>{}', url, held_by[1], reason[held_by.end() :]
    )


def what_happens_next(event: WebhookEvent, now: datetime, *, held: bool = False) -> str:
    """One sentence for the top of the event's page: when it runs next, or why it does not.
    ``held``: something holds it back (the summary says what), not a missing worker."""
    attempts, most = event.attempts, webhook_settings.MAX_ATTEMPTS
    if event.status == EventStatus.PENDING:
        queued = event.next_attempt_at or event.received_at
        waited = now - queued
        if held:
            return format_html(
                "Pending since {} ({} ago); it starts by itself once nothing holds it back.",
                local_time(queued),
                human_duration(waited),
            )
        hint = (
            " If that is long, check that a qcluster runs (the dashboard counts the clusters)."
            if waited.total_seconds() > webhook_settings.RECOVERY_GRACE
            else ""
        )
        return format_html(
            "Waiting for a worker since {} ({} ago).{}",
            local_time(queued),
            human_duration(waited),
            hint,
        )
    if event.status == EventStatus.RUNNING:
        return format_html(
            "Attempt {} of {} running since {}.", attempts, most, local_time(event.started_at)
        )
    if event.status == EventStatus.FAILED and event.next_attempt_at:
        wait = event.next_attempt_at - now
        when = f"in {human_duration(wait)}" if wait.total_seconds() > 0 else "due, queued"
        return format_html(
            "Attempt {} of {} at {} ({}).",
            attempts + 1,
            most,
            local_time(event.next_attempt_at),
            when,
        )
    if event.status == EventStatus.DEAD:
        why = "no attempts left" if attempts >= most else "not retried (the error says why)"
        return f"Dead after {attempts} attempt(s): {why}. Fix the cause, then replay it."
    if event.status == EventStatus.SUCCEEDED:
        return format_html(
            "Succeeded on attempt {} at {}, in {}.",
            attempts,
            local_time(event.finished_at),
            human_duration(event.duration),
        )
    if event.status == EventStatus.IGNORED:
        return "Nothing to run: no workflow is routed for this event type."
    return ""


DASHBOARD_REFRESH_SECONDS = 30
PURGE_SAMPLE = 20


class SeenWithTheEvents(admin.ModelAdmin):
    """A read-only page of the app's (the dashboard's entry, alerts, bulk replays): seen by
    whoever may view the events, changed by no one through the admin's forms."""

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


@admin.register(Dashboard)
class DashboardAdmin(SeenWithTheEvents):
    """The *Dashboard* entry in the admin index: it leads to the dashboard page."""

    def changelist_view(self, request: HttpRequest, extra_context: object = None) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:webhooks_app_dashboard"))


ALERT_FIELDS: tuple[str, ...] = (
    "rule", "state", "value", "raised", "resolved", "pretty_definition",
)  # fmt: skip


@admin.register(WebhookAlert)
class WebhookAlertAdmin(SeenWithTheEvents):
    """The history of alerts: one row per opening of a rule, read-only (the evaluation alone
    raises and resolves them). Seen with the permission that shows the events."""

    list_display = ["rule", "state", "value", "raised", "resolved", "waiting_notifications"]
    list_filter = [("resolved_at", admin.EmptyFieldListFilter), "rule"]
    search_fields = ["rule"]
    fields = ALERT_FIELDS
    readonly_fields = ALERT_FIELDS

    raised = _shown_time("raised_at", "raised at")
    resolved = _shown_time("resolved_at", "resolved at")

    @admin.display(description="state")
    def state(self, obj: WebhookAlert) -> str:
        return "open" if obj.resolved_at is None else "resolved"

    @admin.display(description="notifications not yet posted")
    def waiting_notifications(self, obj: WebhookAlert) -> int:
        # Counted, not listed: an alert URL (a Slack webhook's) is a secret.
        return len(obj.undelivered)

    @admin.display(description="rule")
    def pretty_definition(self, obj: WebhookAlert) -> str:
        return _pretty(obj.definition)


REPLAY_FIELDS: tuple[str, ...] = (
    "state", "progress", "shown_filters", "created", "created_by", "finished",
)  # fmt: skip
#: How often a running replay's page reloads itself to show its progress.
REPLAY_REFRESH_SECONDS = 3


@admin.register(WebhookReplay)
class WebhookReplayAdmin(SeenWithTheEvents):
    """Bulk replays and their progress, read-only (they are started from the filtered event
    list, the API or the command); *Cancel* on a running one. Seen with the permission that
    shows the events, cancelled with the one that replays them."""

    list_display = ["__str__", "state", "progress", "shown_filters", "created", "created_by"]
    list_filter = ["state"]
    fields = REPLAY_FIELDS
    readonly_fields = REPLAY_FIELDS
    change_form_template = "admin/webhooks_app/webhookreplay/change_form.html"

    created = _shown_time("created_at", "created at")
    finished = _shown_time("finished_at", "finished at")

    @admin.display(description="progress")
    def progress(self, obj: WebhookReplay) -> str:
        share = f" ({100 * obj.done // obj.count} %)" if obj.count else ""
        return f"{obj.done} of {obj.count} queued{share}"

    @admin.display(description="filters")
    def shown_filters(self, obj: WebhookReplay) -> str:
        return replays.describe(obj.filters)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Cancelling changes what runs, like starting: the events' change permission."""
        return request.user.has_perm("webhooks_app.change_webhookevent")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: WebhookReplay | None = None,
    ) -> HttpResponse:
        """The replay's page: its progress, reloading while it runs, and *Cancel*."""
        if obj is not None:
            running = obj.state == ReplayState.RUNNING
            context["replay"] = {
                "progress": self.progress(obj),
                "can_cancel": running and self.has_cancel_permission(request),
                "refresh_seconds": REPLAY_REFRESH_SECONDS if running else None,
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:pk>/cancel/",
                self.admin_site.admin_view(require_POST(self.cancel_view)),
                name="webhooks_app_webhookreplay_cancel",
            ),
            *super().get_urls(),
        ]

    def cancel_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """*Cancel* (POST, CSRF, change permission): no batch after the one under way."""
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        try:
            replay = replays.cancel_replay(pk)
        except WebhookReplay.DoesNotExist:
            raise Http404(f"No replay {pk}.") from None
        if replay.state == ReplayState.CANCELLED:
            self.message_user(
                request,
                f"Replay {pk} cancelled: {replay.done} of {replay.count} were queued; those run.",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, f"Replay {pk} is {replay.state}: nothing to cancel.")
        return HttpResponseRedirect(reverse("admin:webhooks_app_webhookreplay_change", args=[pk]))


admin.site.register(WebhookSource, WebhookSourceAdmin)
