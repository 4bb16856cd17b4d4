"""Telegram Bot API: ``X-Telegram-Bot-Api-Secret-Token`` equals the ``secret_token`` given to
``setWebhook`` (1-256 characters of ``A-Z a-z 0-9 _ -``; Telegram refuses any other secret).

A shared token, not a MAC (see :class:`SharedTokenScheme`): it proves the sender knows the
secret, not that the body is intact, and nothing is timestamped. HTTPS is what protects the
body, and whoever captured one request holds the token and can send anything until it is
changed. What is stopped is the same update arriving twice: by its ``update_id``, and by the
body's digest (the content key) whatever the id.

Delivery id: the update's ``update_id``, as a string. Telegram retries a failed update with the
same id, so it is the idempotency key. It is unique per bot only, hence one source per bot
(ids are stored per source). Telegram's docs add that after a week without updates the next
id "is chosen randomly": a quiet bot can, very rarely, get an id that is still stored and
see that update answered as a duplicate.

Event type: the kind of update, i.e. its one field beside ``update_id`` (``message``,
``edited_message``, ``callback_query``, ``my_chat_member``…). An update with no such field
(Telegram never sends one) gets ``""`` and goes to the ``"*"`` route.
"""

from __future__ import annotations

from typing import ClassVar

from webhooks_app.exceptions import InvalidPayload
from webhooks_app.schemes.base import (
    Delivery,
    InboundRequest,
    SharedTokenScheme,
    parse_json_object,
    validate_webhook_id,
)

TOKEN_HEADER = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name, not a secret
ID_FIELD = "update_id"


class TelegramScheme(SharedTokenScheme):
    token_header: ClassVar[str] = TOKEN_HEADER
    signature_headers: ClassVar[frozenset[str]] = frozenset({TOKEN_HEADER})
    missing_detail: ClassVar[str] = (
        "Send X-Telegram-Bot-Api-Secret-Token (setWebhook's secret_token)."
    )
    recipe: ClassVar[str] = (
        "Call the Bot API's setWebhook with url={url} and secret_token=this source's secret"
        " (1 to 256 characters: A-Z a-z 0-9 _ -). One source per bot."
    )
    secret_from_provider: ClassVar[bool] = False

    def parse(self, request: InboundRequest) -> Delivery:
        update = parse_json_object(request.body)
        update_id = update.get(ID_FIELD)
        # bool is an int subclass: ``true`` must not pass for update 1.
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise InvalidPayload("update_id must be an integer.")
        kind = next((key for key in update if key != ID_FIELD), "")
        return Delivery(
            webhook_id=validate_webhook_id(str(update_id), where=ID_FIELD),
            event_type=kind,
            payload=update,
        )

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        """The header Telegram adds: the token itself (``body`` is not involved)."""
        return self.token_headers(secret)


SCHEME = TelegramScheme
