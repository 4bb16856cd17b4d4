"""``manage.py recover_webhook_events``: re-enqueue stranded events (for cron users).

The same function runs every minute as a django-q2 schedule; this command is for deployments
that prefer cron, and for operators after an outage.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from webhooks_app.tasks import recover_stranded_events


class Command(BaseCommand):
    help = (
        "Re-enqueue webhook events stranded in pending/failed/running (lost tasks, dead workers)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Only count what would be recovered."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        counts = recover_stranded_events(dry_run=options["dry_run"])
        verb = "Would recover" if options["dry_run"] else "Recovered"
        self.stdout.write(
            f"{verb}: {counts['pending']} pending, {counts['failed']} failed with an overdue retry, "
            f"{counts['running']} running with a lost worker ({counts['dead']} of them now dead)."
        )
