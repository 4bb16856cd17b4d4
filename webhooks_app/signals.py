"""Lifecycle signals, one per step (not one per event type).

- ``event_received(sender=WebhookEvent, event=...)``: sent in the web process right after a new
  event committed (not for duplicates or refusals). Receivers run inside the request: keep them
  quick; an exception propagates to the sender as an error *after* the event is stored.
- ``event_succeeded(sender=WebhookEvent, event=..., result=...)``: sent in the qcluster worker
  after the success was recorded.
- ``event_failed(sender=WebhookEvent, event=..., error=..., will_retry=...)``: sent in the worker
  after a failed attempt was recorded; ``will_retry`` is ``False`` when the event is now dead.

Events may be processed more than once (retries, crash recovery), so receivers of the worker
signals should be idempotent on ``event.webhook_id``.

- ``alert_raised(sender=WebhookAlert, alert=...)``: sent once per opening of an alert rule
  (``WEBHOOKS["ALERTS"]``), after the transaction that raised it committed, in the process
  whose evaluation raised it: the worker running the minutely schedule, or
  ``check_webhook_alerts``. Of evaluations racing on several nodes, only the winner sends it.
- ``alert_resolved(sender=WebhookAlert, alert=...)``: the same, once, when that alert closes
  (``alert.resolved_at`` is set).

The alert signals are sent with ``send_robust``: a receiver's exception is logged and stops
neither the other receivers nor the mail and the POSTs. A process that dies between the commit
and the signal does not send it (at most once, never twice).
"""

from django.dispatch import Signal

event_received = Signal()
event_succeeded = Signal()
event_failed = Signal()
alert_raised = Signal()
alert_resolved = Signal()
