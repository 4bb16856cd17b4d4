"""``manage.py cleanup_webhook_events``: delete old finished events in batches."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_app import services
from webhooks_app.conf import webhook_settings
from webhooks_app.models import FINISHED_STATUSES

BAR_WIDTH = 30


class Command(BaseCommand):
    help = (
        "Delete finished webhook events (succeeded, dead, ignored) older than the retention window."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days", type=int, help="Age in days (default: WEBHOOKS['RETENTION_DAYS'])."
        )
        parser.add_argument(
            "--status", nargs="+", choices=[str(s) for s in FINISHED_STATUSES],
            help="Only these finished statuses (default: all of them).",
        )  # fmt: skip
        parser.add_argument(
            "--batch-size", type=int, default=1000, help="Rows per delete (default 1000)."
        )
        parser.add_argument("--dry-run", action="store_true", help="Count, delete nothing.")
        parser.add_argument(
            "--force", action="store_true",
            help=f"Allow a window under {services.MIN_CLEANUP_DAYS} days (redeliveries would run again).",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"] if options["days"] is not None else webhook_settings.RETENTION_DAYS
        statuses = options["status"] or list(FINISHED_STATUSES)
        common = {"days": days, "statuses": statuses, "force": options["force"]}
        try:
            total = services.cleanup_events(**common, dry_run=True)
            if options["dry_run"]:
                self.stdout.write(f"Would delete {total} event(s) older than {days} days.")
                return
            progress = self._bar(total) if self.stdout.isatty() and total else None
            deleted = services.cleanup_events(
                **common, batch_size=options["batch_size"], progress=progress
            )
        except services.CleanupRefused as exc:
            raise CommandError(str(exc)) from None
        if progress:
            self.stdout.write("")
        self.stdout.write(f"Deleted {deleted} event(s) older than {days} days.")

    def _bar(self, total: int) -> Any:
        def show(done: int) -> None:
            filled = BAR_WIDTH * min(done, total) // total
            self.stdout.write(
                f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total}", ending=""
            )
            self.stdout.flush()

        return show
