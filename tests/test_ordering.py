"""Which ordering key an event gets: the generic envelope's ``order_key``, else the source's
``ORDER_KEY`` (a payload path or a function); a missing path or a failing function leaves the
event unordered, never refused."""

from __future__ import annotations

import json
import logging

import pytest
from django.conf import settings
from django.test import override_settings

from tests.conftest import envelope
from webhooks_app import ordering
from webhooks_app.models import WebhookEvent

ORDERED_URL = "/webhooks/ordered/"


@pytest.mark.parametrize(
    ("payload", "path", "key"),
    [
        ({"data": {"object": {"customer": "cus_1"}}}, "data.object.customer", "cus_1"),
        ({"items": [{"id": 7}]}, "items.0.id", "7"),
        ({"customer": None}, "customer", None),
        ({"customer": {"id": 1}}, "customer", None),
        ({"customer": True}, "customer", None),
        ({"customer": 1.5}, "customer", None),
        ({"customer": ""}, "customer", None),
        ({"other": "x"}, "customer", None),
        ({"items": []}, "items.0", None),
        (["not", "an", "object"], "customer", None),
    ],
)
def test_a_payload_path_gives_a_key_or_leaves_the_event_unordered(payload, path, key):
    assert ordering.key_text(ordering.lookup(payload, path)) == key


def test_a_long_key_is_stored_as_its_digest():
    key = ordering.key_text("k" * 300)
    assert key is not None and key.startswith("sha256:") and len(key) <= ordering.MAX_KEY_LENGTH
    assert ordering.key_text("k" * 300) == key


def order_key_of(webhook_id: str) -> str | None:
    return WebhookEvent.objects.get(webhook_id=webhook_id).order_key


@pytest.mark.django_db
def test_the_source_order_key_orders_deliveries(post_webhook):
    body = envelope("record", "ordered-1", customer="c-9")
    assert post_webhook(body, url=ORDERED_URL).status_code == 202
    assert order_key_of("ordered-1") == "c-9"
    body = envelope("record", "unordered-1", other="x")
    assert post_webhook(body, url=ORDERED_URL).status_code == 202  # no path: not an error
    assert order_key_of("unordered-1") is None


@pytest.mark.django_db
def test_the_generic_envelope_carries_its_own_key(post_webhook):
    body = json.dumps({"workflow_name": "record", "webhook_id": "e-1", "order_key": "k1"})
    assert post_webhook(body.encode()).status_code == 202
    assert order_key_of("e-1") == "k1"
    assert post_webhook(envelope("record", "e-2")).status_code == 202
    assert order_key_of("e-2") is None


@pytest.mark.django_db
@pytest.mark.parametrize("bad", [7, "", ["k"], {"k": 1}])
def test_a_malformed_envelope_order_key_is_a_clear_400(post_webhook, bad):
    body = json.dumps({"workflow_name": "record", "webhook_id": "e-1", "order_key": bad})
    response = post_webhook(body.encode())
    assert response.status_code == 400
    assert "order_key must be a non-empty string" in response.json()["detail"]
    assert not WebhookEvent.objects.exists()


def customer_of(payload: dict, event_type: str) -> str:
    return f"{event_type}:{payload['customer']}"


def broken(payload: dict, event_type: str) -> str:
    raise KeyError("customer")


def with_order_key(spec: str):
    sources = {**settings.WEBHOOKS["SOURCES"], "ordered": {
        "SCHEME": "generic", "SECRETS": [settings.SECRET_A], "ORDER_KEY": spec,
    }}  # fmt: skip
    return override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": sources})


@pytest.mark.django_db
def test_an_order_key_function_is_called_with_payload_and_event_type(post_webhook):
    with with_order_key("tests.test_ordering:customer_of"):
        body = envelope("record", "f-1", customer="c-1")
        assert post_webhook(body, url=ORDERED_URL).status_code == 202
    assert order_key_of("f-1") == "record:c-1"


@pytest.mark.django_db
def test_a_raising_order_key_function_stores_the_event_unordered_and_logs(post_webhook, caplog):
    with with_order_key("tests.test_ordering:broken"), caplog.at_level(logging.ERROR):
        assert post_webhook(envelope("record", "f-2"), url=ORDERED_URL).status_code == 202
    assert order_key_of("f-2") is None
    assert "ORDER_KEY tests.test_ordering:broken of source ordered failed" in caplog.text
