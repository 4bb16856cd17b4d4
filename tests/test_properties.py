"""Property-based tests and a bounded fuzz of the parsers (hypothesis).

Properties that hold for *all* inputs: the endpoint never answers 5xx and never stores an
unauthenticated request; any single changed byte of a signed request is refused; the parsers
raise only their own errors; and any sequence of deliveries, redeliveries and replays keeps one
row per id.
"""

from __future__ import annotations

import contextlib
import json
import os

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tests.conftest import GENERIC_URL, sign
from webhooks_app import services
from webhooks_app.exceptions import WebhookError
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.base import parse_form, parse_json
from webhooks_app.schemes.generic import GenericScheme

#: CI bounds the fuzzing time; raise it locally with HYPOTHESIS_EXAMPLES=5000.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "150"))
FAST = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

header_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=300
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def post(body: bytes, **headers: str):
    return Client().generic("POST", GENERIC_URL, body, CONTENT_TYPE="application/json", **headers)


@pytest.mark.django_db
@FAST
@given(body=st.binary(max_size=2000), signature=header_text, webhook_id=header_text)
def test_arbitrary_unsigned_requests_never_5xx_and_store_nothing(body, signature, webhook_id):
    response = post(body, HTTP_X_WEBHOOK_SIGNATURE=signature, HTTP_X_WEBHOOK_ID=webhook_id)
    # The signature is checked before anything is parsed: garbage can only be unauthenticated.
    assert response.status_code == 401
    assert response.json()["error"] in {"invalid_signature", "missing_signature"}
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
@FAST
@given(body=st.binary(max_size=2000), webhook_id=header_text)
def test_arbitrary_signed_bodies_never_5xx(body, webhook_id):
    """Signed garbage reaches the parsers: 4xx, or 2xx for what happens to be a valid envelope."""
    response = post(body, HTTP_X_WEBHOOK_SIGNATURE=sign(body), HTTP_X_WEBHOOK_ID=webhook_id)
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.json()["error"] in {"invalid_json", "invalid_payload", "unknown_workflow"}


@pytest.mark.django_db
@FAST
@given(inputs=st.dictionaries(st.text(max_size=20), json_values, max_size=5), data=st.data())
def test_flipping_any_byte_of_a_signed_request_is_refused(inputs, data):
    body = json.dumps({"workflow_name": "record", "inputs": inputs, "webhook_id": "flip"}).encode()
    signature = sign(body)
    target = data.draw(st.sampled_from(["body", "signature"]))
    if target == "body":
        index = data.draw(st.integers(0, len(body) - 1))
        flipped = bytes([body[index] ^ data.draw(st.integers(1, 255))])
        body = body[:index] + flipped + body[index + 1 :]
    else:
        index = data.draw(st.integers(len("sha256="), len(signature) - 1))
        replacement = data.draw(
            st.sampled_from("0123456789abcdef").filter(lambda c: c != signature[index])
        )
        signature = signature[:index] + replacement + signature[index + 1 :]
    response = post(body, HTTP_X_WEBHOOK_SIGNATURE=signature)
    assert response.status_code == 401
    assert not WebhookEvent.objects.exists()


@FAST
@given(body=st.binary(max_size=4000))
def test_json_parser_raises_only_its_own_errors(body):
    with contextlib.suppress(WebhookError):
        parse_json(body)


@FAST
@given(depth=st.integers(1, 5000), opener=st.sampled_from([b"[", b'{"a":']))
def test_deep_nesting_is_a_clean_400(depth, opener):
    closer = b"]" if opener == b"[" else b"}"
    body = opener * depth + b"1" + closer * depth
    try:
        parse_json(body)
    except WebhookError as exc:
        assert exc.status_code == 400
    else:
        assert depth <= 64


@FAST
@given(body=st.binary(max_size=2000))
def test_form_parser_raises_only_its_own_errors(body):
    with contextlib.suppress(WebhookError):
        parse_form(body)


@FAST
@given(value=header_text)
def test_signature_header_parser_raises_only_its_own_errors(value):
    request = InboundRequest(body=b"{}", headers={"x-webhook-signature": value})
    try:
        GenericScheme().verify(request, ["secret"], now=0, tolerance=0)
    except WebhookError as exc:
        assert exc.status_code == 401


class DeliveryMachine(RuleBasedStateMachine):
    """Deliver, redeliver and replay in any order: one row per id, and answers that agree."""

    ids = st.sampled_from(["a", "b", "c"])

    @initialize()
    def start(self):
        WebhookEvent.objects.all().delete()
        self.delivered: set[str] = set()

    @rule(webhook_id=ids, payload=st.integers())
    def deliver(self, webhook_id, payload):
        body = json.dumps(
            {"workflow_name": "record", "inputs": {"n": payload}, "webhook_id": webhook_id}
        ).encode()
        response = post(body, HTTP_X_WEBHOOK_SIGNATURE=sign(body))
        expected = 200 if webhook_id in self.delivered else 202
        assert response.status_code == expected, response.content
        self.delivered.add(webhook_id)

    @rule(webhook_id=ids)
    def replay(self, webhook_id):
        services.replay_events(WebhookEvent.objects.filter(webhook_id=webhook_id))

    @invariant()
    def one_row_per_id(self):
        if hasattr(self, "delivered"):
            stored = list(WebhookEvent.objects.values_list("webhook_id", flat=True))
            assert sorted(stored) == sorted(self.delivered)


@pytest.mark.django_db
def test_deliver_redeliver_replay_sequences_keep_one_row_per_id():
    DeliveryMachine.TestCase.settings = settings(
        max_examples=max(EXAMPLES // 5, 10), stateful_step_count=15, deadline=None
    )
    DeliveryMachine.TestCase().runTest()
