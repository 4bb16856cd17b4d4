"""The body limit under ASGI, applied before Django reads the body.

Under WSGI the view reads at most ``MAX_BODY_BYTES + 1`` bytes from the server's stream. Django's
ASGI handler instead reads the *whole* body into a temporary file before any middleware or view
runs: a sender could make every webhook request cost as much memory, disk and time as it likes,
and a lying ``Content-Length`` (HTTP/1.1 ``Transfer-Encoding: chunked`` wins over it) changes
nothing. :class:`WebhookBodyLimit` wraps the ASGI application and, for the webhook route only,
answers 413 from the declared length without reading, or stops reading once more than the
limit has arrived, so at most the limit is ever held::

    django_application = get_asgi_application()
    from webhooks_app.asgi import WebhookBodyLimit  # after the app registry is ready

    application = WebhookBodyLimit(django_application)

Other routes (the admin, the API) keep Django's behaviour: bound them in the server or proxy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.core.handlers.asgi import get_script_prefix
from django.db import DatabaseError
from django.urls import Resolver404, resolve

from webhooks_app import metrics, refusals, sources
from webhooks_app.conf import webhook_settings
from webhooks_app.exceptions import PayloadTooLarge
from webhooks_app.views import WebhookView, error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class WebhookBodyLimit:
    """ASGI middleware: the source's ``MAX_BODY_BYTES`` for requests to the webhook route.

    Every method is bounded, not only POST: Django would buffer the body of any of them. The
    contract's order of checks (405 before 413) therefore holds only for bodies within the
    limit here; a larger one is 413 whatever the method.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        source = _webhook_source(scope) if scope["type"] == "http" else None
        if source is None:
            await self.app(scope, receive, send)
            return
        try:
            config = await sources.aget_source(source)
        except DatabaseError:  # the view answers 503; the body is bounded all the same
            config = None
        # An unknown source is answered 404 by the view; its body is bounded all the same.
        limit = config.max_body_bytes if config else webhook_settings.MAX_BODY_BYTES
        if _declared_length(scope) > limit:
            await _refuse(send, source, limit)
            return
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender is gone: nobody to answer
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                await _refuse(send, source, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replaying(b"".join(chunks), receive), send)


def _webhook_source(scope: Scope) -> str | None:
    """The source segment when the request is for :class:`~webhooks_app.views.WebhookView`
    (wherever the host project mounted it), else None. Resolved as Django will resolve it."""
    path = scope["path"]
    script_name = get_script_prefix(scope)
    try:
        match = resolve(path.removeprefix(script_name) if script_name else path)
    except Resolver404:
        return None
    view_class = getattr(match.func, "view_class", None)
    if isinstance(view_class, type) and issubclass(view_class, WebhookView):
        return str(match.kwargs.get("source", ""))
    return None


def _declared_length(scope: Scope) -> int:
    """The ``Content-Length`` header's value; 0 when absent or not a number (as the view)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


async def _refuse(send: Send, source: str, limit: int) -> None:
    """The view's 413 answer, sent before the rest of the body is read. ``Connection: close``:
    the unread remainder cannot be skipped to reach a next request, so the server must drop the
    connection instead of reading it to the end."""
    error = PayloadTooLarge(f"The body is larger than {limit} bytes.")
    refusals.record(source, error)
    metrics.count_refusal(source, error)
    response = error_response(error)
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
    ]
    headers += [
        (b"content-length", str(len(response.content)).encode("ascii")),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the wrapped application: the body already read, as one message, then the
    server's own messages (Django listens for the disconnect while the view runs)."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
