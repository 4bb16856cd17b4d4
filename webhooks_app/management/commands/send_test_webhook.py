"""``manage.py send_test_webhook WORKFLOW`` or ``--source S [--event-type T]``: sign and send a
webhook, the quickest end-to-end try.

With ``WORKFLOW``, a generic envelope naming it, to a generic-scheme source. Without, the
app's sample payload of the source's provider (:mod:`webhooks_app.testing`), signed and
addressed as that provider would send it: any scheme, a new delivery each time.

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

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import NoReverseMatch, reverse

from webhooks_app import testing
from webhooks_app.conf import SourceConfig

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
    help = (
        "Sign a webhook with the configured secret and POST it to a running server: a generic "
        "envelope naming WORKFLOW, or without it the sample payload of the source's provider."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "workflow",
            nargs="?",
            help="Workflow to run (a generic envelope); leave it out to send the sample payload "
            "of the source's provider.",
        )
        parser.add_argument("--inputs", help="JSON object passed to WORKFLOW (default: {}).")
        parser.add_argument(
            "--id", dest="webhook_id", help="Delivery id (webhook_id; default: a new one)."
        )
        parser.add_argument(
            "--url",
            help="Endpoint (default: the source's PUBLIC_URL, else this project's webhook path "
            f"on {DEFAULT_BASE_URL}).",
        )
        parser.add_argument(
            "--source", default="generic", help="Configured source (default: generic)."
        )
        parser.add_argument(
            "--event-type",
            help="Which sample payload to send (default: the provider's usual one); not with "
            "WORKFLOW.",
        )
        parser.add_argument(
            "--timeout", type=float, default=10.0, help="Seconds to wait for the answer."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            source = testing.source_config(options["source"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        url = options["url"] or default_url(source)
        try:
            if options["workflow"] is None:
                body, headers = self.sample(source, options, url)
            else:
                body, headers = self.envelope(source, options)
        except (ImproperlyConfigured, ValueError) as exc:
            raise CommandError(str(exc)) from None
        request = urllib.request.Request(  # noqa: S310 - the operator chooses the URL
            url, data=body, method="POST", headers=headers
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

    def sample(
        self, source: SourceConfig, options: dict[str, Any], url: str
    ) -> tuple[bytes, dict[str, str]]:
        """The provider's sample, signed for ``url`` (the URL a URL-signing scheme signs); an
        unknown event type is an error that names the known ones."""
        if options["inputs"] is not None:
            raise CommandError("--inputs goes with WORKFLOW: a sample payload has its own.")
        return testing.signed_request(
            source.name, event_type=options["event_type"], webhook_id=options["webhook_id"], url=url
        )

    def envelope(
        self, source: SourceConfig, options: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        """The generic envelope naming WORKFLOW, with a new UUID unless ``--id`` names one."""
        if source.scheme != "generic":
            raise CommandError(
                f"Source {source.name!r} uses the {source.scheme!r} scheme, whose ROUTES choose "
                "the workflow: leave WORKFLOW out to send its provider's sample payload "
                "(--event-type picks which)."
            )
        if options["event_type"] is not None:
            raise CommandError(
                "--event-type picks a sample payload; with WORKFLOW the envelope's event type "
                "is the workflow."
            )
        try:
            inputs = json.loads(options["inputs"] or "{}")
        except ValueError as exc:
            raise CommandError(f"--inputs is not JSON: {exc}") from None
        webhook_id = options["webhook_id"] or str(uuid.uuid4())
        envelope = {"workflow_name": options["workflow"], "inputs": inputs}
        return testing.signed_request(source.name, envelope, webhook_id=webhook_id)


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
