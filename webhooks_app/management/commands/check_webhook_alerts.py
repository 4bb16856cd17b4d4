"""``manage.py check_webhook_alerts``: evaluate the alert rules now and print the open alerts.

The same evaluation runs every minute as a django-q2 schedule; with the Django Tasks runner,
which has no scheduler, run this command from cron every minute instead.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from webhooks_app import alerts


class Command(BaseCommand):
    help = (
        "Evaluate WEBHOOKS['ALERTS'] (raising, resolving and notifying as the schedule does) "
        "and print the alerts open afterwards."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        open_alerts = alerts.evaluate()
        for alert in open_alerts:
            self.stdout.write(
                f"{alert.rule}: open since {alert.raised_at.isoformat(timespec='seconds')}: "
                f"{alerts.describe(alerts.Rule(alert.definition), alert.value)}"
            )
        self.stdout.write(f"{len(open_alerts)} open alert(s).")
