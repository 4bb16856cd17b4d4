"""``manage.py send_test_webhook WORKFLOW``: sign and send a webhook, the quickest end-to-end try.

Where it sends: ``--url``, else the source's ``PUBLIC_URL`` (the URL its senders use), else
this project's own webhook path (``reverse()``, so a mount other than ``webhooks/`` is
followed) on ``http://127.0.0.1:8000``, where ``runserver`` listens by default. The host and
port cannot be known from the settings: ``ALLOWED_HOSTS`` lists names a server answers to
(wildcards, production names), not where it listens. So every answer names the URL used, and a
401 or 404 says that another server may have answered.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import NoReverseMatch, reverse

from webhooks_app.conf import SourceConfig, secret_env_names, webhook_settings
from webhooks_app.schemes import get_scheme

#: Where ``runserver`` listens unless told otherwise.
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: What a refusal may mean when the server that answered is not this project's.
WRONG_SERVER_HINTS = {
    401: "the signature did not verify there: that server has another secret for this source, "
    "or it is not this project's server",
    404: "that server has no such webhook URL: it is not this project's server, or mounts "
    "webhooks_app.urls elsewhere",
}


class Command(BaseCommand):
    help = "Sign a generic webhook with the configured secret and POST it to a running server."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", help="Name of the workflow to run.")
        parser.add_argument("--inputs", default="{}", help="JSON object passed to the workflow.")
        parser.add_argument("--id", dest="webhook_id", help="webhook_id (default: a new UUID).")
        parser.add_argument(
            "--url",
            help="Endpoint (default: the source's PUBLIC_URL, else this project's webhook path "
            f"on {DEFAULT_BASE_URL}).",
        )
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
                f"Source {source.name!r} has no secret: set "
                f"{' or '.join(secret_env_names(source.name, source.scheme))} "
                f"or WEBHOOKS['SOURCES'][{source.name!r}]['SECRETS']."
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
        url = options["url"] or default_url(source)
        request = urllib.request.Request(  # noqa: S310 - the operator chooses the URL
            url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=options["timeout"]) as response:  # noqa: S310
                status, answer = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, answer = exc.code, exc.read().decode()
        except OSError as exc:
            raise CommandError(
                f"Could not reach {url}: {exc}. Is the server running there? "
                "Pass --url with the address it listens on."
            ) from None
        self.stdout.write(f"POST {url} -> {status}\n{answer}")
        if status >= 400:
            hint = WRONG_SERVER_HINTS.get(status)
            raise CommandError(
                f"The server at {url} refused the webhook ({status})"
                + (f": {hint}. Pass --url with your server's webhook URL." if hint else ".")
            )


def default_url(source: SourceConfig) -> str:
    """The source's ``PUBLIC_URL``, else this project's path for it on :data:`DEFAULT_BASE_URL`."""
    if source.public_url:
        return source.public_url
    try:
        path = reverse("webhooks_app:receive", kwargs={"source": source.name})
    except NoReverseMatch:
        raise CommandError(
            "webhooks_app.urls is not in this project's URLconf (ROOT_URLCONF), so its webhook "
            "URL is unknown: include it, or pass --url."
        ) from None
    return DEFAULT_BASE_URL + path
