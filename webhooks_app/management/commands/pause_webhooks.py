"""``manage.py pause_webhooks (--source S | --workflow W)``: hold back a source's or a workflow's
events until ``resume_webhooks``; and what the two commands share."""

from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_app import services
from webhooks_app.models import ControlKind


def operator() -> str:
    """``changed_by`` for a command: the OS user who ran it, or just ``manage.py`` where the
    process has no user name (a container running under a uid without a passwd entry)."""
    try:
        return f"{getpass.getuser()} (manage.py)"
    except (OSError, KeyError, ImportError):
        return "manage.py"


class ControlCommand(BaseCommand):
    """Exactly one of ``--source`` and ``--workflow``; an unknown name is an error (exit status
    1) that names the known ones."""

    #: "pause" or "resume", for the options' help.
    verb = ""

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument(
            "--source", help=f"The source to {self.verb} (its name in the delivery URL)."
        )
        target.add_argument("--workflow", help=f"The workflow to {self.verb}.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["source"] is not None:
            kind, name = ControlKind.SOURCE.value, options["source"]
        else:
            kind, name = ControlKind.WORKFLOW.value, options["workflow"]
        try:
            done = self.steer(kind, name, operator())
        except services.UnknownTarget as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(done)

    def steer(self, kind: str, name: str, by: str) -> str:
        """Pause or resume; what was done, in a sentence."""
        raise NotImplementedError


class Command(ControlCommand):
    help = (
        "Pause a source or a workflow on every node: its deliveries are still stored and "
        "answered, its events wait (pending, no attempt used) until resume_webhooks."
    )
    verb = "pause"

    def steer(self, kind: str, name: str, by: str) -> str:
        services.pause(kind, name, by=by)
        return services.paused_sentence(kind, name)
