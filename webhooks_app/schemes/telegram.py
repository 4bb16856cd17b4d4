"""Telegram Bot API: ``X-Telegram-Bot-Api-Secret-Token`` equals the ``secret_token`` given to
``setWebhook`` (1-256 characters of ``A-Z a-z 0-9 _ -``).

A shared token, not a MAC (see :class:`SharedTokenScheme`). Delivery id: the update's
``update_id`` (one source per bot, so ``(source, update_id)`` is unique); event type: the kind
of update, i.e. its one other field (``message``, ``edited_message``, ``callback_query``…).
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


class TelegramScheme(SharedTokenScheme):
    token_header: ClassVar[str] = "x-telegram-bot-api-secret-token"  # noqa: S105 - a header name
    signature_headers: ClassVar[frozenset[str]] = frozenset({token_header})
    missing_detail: ClassVar[str] = (
        "Send X-Telegram-Bot-Api-Secret-Token (setWebhook's secret_token)."
    )

    def parse(self, request: InboundRequest) -> Delivery:
        update = parse_json_object(request.body)
        update_id = update.get("update_id")
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            raise InvalidPayload("update_id must be an integer.")
        kinds = [key for key in update if key != "update_id"]
        webhook_id = validate_webhook_id(str(update_id), where="update_id")
        return Delivery(webhook_id, kinds[0] if kinds else "", update)

    def sign(
        self,
        body: bytes,
        secret: str,
        *,
        webhook_id: str | None = None,
        timestamp: int | None = None,
    ) -> dict[str, str]:
        return self.token_headers(secret)


SCHEME = TelegramScheme
