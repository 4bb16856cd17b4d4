"""The WhatsApp (Meta) scheme: the shared vectors over the bytes as sent, the scheme contract,
ids derived from the payload, and the GET verification handshake through the endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import load_vectors, queued_tasks
from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from tests.testapp.models import Execution
from webhooks_app import tasks
from webhooks_app.exceptions import (
    HandshakeRefused,
    InvalidPayload,
    InvalidSignature,
    MissingSignature,
    NotConfigured,
)
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.whatsapp import WhatsAppScheme

SCHEME = WhatsAppScheme()
VECTORS = load_vectors("meta")
SIGNATURE = "expected_X-Hub-Signature-256"


def body_of(vector: dict[str, Any]) -> bytes:
    """The body exactly as Meta sent it (escaped unicode stays six ASCII characters)."""
    return (vector.get("body") or vector["body_raw_bytes_as_sent"]).encode()


def signed_request(body: bytes, signature: str) -> InboundRequest:
    return InboundRequest(body=body, headers={"x-hub-signature-256": signature})


def verify(req: InboundRequest, secrets: list[str]) -> None:
    # Meta signs no timestamp: the clock and tolerance must not matter.
    SCHEME.verify(req, secrets, now=0, tolerance=0)


# -- the shared vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v[SIGNATURE][7:15])
def test_vector_verifies_over_the_bytes_as_sent(vector: dict[str, Any]) -> None:
    verify(signed_request(body_of(vector), vector[SIGNATURE]), [vector["app_secret"]])
    assert SCHEME.sign(body_of(vector), vector["app_secret"]) == {
        "X-Hub-Signature-256": vector[SIGNATURE]
    }


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if "\\u" in v.get("body_raw_bytes_as_sent", "")]
)
def test_re_serialised_unicode_is_refused(vector: dict[str, Any]) -> None:
    decoded = json.dumps(json.loads(body_of(vector)), ensure_ascii=False).encode()
    assert decoded != body_of(vector)
    with pytest.raises(InvalidSignature):
        verify(signed_request(decoded, vector[SIGNATURE]), [vector["app_secret"]])


@pytest.mark.parametrize("part", ["body", "signature"])
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v[SIGNATURE][7:15])
def test_vector_with_one_byte_changed_is_refused(vector: dict[str, Any], part: str) -> None:
    body, signature = body_of(vector), vector[SIGNATURE]
    if part == "body":
        i = len(body) // 2
        body = body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    else:
        i = len(signature) // 2
        signature = signature[:i] + ("0" if signature[i] != "0" else "1") + signature[i + 1 :]
    with pytest.raises(InvalidSignature):
        verify(signed_request(body, signature), [vector["app_secret"]])


@pytest.mark.parametrize("vector", VECTORS[:1])
def test_upper_case_hex_and_prefix_verify_but_not_the_bare_digest(vector: dict[str, Any]) -> None:
    digest = vector[SIGNATURE].removeprefix("sha256=")
    verify(signed_request(body_of(vector), "SHA256=" + digest.upper()), [vector["app_secret"]])
    with pytest.raises(InvalidSignature):
        verify(signed_request(body_of(vector), digest), [vector["app_secret"]])


def test_missing_or_legacy_sha1_only_is_missing_signature() -> None:
    for headers in ({}, {"x-hub-signature": "sha1=" + "0" * 40}):
        with pytest.raises(MissingSignature):
            verify(InboundRequest(body=b"{}", headers=headers), ["app_secret_123"])


# -- event type and delivery id -------------------------------------------------------------


def notification(field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": field, "value": value}]}],
    }


def message(event_type: str, message_id: str) -> dict[str, Any]:
    return notification(
        event_type,
        {
            "messaging_product": "whatsapp",
            "metadata": {"phone_number_id": "106540352242922"},
            "messages": [{"id": message_id, "type": "text", "text": {"body": "hi"}}],
        },
    )


def parse(payload: Any) -> tuple[str | None, str]:
    delivery = SCHEME.parse(InboundRequest(body=json.dumps(payload).encode(), headers={}))
    return delivery.webhook_id, delivery.event_type


def test_message_id_is_the_delivery_id() -> None:
    payload = message("messages", "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEyQzQ1QjM0")
    assert parse(payload) == ("wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEyQzQ1QjM0", "messages")


def batch(*items: tuple[str, str]) -> dict[str, Any]:
    """One notification carrying several ``("messages", id)`` or ``("statuses", "id:status")``
    items in one change, as Meta batches them."""
    value: dict[str, list[dict[str, str]]] = {"messages": [], "statuses": []}
    for kind, item in items:
        if kind == "messages":
            value["messages"].append({"id": item, "type": "text", "text": {"body": "hi"}})
        else:
            status_id, status = item.split(":")
            value["statuses"].append({"id": status_id, "status": status})
    return notification("messages", value)


def test_a_batch_id_covers_every_message_and_status_of_the_batch() -> None:
    """Two batches are one delivery only if they carry the same items, in any order (issue #10:
    the first message's id alone made a larger batch a duplicate, losing its other items)."""
    a, b, s = ("messages", "wamid.A"), ("messages", "wamid.B"), ("statuses", "wamid.X:read")
    assert parse(batch(a)) == parse(batch(a, a)) == ("wamid.A", "messages")
    ids = {items: parse(batch(*items))[0] for items in [(a, b), (b, a), (a, s), (s,), (s, a, b)]}
    assert ids[(a, b)] == ids[(b, a)]
    assert len({ids[(a, b)], ids[(a, s)], ids[(s,)], ids[(s, a, b)], "wamid.A"}) == 5
    assert ids[(s,)] == "wamid.X:read"
    assert all(len(ids[items]) <= 255 for items in ids)


def test_a_batch_id_covers_every_entry_and_change() -> None:
    """Meta batches across entries (accounts) and changes too, not only within a change."""
    a, b = message("messages", "wamid.A"), message("messages", "wamid.B")
    two_entries = {**a, "entry": a["entry"] + b["entry"]}
    changes = a["entry"][0]["changes"] + b["entry"][0]["changes"]
    two_changes = {**a, "entry": [{"id": "102290129340398", "changes": changes}]}
    one_change = parse(batch(("messages", "wamid.A"), ("messages", "wamid.B")))
    assert parse(two_entries) == parse(two_changes) == one_change != ("wamid.A", "messages")


def test_status_updates_of_one_message_are_distinct_deliveries() -> None:
    def status(name: str) -> dict[str, Any]:
        return notification("messages", {"statuses": [{"id": "wamid.X", "status": name}]})

    assert parse(status("delivered")) == ("wamid.X:delivered", "messages")
    assert parse(status("read")) == ("wamid.X:read", "messages")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"object": "page"}, (None, "")),
        ({"object": "page", "entry": [{"messaging": [{"message": {"mid": "m1"}}]}]}, (None, "")),
        ({"entry": "x"}, (None, "")),
        ({"entry": [{"changes": [{"field": "messages", "value": "x"}]}]}, (None, "messages")),
        (notification("account_update", {"event": "VERIFIED_ACCOUNT"}), (None, "account_update")),
        (notification("messages", {"statuses": [{"id": "wamid.X"}]}), (None, "messages")),
    ],
)
def test_without_ids_the_server_assigns_one(payload: Any, expected: tuple[Any, str]) -> None:
    assert parse(payload) == expected


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"entry": [{"changes": [{"field": 1}]}]},
        message("messages", ""),
        notification("messages", {"messages": [{"id": 7}]}),
        notification("messages", {"statuses": [{"id": None, "status": "read"}]}),
        notification("messages", {"statuses": [{"id": "wamid.X", "status": "\x01"}]}),
        notification("messages", {"messages": [{"id": "wamid.A"}, {"id": 7}]}),
    ],
)
def test_malformed_shapes_are_invalid_payload(payload: Any) -> None:
    with pytest.raises(InvalidPayload):
        parse(payload)


# -- the contract ---------------------------------------------------------------------------


class TestWhatsAppScheme(RoutedSchemeContract):
    """The given webhook id goes where Meta puts its id: the message's ``id``."""

    source = "whatsapp"
    scheme_name = "whatsapp"
    routed_event = "messages"
    unrouted_event = "account_update"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps(message(event_type, f"wamid.{webhook_id}")).encode()
        return SignedRequest(body, SCHEME.sign(body, secret))


# -- through the endpoint -------------------------------------------------------------------

VERIFY_TOKEN = "my-verify-token"


def whatsapp_settings(**options: Any) -> Any:
    source = {
        "SCHEME": "whatsapp",
        "SECRETS": [settings.SECRET_A],
        "VERIFY_TOKEN": VERIFY_TOKEN,
        "ROUTES": {"messages": "record"},
        **options,
    }
    sources = {"whatsapp": source, "generic": {"SCHEME": "generic", "SECRETS": [settings.SECRET_A]}}
    return override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": sources})


@pytest.fixture
def whatsapp_source(db: Any) -> Iterator[None]:
    with whatsapp_settings():
        yield


def handshake(client: Any, source: str = "whatsapp", **query: str) -> Any:
    params = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "123"}
    return client.get(f"/webhooks/{source}/", {**params, **query})


def test_handshake_echoes_the_challenge_as_text(client, whatsapp_source):
    response = handshake(client)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert response.content == b"123"
    assert handshake(client, **{"hub.challenge": "1158201444"}).content == b"1158201444"
    assert not WebhookEvent.objects.exists()


@pytest.mark.parametrize(
    "query",
    [
        {"hub.verify_token": "guess"},
        {"hub.verify_token": VERIFY_TOKEN + "x"},
        {"hub.verify_token": ""},
        {"hub.mode": "unsubscribe"},
        {"hub.challenge": ""},
        {"hub.challenge": "<script>alert(1)</script>"},
        {"hub.challenge": "\u0661\u0662\u0663"},  # Arabic-Indic digits: not what Meta sends
        {"hub.challenge": "1" * 256},
    ],
)
def test_handshake_refusals_are_403_json(client, whatsapp_source, query):
    response = handshake(client, **query)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "script" not in response.content.decode()


def test_handshake_without_parameters_is_403(client, whatsapp_source):
    assert client.get("/webhooks/whatsapp/").status_code == 403


@pytest.mark.parametrize("verify_token", [None, ""])
def test_handshake_without_verify_token_is_503(client, db, verify_token):
    with whatsapp_settings(VERIFY_TOKEN=verify_token):
        response = handshake(client)
    assert response.status_code == 503
    assert response.json()["error"] == "not_configured"


def test_handshake_needs_no_secret_yet(client, db):
    """Meta checks the callback URL before the App Secret is necessarily configured."""
    with whatsapp_settings(SECRETS=[]):
        assert handshake(client).content == b"123"


def test_get_on_a_scheme_without_handshake_is_405(client, whatsapp_source):
    response = handshake(client, source="generic")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response["Allow"] == "POST"
    assert handshake(client, source="nope").status_code == 404


def test_other_methods_on_a_handshake_scheme_allow_get_and_post(client, whatsapp_source):
    response = client.put("/webhooks/whatsapp/")
    assert response.status_code == 405
    assert response["Allow"] == "GET, POST"


def post(client: Any, payload: Any, **headers: str) -> Any:
    body = json.dumps(payload).encode()
    headers = {**SCHEME.sign(body, settings.SECRET_A), **headers}
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    return client.generic(
        "POST", "/webhooks/whatsapp/", body, CONTENT_TYPE="application/json", **meta
    )


def test_each_status_is_stored_once(client, whatsapp_source):
    for name in ("sent", "delivered", "delivered", "read"):
        payload = notification("messages", {"statuses": [{"id": "wamid.X", "status": name}]})
        post(client, payload)
    assert sorted(WebhookEvent.objects.values_list("webhook_id", flat=True)) == [
        "wamid.X:delivered",
        "wamid.X:read",
        "wamid.X:sent",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_later_batch_with_more_messages_is_stored_and_runs(client, whatsapp_source):
    """Issue #10: a second batch that starts with an already stored message but carries more
    was answered ``duplicate`` and its other messages never ran. A batch of the same messages,
    in any order and whatever its bytes, is still a duplicate."""
    a, b = ("messages", "wamid.A"), ("messages", "wamid.B")
    first, larger = post(client, batch(a)), post(client, batch(a, b))
    assert (first.status_code, larger.status_code) == (202, 202), larger.content
    again = post(client, batch(b, a))
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert again.json()["webhook_id"] == larger.json()["webhook_id"]
    assert queued_tasks() == 2
    for pk in WebhookEvent.objects.values_list("pk", flat=True):
        tasks.process_event(pk)
    assert Execution.objects.count() == 2


def test_legacy_sha1_header_is_not_stored(client, whatsapp_source):
    response = post(
        client, message("messages", "wamid.A"), **{"X-Hub-Signature": "sha1=" + "0" * 40}
    )
    assert response.status_code == 202
    event = WebhookEvent.objects.get()
    assert not {"x-hub-signature", "x-hub-signature-256"} & set(event.headers)


def test_refused_handshake_scheme_level():
    request = InboundRequest(body=b"", headers={}, query={"hub.mode": "subscribe"})
    with pytest.raises(HandshakeRefused):
        SCHEME.handshake(request, VERIFY_TOKEN)


def test_an_empty_verify_token_never_matches():
    """Not even an empty or absent ``hub.verify_token``: the source is not configured."""
    for query in ({"hub.verify_token": ""}, {}):
        request = InboundRequest(
            body=b"", headers={}, query={"hub.mode": "subscribe", "hub.challenge": "1", **query}
        )
        with pytest.raises(NotConfigured):
            SCHEME.handshake(request, "")
