"""The body limit under ASGI (finding 8 of issue #10): Django's ASGI handler reads the whole body
before the view runs, so :class:`webhooks_app.asgi.WebhookBodyLimit` must refuse an oversized
one before it has arrived. Attacked through a real uvicorn with raw sockets, and the choice of
limit through the wrapped ASGI application itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.asgi import get_asgi_application
from django.test import override_settings

from tests.conftest import envelope, sign
from tests.processes import UvicornServer
from webhooks_app.asgi import WebhookBodyLimit
from webhooks_app.conf import webhook_settings
from webhooks_app.models import WebhookEvent, WebhookSource

MIB = 1024 * 1024
ATTACK_BYTES = 5 * MIB
#: An answer to an oversized body must come long before a client could send it all.
PROMPTLY = 5.0


@pytest.fixture
def uvicorn(transactional_db: None) -> Iterator[UvicornServer]:
    process = UvicornServer(workers=1)
    yield process
    process.stop()


def chunked(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """``data`` in HTTP/1.1 chunks, without the final empty chunk (the body never ends)."""
    for start in range(0, len(data), size):
        piece = data[start : start + size]
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


class RawResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, seconds: float) -> None:
        self.status, self.headers, self.body, self.seconds = status, headers, body, seconds

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(
    port: int, headers: dict[str, str], body: Iterable[bytes] = (), *, closes: bool = True
) -> RawResponse:
    """POST to the generic source over a raw socket: the head, then ``body`` piece by piece from
    another thread (as a client that keeps sending), while this thread reads the answer.

    With ``closes``, also asserts that the server then closed the connection: it cannot skip
    the unread rest of the body to reach a next request.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock.sendall(f"POST /webhooks/generic/ HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())

    def send_body() -> None:
        try:
            for piece in body:
                sock.sendall(piece)
        except OSError:
            pass  # the server answered and closed the connection: what a limit should do

    sender = threading.Thread(target=send_body, daemon=True)
    started = time.monotonic()
    sender.start()
    try:
        received = b""
        while b"\r\n\r\n" not in received:
            data = sock.recv(65536)
            assert data, f"connection closed without an answer: {received!r}"
            received += data
        head_bytes, _, rest = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
        answer_headers = {
            name.lower(): value.strip()
            for name, _, value in (line.partition(":") for line in header_lines)
        }
        length = int(answer_headers["content-length"])
        while len(rest) < length:
            data = sock.recv(65536)
            assert data, "connection closed mid-answer"
            rest += data
        seconds = time.monotonic() - started
        if closes:
            # Closed with the unread body still in its buffer, the server may send a reset.
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(65536) == b"", "the server kept the connection open"
        return RawResponse(int(status_line.split()[1]), answer_headers, rest[:length], seconds)
    finally:
        sock.close()
        sender.join(10)


def assert_refused_promptly(response: RawResponse) -> None:
    assert response.status == 413, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "payload_too_large",
        "detail": f"The body is larger than {webhook_settings.MAX_BODY_BYTES} bytes.",
    }
    assert response.seconds < PROMPTLY
    assert not WebhookEvent.objects.exists()


@pytest.mark.process
def test_a_declared_oversized_length_is_413_before_any_byte_is_read(uvicorn):
    """No body is sent at all: Django alone would wait for it (and then buffer all 5 MiB)."""
    response = exchange(
        uvicorn.port, {"Content-Type": "application/json", "Content-Length": str(ATTACK_BYTES)}
    )
    assert_refused_promptly(response)


@pytest.mark.process
def test_a_chunked_body_over_the_limit_is_413_before_it_ends(uvicorn):
    """No Content-Length to judge by, and a body that never ends: only a bounded read stops it."""
    response = exchange(
        uvicorn.port,
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        chunked(b"x" * ATTACK_BYTES),
    )
    assert_refused_promptly(response)


@pytest.mark.process
def test_a_lying_content_length_is_413_before_the_body_ends(uvicorn):
    """Declares 100 bytes and sends 5 MiB: ``Transfer-Encoding: chunked`` wins over the length
    (RFC 9112 §6.3), so the declared length passes the check and the body keeps coming."""
    response = exchange(
        uvicorn.port,
        {
            "Content-Type": "application/json",
            "Content-Length": "100",
            "Transfer-Encoding": "chunked",
        },
        chunked(b"x" * ATTACK_BYTES),
    )
    assert_refused_promptly(response)


@pytest.mark.process
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_signed_delivery_is_accepted_under_uvicorn(uvicorn, framing):
    body = envelope("record", f"under-asgi-{framing}")
    headers = {"Content-Type": "application/json", "X-Webhook-Signature": sign(body)}
    if framing == "chunked":  # the limit's bounded read hands the whole body on
        headers["Transfer-Encoding"] = "chunked"
        pieces = [*chunked(body, size=7), b"0\r\n\r\n"]
    else:
        headers["Content-Length"] = str(len(body))
        pieces = [body]
    response = exchange(uvicorn.port, headers, pieces, closes=False)
    assert response.status == 202, response.body
    assert response.json()["webhook_id"] == f"under-asgi-{framing}"
    assert WebhookEvent.objects.filter(webhook_id=f"under-asgi-{framing}").count() == 1


# -- which limit: the wrapped application itself, in process ---------------------------------

SMALL = 1000
WITH_SMALL_SOURCE = {
    **settings.WEBHOOKS,
    "SOURCES": {
        **settings.WEBHOOKS["SOURCES"],
        "small": {"SCHEME": "generic", "SECRETS": [settings.SECRET_A], "MAX_BODY_BYTES": SMALL},
    },
}


def call_asgi(
    path: str, pieces: list[bytes], headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, bytes, int]:
    """POST through ``WebhookBodyLimit(get_asgi_application())``; returns the status, the body
    and how many of ``pieces`` the application read (one ``http.request`` message each)."""
    application = WebhookBodyLimit(get_asgi_application())
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json"), *(headers or [])],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip
    messages = [
        {"type": "http.request", "body": piece, "more_body": n < len(pieces) - 1}
        for n, piece in enumerate(pieces)
    ]
    read = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        if read < len(messages):
            read += 1
            return messages[read - 1]
        await asyncio.Event().wait()  # a client that stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async_to_sync(application)(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, read


@override_settings(WEBHOOKS=WITH_SMALL_SOURCE)
def test_the_limit_is_the_sources_own():
    assert webhook_settings.source("small").max_body_bytes == SMALL
    declared = [(b"content-length", str(SMALL + 1).encode())]
    status, body, read = call_asgi("/webhooks/small/", [b"x" * (SMALL + 1)], declared)
    assert (status, json.loads(body)["error"], read) == (413, "payload_too_large", 0)
    # Undeclared: read up to the limit, then refused without reading the third piece.
    status, body, read = call_asgi("/webhooks/small/", [b"x" * 600, b"x" * 600, b"x" * 600])
    assert (status, json.loads(body)["detail"], read) == (
        413,
        f"The body is larger than {SMALL} bytes.",
        2,
    )
    # Within the limit, in pieces: the view gets the whole body (and finds it unsigned).
    status, body, read = call_asgi("/webhooks/small/", [b"{}" * 200, b"{}" * 200])
    assert (status, json.loads(body)["error"], read) == (401, "missing_signature", 2)
    # The generic source keeps the global limit for the same body.
    status, body, _ = call_asgi("/webhooks/generic/", [b"x" * 600, b"x" * 600])
    assert (status, json.loads(body)["error"]) == (401, "missing_signature")


@pytest.mark.django_db  # a name no settings source has may be a database source
def test_an_unknown_source_is_bounded_by_the_global_limit():
    status, body, _ = call_asgi("/webhooks/nowhere/", [b"{}"])
    assert (status, json.loads(body)["error"]) == (404, "unknown_source")
    status, body, read = call_asgi("/webhooks/nowhere/", [b"x" * MIB, b"x"])
    assert (status, json.loads(body)["error"], read) == (413, "payload_too_large", 2)


@pytest.mark.django_db
def test_a_database_source_has_its_own_limit():
    WebhookSource.objects.create(
        name="small-db", scheme="generic", options={"MAX_BODY_BYTES": SMALL}
    )
    declared = [(b"content-length", str(SMALL + 1).encode())]
    status, body, read = call_asgi("/webhooks/small-db/", [b"x" * (SMALL + 1)], declared)
    assert (status, json.loads(body)["error"], read) == (413, "payload_too_large", 0)
    status, body, read = call_asgi("/webhooks/small-db/", [b"{}" * 200, b"{}" * 200])
    assert (status, json.loads(body)["error"], read) == (503, "not_configured", 2)


def test_other_routes_are_left_to_django():
    status, _, read = call_asgi("/not-a-webhook-route/", [b"x" * MIB, b"x"])
    assert (status, read) == (404, 2)
