"""``manage.py resume_webhooks (--source S | --workflow W)``: lift a pause; the events it held
back go on the queue (in order, where ordered)."""

from __future__ import annotations

from webhooks_app import services
from webhooks_app.management.commands.pause_webhooks import ControlCommand


class Command(ControlCommand):
    help = "Resume a paused source or workflow and put its waiting events back on the queue."
    verb = "resume"

    def steer(self, kind: str, name: str, by: str) -> str:
        return services.resumed_sentence(kind, name, services.resume(kind, name, by=by))
