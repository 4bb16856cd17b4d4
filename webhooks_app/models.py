"""The stored delivery: one row per ``(source, webhook_id)`` and per ``(source, content_key)``
(the signed content), which is what makes ingestion idempotent. The row also carries the
processing state machine, so retries, attempt counting and recovery never depend on the task
queue's own bookkeeping."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from webhooks_app import crypto, source_validation


class EventStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed (will retry)"
    DEAD = "dead", "Dead"
    IGNORED = "ignored", "Ignored"


#: Events in these states are finished: cleanup may delete them, nothing will run them again
#: unless replayed.
FINISHED_STATUSES = (EventStatus.SUCCEEDED, EventStatus.DEAD, EventStatus.IGNORED)
#: The others: what can still hold an ordering key.
UNFINISHED_STATUSES = (EventStatus.PENDING, EventStatus.RUNNING, EventStatus.FAILED)


class WebhookEvent(models.Model):
    source = models.CharField(max_length=64)
    webhook_id = models.CharField(max_length=255)
    #: SHA-256 of what the signature covers (``Scheme.content_key``): the second idempotency
    #: key, so a captured delivery re-sent with a new unsigned id is still this event. NULL, not
    #: "", for "no key": NULLs never collide in the unique constraint.
    content_key = models.CharField(  # noqa: DJ001
        max_length=64, null=True, blank=True, editable=False
    )
    event_type = models.CharField(max_length=255, blank=True)
    workflow_name = models.CharField(max_length=255, blank=True)
    payload = models.JSONField(default=dict, blank=True)
    headers = models.JSONField(
        default=dict, blank=True, help_text="Allow-listed; signatures removed."
    )
    status = models.CharField(
        max_length=16, choices=EventStatus.choices, default=EventStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    history = models.JSONField(default=list, blank=True, help_text="One entry per attempt.")
    received_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    #: Events of one source with the same key run one at a time, in received order (the
    #: source's ``ORDER_KEY``, or the generic envelope's ``order_key``). NULL: not ordered.
    order_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    #: Until when the worker running the attempt is known to be alive: it renews this while
    #: the workflow runs. A ``running`` event whose lease has lapsed has lost its worker.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    #: Why the last task for this ``pending`` event did not start it: ``key`` (an earlier event
    #: of its key is unfinished), ``concurrency`` or ``rate`` (its workflow's limit). What ends
    #: the wait (the key's event finishing, a slot freeing) looks for events marked so.
    waiting_for = models.CharField(max_length=16, blank=True, default="", db_default="")
    #: An event marked ``waiting_for`` its key or a concurrency slot was refused because of
    #: this one: this event's end must look for it. Set by the waiting event on what holds it
    #: back (the events ahead of it), read back by the outcome's UPDATE, so an attempt nobody
    #: waited on looks for nothing. Never cleared: a stale flag costs one look that finds
    #: nothing.
    waited_on = models.BooleanField(default=False, db_default=False)

    class Meta:
        verbose_name = "webhook event"
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "webhook_id"], name="webhooks_app_unique_delivery"
            ),
            models.UniqueConstraint(
                fields=["source", "content_key"], name="webhooks_app_unique_content"
            ),
        ]
        indexes = [
            # The changelist's default order and date filter.
            models.Index(fields=["-received_at"], name="webhooks_ev_received_idx"),
            # Searching by id across sources (the unique constraint leads with the source).
            models.Index(fields=["webhook_id"], name="webhooks_ev_webhook_id_idx"),
            # Status filters, cleanup (finished and old) and recovery (stranded and old).
            models.Index(fields=["status", "received_at"], name="webhooks_ev_status_idx"),
            models.Index(fields=["workflow_name", "received_at"], name="webhooks_ev_workflow_idx"),
            # The unfinished events of one ordering key, in received order: what holds a key
            # back, found without reading the key's history. Unordered events are not in it.
            models.Index(
                fields=["source", "order_key", "id"],
                name="webhooks_ev_order_key_idx",
                condition=models.Q(order_key__isnull=False, status__in=UNFINISHED_STATUSES),
            ),
            # What finished within a window (the alerts' failure rate and dead events): a range
            # at the newest end of this index. Unfinished events are not in it, so storing a
            # delivery does not touch it.
            models.Index(
                fields=["finished_at"],
                name="webhooks_ev_finished_idx",
                condition=models.Q(finished_at__isnull=False),
            ),
            # The events waiting for a slot of their workflow's concurrency limit.
            models.Index(
                fields=["workflow_name", "id"],
                name="webhooks_ev_waiting_slot_idx",
                condition=models.Q(waiting_for="concurrency"),
            ),
            # The running attempts of a workflow, which a concurrency limit counts at every
            # claim: only what runs now is in it. Without it the count read every event of the
            # workflow, or every one that ever ran (the status index keeps an entry for each
            # past state until vacuum), and grew with the table.
            models.Index(
                fields=["workflow_name"],
                name="webhooks_ev_running_idx",
                condition=models.Q(status=EventStatus.RUNNING),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.webhook_id}"

    @property
    def duration(self) -> timedelta | None:
        """How long the last attempt took."""
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class ControlKind(models.TextChoices):
    SOURCE = "source", "Source"
    WORKFLOW = "workflow", "Workflow"


class ProcessingControl(models.Model):
    """Run-time steering of one source or workflow, shared by every process and node.

    ``paused`` stops new attempts of its events (the claim reads it). A limited workflow's row
    is also what its claims lock to count running attempts one at a time; for a rate,
    ``rate_starts`` holds the start times (epoch seconds) within the last period, and
    ``rate_next_at`` the wake time the next event held back by the rate gets.
    """

    kind = models.CharField(max_length=16, choices=ControlKind.choices)
    name = models.CharField(max_length=255)
    paused = models.BooleanField(default=False)
    #: When it was last paused or resumed; NULL for a limited workflow's row never steered.
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.CharField(max_length=150, blank=True)
    rate_next_at = models.DateTimeField(null=True, blank=True)
    rate_starts = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "processing control"
        constraints = [
            models.UniqueConstraint(fields=["kind", "name"], name="webhooks_app_unique_control")
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


class ReplayState(models.TextChoices):
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    CANCELLED = "cancelled", "Cancelled"


class WebhookReplay(models.Model):
    """One bulk replay by filter (contract §10): what it selects, and how far it has got.

    The selection is fixed when the replay is created: the matching events whose id is at most
    ``last_event_id`` then, so the count shown before it starts is the count it works through
    (an event that stops matching meanwhile, say because it is running now, is skipped). The
    background job queues them in batches of ascending id and stores its progress after each,
    so a replay of a hundred thousand events never holds a request, and cancel is read
    between batches.
    """

    #: The normalised filters: ``source``, ``workflow``, ``status`` (a list), ``event_type``,
    #: ``since`` and ``until`` (ISO 8601, resolved when the replay was created).
    filters = models.JSONField(default=dict)
    state = models.CharField(
        max_length=16, choices=ReplayState.choices, default=ReplayState.RUNNING
    )
    #: How many events matched when the replay was created.
    count = models.PositiveIntegerField(default=0)
    #: How many of them have been put back on the queue so far.
    done = models.PositiveIntegerField(default=0)
    #: The highest event id the selection includes (fixed at creation).
    last_event_id = models.BigIntegerField(default=0)
    #: The highest event id the job has dealt with: where the next batch starts.
    cursor = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    #: When its job last moved it on (created, a batch queued, a new job enqueued): a running
    #: replay left alone for longer than ``RECOVERY_GRACE`` has lost its job.
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "bulk replay"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"replay {self.pk} ({self.state}, {self.done}/{self.count})"


class WebhookAlert(models.Model):
    """One opening of an alert rule (contract §11): raised when the rule first held, resolved
    when it stopped holding.

    At most one row per rule is open (``resolved_at`` NULL): the partial unique constraint is
    what makes two evaluations racing to raise the same alert notify once, and resolving is a
    conditional UPDATE only one of them wins. Notifications a URL failed to take are kept in
    ``undelivered`` and tried again at the next evaluation.
    """

    rule = models.CharField(max_length=255)
    #: The rule as it was configured when the alert was raised (its kind, threshold, scope).
    definition = models.JSONField(default=dict)
    #: What the rule measured when the alert was raised (then updated while it stays open).
    value = models.FloatField(null=True, blank=True)
    raised_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    #: Notifications not yet taken by their URL: ``[{"url", "state": "raised"|"resolved",
    #: "value", "text"}]``, as they were when the alert changed, so a retry reads the same.
    undelivered = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "alert"
        ordering = ["-raised_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["rule"],
                condition=models.Q(resolved_at__isnull=True),
                name="webhooks_app_one_open_alert_per_rule",
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule} ({'open' if self.resolved_at is None else 'resolved'})"


class EventEffect(models.Model):
    """A side effect a workflow has done for an event (see :func:`webhooks_app.effects.once`).

    Deleted with its event, so it lives exactly as long as the idempotency record.
    """

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="effects")
    key = models.CharField(max_length=100)
    done_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "key"], name="webhooks_app_unique_effect")
        ]

    def __str__(self) -> str:
        return f"{self.event_id}:{self.key}"


class Dashboard(WebhookEvent):
    """No data of its own: gives the dashboard its entry in the admin index."""

    class Meta:
        proxy = True
        verbose_name = "dashboard"
        verbose_name_plural = "dashboard"


class WebhookSource(models.Model):
    """A sender configured in the database (contract §12), served at ``/webhooks/<name>/`` like
    a ``WEBHOOKS["SOURCES"]`` entry of the same shape; a settings source of the same name wins.

    Every save validates (``full_clean``): ``objects.create()``, the admin and a script alike
    can never store a source that the loader could not serve, and the ValidationError names
    the field. ``QuerySet.update()`` and ``bulk_create()`` bypass ``save()``: they neither
    validate nor tell the other processes (call ``webhooks_app.sources.changed()``).
    """

    #: The URL segment, as ``WebhookEvent.source`` stores it.
    name = models.SlugField(
        max_length=64, unique=True, validators=[source_validation.validate_source_name]
    )
    scheme = models.CharField(max_length=64, validators=[source_validation.validate_scheme])
    enabled = models.BooleanField(default=True, help_text="A disabled source answers 404.")
    #: Event type to workflow name; ``"*"`` for every other event type.
    routes = models.JSONField(default=dict, blank=True)
    #: The per-source options of a settings source (``conf.SOURCE_OPTIONS``): ``ORDER_KEY``,
    #: ``TIMESTAMP_TOLERANCE``, ``MAX_BODY_BYTES``, ``VERIFY_TOKEN``, ``PUBLIC_URL``.
    options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "webhook source"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.full_clean()
        super().save(*args, **kwargs)

    def clean(self) -> None:
        # JSON fields skip their validators when empty ([] included), so their shape is
        # checked here, where the scheme is known too.
        errors = {}
        if problems := source_validation.routes_problems(self.routes):
            errors["routes"] = problems
        if problems := source_validation.options_problems(self.options, self.scheme):
            errors["options"] = problems
        if errors:
            raise ValidationError(errors)

    @sensitive_variables()
    def add_secret(
        self, value: str, not_after: datetime | None = None, label: str = ""
    ) -> WebhookSourceSecret:
        """Store ``value`` encrypted as one more secret of this source: any secret that has not
        passed its ``not_after`` verifies. ValidationError naming ``value``, ``not_after`` or
        ``label`` when one is unusable. The plaintext is never readable again through the
        model: only its label and fingerprint."""
        source_validation.validate_secret(value, not_after, label)
        return self.secrets.create(
            label=label,
            ciphertext=crypto.encrypt(value),
            fingerprint=crypto.fingerprint(value),
            not_after=not_after,
        )

    @sensitive_variables()
    def rotate_secret(self, grace: timedelta, *, label: str = "") -> str:
        """Generate a new secret and end the validity of the others ``grace`` from now (those
        that end sooner keep their end); returns the new plaintext, to show once: nothing keeps
        it in clear. ValidationError naming ``grace`` when it is negative."""
        if grace < timedelta(0):
            raise ValidationError({"grace": "The grace period cannot be negative."})
        value = crypto.new_secret(self.scheme)
        ends = timezone.now() + grace
        with transaction.atomic():
            # update() tells no process; the add_secret() below, in the same transaction, does.
            self.secrets.filter(
                models.Q(not_after__isnull=True) | models.Q(not_after__gt=ends)
            ).update(not_after=ends)
            self.add_secret(value, label=label or f"rotated {timezone.now():%Y-%m-%d %H:%M}")
        return value


class WebhookSourceSecret(models.Model):
    """One secret of a :class:`WebhookSource`, encrypted (:mod:`webhooks_app.crypto`).

    Write-only: made by ``source.add_secret()``; what a person sees is ``label`` and
    ``fingerprint``, never the value (not in ``str``/``repr``, the admin, the API or the logs).
    """

    source = models.ForeignKey(WebhookSource, on_delete=models.CASCADE, related_name="secrets")
    label = models.CharField(max_length=100, blank=True)
    #: A Fernet token: the secret under the current ``ENCRYPTION_KEYS`` key when it was stored.
    ciphertext = models.TextField(editable=False)
    #: A keyed digest's first 8 hex digits: tells secrets apart, reveals nothing of the value.
    fingerprint = models.CharField(max_length=16, editable=False)
    #: After this time the secret no longer verifies (decided per delivery); NULL: no end.
    not_after = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "webhook source secret"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.label or 'secret'} ({self.fingerprint})"


class SourceVersion(models.Model):
    """One row whose ``stamp`` changes on every write to a database source or secret: each
    process reads it (one primary-key read, every ``sources.REFRESH_SECONDS`` at most) to
    know when to reload them. A random stamp, not a counter: a rolled-back change can never
    leave a process holding the number a later change takes."""

    stamp = models.CharField(max_length=32)

    def __str__(self) -> str:
        return self.stamp
