"""The admin pages of the sources (contract §12): the database sources, editable, beside the
settings sources, read-only; each source's URL to give the sender and its recipe; *Add secret*
and *Rotate secret*.

A secret is write-only here. The forms that take one (*Add secret*, the new source's optional
first secret) use a password input that never renders its value back, and their views mark the
field sensitive, so Django's error reports show stars. *Rotate secret* generates the new value
and shows it once, in the response to its POST (``no-store``, as every admin page): not in a
message (those live in the session or a cookie) and not on any page one can come back to.
After that, every page shows a secret's label and fingerprint only.

The list shows each source's activity over the last 24 hours (:func:`dashboard.source_activity`,
one grouped query plus an index probe for the quiet ones) and its pause state; the changes
reach every process within seconds (:mod:`webhooks_app.sources`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters, sensitive_variables

from webhooks_app import checks, dashboard, source_validation
from webhooks_app.conf import SourceConfig, webhook_settings
from webhooks_app.models import ControlKind, ProcessingControl, WebhookSource, WebhookSourceSecret
from webhooks_app.schemes import get_scheme, scheme_names
from webhooks_app.templatetags.webhooks_format import local_time

#: The window of the list's activity columns.
ACTIVITY_WINDOW = timedelta(hours=24)

#: What *Rotate secret* offers as the old secrets' remaining validity.
ROTATION_GRACES: dict[str, timedelta] = {
    "0": timedelta(0),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
GRACE_LABELS = {
    "0": "none: only the new secret verifies from now on",
    "1h": "1 hour",
    "24h": "24 hours",
    "7d": "7 days",
    "30d": "30 days",
}

NO_RECIPE = (
    "Give the sender the URL above and one of this source's secrets, as its scheme's "
    "documentation says."
)
HINT_PROVIDER_MADE = (
    "The provider makes this secret: copy it from there and paste it with Add secret."
)
HINT_YOU_CHOOSE = (
    "You choose this secret: Rotate secret generates one and shows it once; paste it at the "
    "provider (or paste one of your own with Add secret)."
)


# Forms


def _scheme_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in sorted(scheme_names())]


class SourceForm(forms.ModelForm):
    """A source's fields, with the scheme chosen among those registered. The model validates
    everything else on save (``full_clean``), so the form shows its errors by field."""

    scheme = forms.ChoiceField(choices=_scheme_choices)

    class Meta:
        model = WebhookSource
        fields = ["name", "scheme", "enabled", "routes", "options"]
        help_texts = {
            "name": "The URL segment: the sender posts to /webhooks/this-name/.",
            "routes": 'Event type to workflow, "*" for every other type: {"push": "deploy"}.',
            "options": (
                "Optional, as in WEBHOOKS['SOURCES']: ORDER_KEY, TIMESTAMP_TOLERANCE, "
                'MAX_BODY_BYTES, VERIFY_TOKEN, PUBLIC_URL; e.g. {"ORDER_KEY": "customer.id"}.'
            ),
        }


class SecretField(forms.CharField):
    """A pasted secret: a password input that never renders its value back, unstripped (a
    stray space is reported, not silently fixed; :func:`source_validation.validate_secret`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(strip=False, widget=forms.PasswordInput(render_value=False), **kwargs)


def _secret_problems(value: str, not_after: datetime | None, label: str) -> dict[str, Any]:
    """:func:`source_validation.validate_secret`'s messages by its own field names."""
    try:
        source_validation.validate_secret(value, not_after, label)
    except ValidationError as exc:
        return exc.message_dict
    return {}


class NewSourceForm(SourceForm):
    """A new source, with its first secret if the operator has one at hand."""

    secret = SecretField(
        required=False,
        help_text="Optional: the provider's secret, or one of yours. Without one, deliveries "
        "answer 503 not_configured until a secret is added.",
    )
    secret_label = forms.CharField(required=False, max_length=100, label="Secret label")

    class Meta(SourceForm.Meta):
        pass

    @sensitive_variables()
    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if cleaned.get("secret"):
            problems = _secret_problems(cleaned["secret"], None, cleaned.get("secret_label", ""))
            for name, field in (("value", "secret"), ("label", "secret_label")):
                for message in problems.get(name, []):
                    self.add_error(field, message)
        return cleaned


class AddSecretForm(forms.Form):
    value = SecretField(label="Secret", help_text="Pasted; never shown again, not even to you.")
    label = forms.CharField(required=False, max_length=100)
    not_after = forms.DateTimeField(
        required=False,
        label="Not after",
        help_text="Optional: after this time the secret no longer verifies. In the server's "
        "time zone, e.g. 2027-01-31 18:00.",
    )

    @sensitive_variables()
    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if "value" in cleaned:
            problems = _secret_problems(
                cleaned["value"], cleaned.get("not_after"), cleaned.get("label", "")
            )
            for name, messages_ in problems.items():
                for message in messages_:
                    self.add_error(name, message)
        return cleaned


class RotateSecretForm(forms.Form):
    grace = forms.ChoiceField(
        choices=list(GRACE_LABELS.items()),
        initial="24h",
        label="The current secrets stay valid for",
        help_text="Time to paste the new secret at the provider before the old ones end.",
    )
    label = forms.CharField(required=False, max_length=100)


# What the pages show of a source


@dataclass(frozen=True)
class SourceRow:
    """One line of the list, a settings source's or a database source's."""

    name: str
    scheme: str
    state: str
    paused: bool
    secrets: int
    activity: dashboard.SourceActivity
    url: str

    @property
    def paused_shown(self) -> str:
        return "paused" if self.paused else "no"

    @property
    def activity_shown(self) -> str:
        return shown_activity(self.activity)

    @property
    def last_shown(self) -> str:
        return shown_last(self.activity)


def sender_url(request: HttpRequest, name: str, public_url: str = "") -> str:
    """The URL to give the sender: ``PUBLIC_URL`` when set (what the sender sees behind a
    proxy), else this site's own address for the source."""
    return public_url or request.build_absolute_uri(reverse("webhooks_app:receive", args=[name]))


def provider_steps(config_scheme: str, url: str) -> dict[str, str]:
    """The scheme's recipe with the URL in it, and where the secret comes from."""
    try:
        scheme = get_scheme(config_scheme)
    except KeyError:
        return {"recipe": NO_RECIPE, "secret": ""}
    return {
        "recipe": scheme.recipe.format(url=url) if scheme.recipe else NO_RECIPE,
        "secret": HINT_PROVIDER_MADE if scheme.secret_from_provider else HINT_YOU_CHOOSE,
    }


def _paused_sources(names: list[str]) -> set[str]:
    return set(
        ProcessingControl.objects.filter(
            kind=ControlKind.SOURCE, paused=True, name__in=names
        ).values_list("name", flat=True)
    )


def valid_secrets(source: WebhookSource, now: datetime) -> int:
    """How many of the source's secrets verify at ``now`` (as the loader judges ``not_after``),
    from its prefetched or fetched ``secrets``."""
    return sum(s.not_after is None or now <= s.not_after for s in source.secrets.all())


def stored_state(source: WebhookSource, valid: int) -> str:
    """Whether the URL serves this database source, in the words of what a delivery gets."""
    if source.name in webhook_settings.sources:
        return "shadowed: the settings source of this name answers"
    if not source.enabled:
        return "disabled: deliveries get 404"
    if not valid and webhook_settings.REQUIRE_SIGNATURE:
        return "no valid secret: deliveries get 503"
    return "served"


def settings_rows(request: HttpRequest) -> list[SourceRow]:
    """The settings sources as list lines (read-only: their page only shows them)."""
    configured = sorted(webhook_settings.sources.items())
    names = [name for name, _ in configured]
    activity = dashboard.source_activity(names, timezone.now() - ACTIVITY_WINDOW)
    paused = _paused_sources(names)
    return [
        SourceRow(
            name=name,
            scheme=config.scheme,
            state="no secret: deliveries get 503" if checks.missing_secret(config) else "served",
            paused=name in paused,
            secrets=len(config.secrets),
            activity=activity[name],
            url=sender_url(request, name, config.public_url),
        )
        for name, config in configured
    ]


class SourceChangeList(ChangeList):
    """The database sources' list; each listed source gets ``row``: its :class:`SourceRow`
    (activity, pause state, valid secrets), computed for the page's sources alone."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        listed = list(self.result_list.prefetch_related("secrets"))
        names = [source.name for source in listed]
        now = timezone.now()
        activity = dashboard.source_activity(names, now - ACTIVITY_WINDOW)
        paused = _paused_sources(names)
        for source in listed:
            valid = valid_secrets(source, now)
            source.row = SourceRow(  # for the list's columns
                name=source.name,
                scheme=source.scheme,
                state=stored_state(source, valid),
                paused=source.name in paused,
                secrets=valid,
                activity=activity[source.name],
                url=sender_url(request, source.name, source.options.get("PUBLIC_URL", "")),
            )
        self.result_list = listed


# The admin


def _row_column(attribute: str, description: str) -> Callable[[Any, WebhookSource], Any]:
    """A column of the list showing ``attribute`` of the source's :class:`SourceRow`."""

    @admin.display(description=description)
    def column(self: Any, obj: WebhookSource) -> Any:
        return getattr(obj.row, attribute)  # type: ignore[attr-defined]

    return column


class SecretInline(admin.TabularInline):
    """A source's secrets by label and fingerprint; *not after* can be changed (a past time
    ends a secret now) and a secret deleted, but none added here: *Add secret* takes a value."""

    model = WebhookSourceSecret
    fields = ["label", "fingerprint", "not_after", "created_at"]
    readonly_fields = ["fingerprint", "created_at"]
    extra = 0

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class WebhookSourceAdmin(admin.ModelAdmin):
    """The senders configured in the database, beside the settings ones (read-only)."""

    list_display = [
        "name", "scheme", "state", "paused", "secrets", "last_24h", "last_delivery", "url",
    ]  # fmt: skip
    search_fields = ["name"]
    inlines = [SecretInline]
    change_list_template = "admin/webhooks_app/webhooksource/change_list.html"
    change_form_template = "admin/webhooks_app/webhooksource/change_form.html"

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return SourceChangeList

    def get_form(
        self, request: HttpRequest, obj: WebhookSource | None = None, change: bool = False,
        **kwargs: Any,
    ) -> type[forms.ModelForm]:  # fmt: skip
        kwargs["form"] = SourceForm if obj is not None else NewSourceForm
        return super().get_form(request, obj, change, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: WebhookSource | None) -> list[type]:
        return [SecretInline] if obj is not None else []

    @method_decorator(sensitive_post_parameters("secret"))
    def add_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return super().add_view(request, *args, **kwargs)

    @sensitive_variables()
    def save_model(self, request: HttpRequest, obj: WebhookSource, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change and form.cleaned_data.get("secret"):
            obj.add_secret(form.cleaned_data["secret"], label=form.cleaned_data["secret_label"])

    # The list's columns (SourceChangeList gave each listed source its ``row``)

    state = _row_column("state", "state")
    paused = _row_column("paused_shown", "paused")
    secrets = _row_column("secrets", "valid secrets")
    last_24h = _row_column("activity_shown", "last 24 h")
    last_delivery = _row_column("last_shown", "last delivery")

    @admin.display(description="URL to give the sender")
    def url(self, obj: WebhookSource) -> str:
        return format_html("<code>{}</code>", obj.row.url)  # type: ignore[attr-defined]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """The database sources, then the settings sources, read-only."""
        context = {**(extra_context or {}), "settings_sources": settings_rows(request)}
        return super().changelist_view(request, context)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: WebhookSource | None = None,
    ) -> HttpResponse:
        """A source's page: the URL to give the sender, its scheme's recipe, and the links to
        *Add secret* and *Rotate secret*."""
        if obj is not None:
            valid = valid_secrets(obj, timezone.now())
            url = sender_url(request, obj.name, obj.options.get("PUBLIC_URL", ""))
            context["source_page"] = {
                "url": url,
                "state": stored_state(obj, valid),
                **provider_steps(obj.scheme, url),
                "can_change": self.has_change_permission(request, obj),
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/add-secret/",
                view(self.add_secret_view),
                name="webhooks_app_webhooksource_add_secret",
            ),
            path(
                "<int:pk>/rotate-secret/",
                view(self.rotate_secret_view),
                name="webhooks_app_webhooksource_rotate_secret",
            ),
            path(
                "settings/<str:name>/",
                view(self.settings_source_view),
                name="webhooks_app_webhooksource_settings",
            ),
            *super().get_urls(),
        ]

    def _changeable(self, request: HttpRequest, pk: int) -> WebhookSource:
        source = get_object_or_404(WebhookSource, pk=pk)
        if not self.has_change_permission(request, source):
            raise PermissionDenied
        return source

    def _page(
        self, request: HttpRequest, template: str, source: WebhookSource | None, **context: Any
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            f"admin/webhooks_app/webhooksource/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "source": source,
                "title": context.pop("title"),
                **context,
            },
        )

    def _back_to(self, source: WebhookSource) -> HttpResponseRedirect:
        return HttpResponseRedirect(
            reverse("admin:webhooks_app_webhooksource_change", args=[source.pk])
        )

    @method_decorator(sensitive_post_parameters("value"))
    @sensitive_variables()
    def add_secret_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """*Add secret*: paste a secret (the provider's new one); it verifies beside the others
        from the commit on, in every process within seconds."""
        source = self._changeable(request, pk)
        form = AddSecretForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            secret = source.add_secret(
                form.cleaned_data["value"],
                not_after=form.cleaned_data["not_after"],
                label=form.cleaned_data["label"],
            )
            self.log_change(request, source, f"Added secret {secret}.")
            self.message_user(
                request,
                f"Secret {secret} added: it verifies beside the others from now on.",
                messages.SUCCESS,
            )
            return self._back_to(source)
        return self._page(request, "add_secret.html", source, form=form, title="Add secret")

    @sensitive_variables()
    def rotate_secret_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """*Rotate secret*: generate a new secret, end the others after the chosen grace, and
        show the new value this once."""
        source = self._changeable(request, pk)
        form = RotateSecretForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            grace = ROTATION_GRACES[form.cleaned_data["grace"]]
            value = source.rotate_secret(grace, label=form.cleaned_data["label"])
            new = source.secrets.first()  # the newest: the one just made
            self.log_change(request, source, f"Rotated: new secret {new}, grace {grace}.")
            # admin_view() marks every admin page no-store: no cache keeps the value.
            return self._page(
                request,
                "rotated.html",
                source,
                title="New secret",
                value=value,
                secret=new,
                grace=GRACE_LABELS[form.cleaned_data["grace"]],
                ends=timezone.now() + grace if grace else None,
            )
        return self._page(request, "rotate_secret.html", source, form=form, title="Rotate secret")

    def settings_source_view(self, request: HttpRequest, name: str) -> HttpResponse:
        """A settings source, read-only: what its settings say (never its secrets), the URL
        and the recipe. It changes with the settings and a deploy."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        config: SourceConfig | None = webhook_settings.source(name)
        if config is None:
            raise Http404(f"No settings source is named {name!r}.")
        url = sender_url(request, name, config.public_url)
        return self._page(
            request,
            "settings_source.html",
            None,
            title=f"Source {name} (settings)",
            config=config,
            shadows=WebhookSource.objects.filter(name=name).first(),
            source_page={"url": url, **provider_steps(config.scheme, url)},
        )


def shown_activity(activity: dashboard.SourceActivity) -> str:
    """The list's *last 24 h*: how many, and how many of them failed."""
    if not activity.total:
        return "none"
    return (
        f"{activity.total} ({activity.failed} failed)" if activity.failed else f"{activity.total}"
    )


def shown_last(activity: dashboard.SourceActivity) -> str:
    """The list's *last delivery*: its time within the window, else whether there was any."""
    if activity.last_received is not None:
        return local_time(activity.last_received)
    return "more than 24 h ago" if activity.ever else "never"
