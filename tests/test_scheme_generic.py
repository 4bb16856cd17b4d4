"""The generic scheme through the shared scheme contract, plus its pure functions."""

from __future__ import annotations

import json

import pytest

from tests.scheme_cases import SchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.generic import GenericScheme


class TestGenericScheme(SchemeContract):
    source = "generic"
    scheme_name = "generic"
    routed_event = "record"

    def source_settings(self):
        return {"SCHEME": "generic", "SECRETS": super().source_settings()["SECRETS"]}

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps({"workflow_name": event_type, "webhook_id": webhook_id}).encode()
        return SignedRequest(body, GenericScheme().sign(body, secret))


def _request(body: bytes, signature: str | None) -> InboundRequest:
    headers = {} if signature is None else {"x-webhook-signature": signature}
    return InboundRequest(body=body, headers=headers)


def test_verify_is_pure_and_exact():
    scheme = GenericScheme()
    body = b'{"a": 1}'
    signature = scheme.sign(body, "k")["X-Webhook-Signature"]
    scheme.verify(_request(body, signature), ["k"], now=0, tolerance=0)
    with pytest.raises(InvalidSignature):
        scheme.verify(_request(body + b" ", signature), ["k"], now=0, tolerance=0)
    with pytest.raises(MissingSignature):
        scheme.verify(_request(body, None), ["k"], now=0, tolerance=0)
    with pytest.raises(InvalidSignature):
        scheme.verify(_request(body, signature), [], now=0, tolerance=0)


def test_empty_key_signature_never_verifies_against_configured_secrets():
    scheme = GenericScheme()
    body = b"{}"
    empty_key_signature = scheme.sign(body, "")["X-Webhook-Signature"]
    with pytest.raises(InvalidSignature):
        scheme.verify(_request(body, empty_key_signature), ["real-secret"], now=0, tolerance=0)
