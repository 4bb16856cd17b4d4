"""``manage.py reencrypt_webhook_secrets``: move every database source's secret to the current
key of ``WEBHOOKS["ENCRYPTION_KEYS"]`` (the first), after which the older keys can be dropped."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from webhooks_app import services


class Command(BaseCommand):
    help = (
        "Encrypt every database source's secret under the first key of "
        "WEBHOOKS['ENCRYPTION_KEYS'], so that the keys after it can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        done = services.reencrypt_secrets()
        secrets = "secret" if done.moved == 1 else "secrets"
        self.stdout.write(f"Re-encrypted {done.moved} {secrets} under the current key.")
        if done.unreadable:
            raise CommandError(
                f"{done.unreadable} secret(s) could not be decrypted with any key in "
                "WEBHOOKS['ENCRYPTION_KEYS'] and were left as they are: keep the key they were "
                "encrypted with (manage.py check --database default names their sources, "
                "webhooks_app.E030)."
            )
