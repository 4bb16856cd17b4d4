"""``manage.py replay_webhook_events``: replay every event a filter selects, in batches, in this
process (the API and the admin run the same replay in the background)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_app import replays
from webhooks_app.management.commands.pause_webhooks import operator
from webhooks_app.models import ReplayState, WebhookReplay

WHEN = "ISO 8601 (2026-01-15T09:30:00Z, 2026-01-15) or a time ago (30m, 6h, 2d)"


class Command(BaseCommand):
    help = (
        "Run the workflows of the events a filter selects once more (dead ones by default; "
        "running ones never), queued in batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", help="Only events from this source.")
        parser.add_argument("--workflow", help="Only events of this workflow.")
        parser.add_argument(
            "--status", nargs="+",
            help=f"Only events in these statuses (default: dead; any of {', '.join(replays.REPLAYABLE_STATUSES)}).",
        )  # fmt: skip
        parser.add_argument("--event-type", help="Only events of this type.")
        parser.add_argument("--since", help=f"Only events received at or after WHEN: {WHEN}.")
        parser.add_argument("--until", help=f"Only events received before WHEN: {WHEN}.")
        parser.add_argument("--dry-run", action="store_true", help="Count, queue nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        given = {name: options[name] for name in replays.FILTER_NAMES}
        try:
            filters = replays.parse_filters(given)
            if options["dry_run"]:
                count = replays.count_matching(filters)
                self.stdout.write(f"{_events(count)} match ({replays.describe(filters)}).")
                return
            replay = replays.start_replay(filters, by=operator(), background=False)
        except replays.InvalidFilter as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{_events(replay.count)} match ({replays.describe(replay.filters)}).")
        try:
            replay = replays.run_replay(replay.pk, progress=self._progress)
        except KeyboardInterrupt:
            replay = replays.cancel_replay(replay.pk)
            raise CommandError(
                f"Interrupted: {replay.done} of {replay.count} queued, the rest not "
                f"(replay {replay.pk} cancelled)."
            ) from None
        done = f"Queued {_events(replay.done)} to run again (replay {replay.pk}, {replay.state})."
        skipped = replay.count - replay.done if replay.state == ReplayState.FINISHED else 0
        if skipped:
            done += f" {skipped} no longer matched when their batch came (running, or replayed)."
        self.stdout.write(done)

    def _progress(self, replay: WebhookReplay) -> None:
        self.stdout.write(f"  {replay.done} of {replay.count} queued")


def _events(count: int) -> str:
    return f"{count} event{'' if count == 1 else 's'}"
