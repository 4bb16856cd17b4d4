"""``manage.py send_test_webhook WORKFLOW``: sign and send a webhook, the quickest end-to-end try."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from webhooks_app.conf import webhook_settings
from webhooks_app.schemes import get_scheme

DEFAULT_URL = "http://127.0.0.1:8000/webhooks/{source}/"


class Command(BaseCommand):
    help = "Sign a generic webhook with the configured secret and POST it to a running server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", help="Name of the workflow to run.")
        parser.add_argument("--inputs", default="{}", help="JSON object passed to the workflow.")
        parser.add_argument("--id", dest="webhook_id", help="webhook_id (default: a new UUID).")
        parser.add_argument("--url", help=f"Endpoint (default: {DEFAULT_URL}).")
        parser.add_argument(
            "--source", default="generic", help="Configured source (default: generic)."
        )
        parser.add_argument(
            "--timeout", type=float, default=10.0, help="Seconds to wait for the answer."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = webhook_settings.source(options["source"])
        if source is None:
            raise CommandError(f"No webhook source {options['source']!r} is configured.")
        if source.scheme != "generic":
            raise CommandError(
                f"Source {source.name!r} uses the {source.scheme!r} scheme; send_test_webhook sends "
                "generic envelopes (workflow_name/inputs/webhook_id) to generic-scheme sources."
            )
        if not source.secrets:
            raise CommandError(
                f"Source {source.name!r} has no secret: set WEBHOOK_SECRET_{source.name.upper()} "
                "or WEBHOOKS['SOURCES'][...]['SECRETS']."
            )
        try:
            inputs = json.loads(options["inputs"])
        except ValueError as exc:
            raise CommandError(f"--inputs is not JSON: {exc}") from None
        webhook_id = options["webhook_id"] or str(uuid.uuid4())
        body = json.dumps(
            {"workflow_name": options["workflow"], "inputs": inputs, "webhook_id": webhook_id}
        ).encode()
        headers = get_scheme(source.scheme).sign(body, source.secrets[0], webhook_id=webhook_id)
        url = options["url"] or DEFAULT_URL.format(source=source.name)
        request = urllib.request.Request(  # noqa: S310 - the operator chooses the URL
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=options["timeout"]) as response:  # noqa: S310
                status, answer = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read().decode()
        except OSError as exc:
            raise CommandError(f"Could not reach {url}: {exc}") from None
        self.stdout.write(f"POST {url} -> {status}\n{answer}")
        if status >= 400:
            raise CommandError(f"The server refused the webhook ({status}).")
