"""Errors that carry their HTTP status and stable error code.

The ingestion core raises these; the view turns any of them into the contract's JSON body
``{"error": code, "detail": text}`` in one place. Nothing here imports Django, so the pure
signature schemes can raise them too.
"""

from __future__ import annotations


class WebhookError(Exception):
    """Base class: a request the receiver refuses, with the answer to give."""

    status_code: int = 400
    error: str = "bad_request"
    default_detail: str = "The request was refused."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    @property
    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After`` for the retryable ones)."""
        return {}


class UnknownSource(WebhookError):
    status_code = 404
    error = "unknown_source"
    default_detail = "No webhook source is configured under this URL."


class MethodNotAllowed(WebhookError):
    status_code = 405
    error = "method_not_allowed"
    default_detail = "Webhooks are delivered with POST."


class PayloadTooLarge(WebhookError):
    status_code = 413
    error = "payload_too_large"
    default_detail = "The body is larger than WEBHOOKS['MAX_BODY_BYTES'] allows."


class UnsupportedMediaType(WebhookError):
    status_code = 415
    error = "unsupported_media_type"
    default_detail = "The body must be sent as application/json."


class NotConfigured(WebhookError):
    """No usable secret: refusing (fail closed) and letting the sender retry until fixed."""

    status_code = 503
    error = "not_configured"
    default_detail = (
        "This webhook source has no secret configured; the receiver refuses all deliveries."
    )


class MissingSignature(WebhookError):
    status_code = 401
    error = "missing_signature"
    default_detail = "The request is expected to be signed."


class InvalidSignature(WebhookError):
    status_code = 401
    error = "invalid_signature"
    default_detail = "The signature does not match the body."


class HandshakeRefused(WebhookError):
    status_code = 403
    error = "forbidden"
    default_detail = "The verification token does not match."


class InvalidJSON(WebhookError):
    status_code = 400
    error = "invalid_json"
    default_detail = "The body is not valid UTF-8 JSON."


class InvalidPayload(WebhookError):
    status_code = 400
    error = "invalid_payload"
    default_detail = "The body does not have the expected shape."


class UnknownWorkflow(WebhookError):
    status_code = 422
    error = "unknown_workflow"
    default_detail = "No workflow is registered under this name."


class Unavailable(WebhookError):
    """The event could not be stored; the sender must retry later."""

    status_code = 503
    error = "unavailable"
    default_detail = "The event could not be stored right now; retry later."
    retry_after_seconds = 30

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}
