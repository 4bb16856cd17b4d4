"""The Stripe scheme: shared vectors, the scheme contract, rolled secrets (several ``v1``),
downgrade to ``v0``, the literal ``whsec_`` key and timestamps in both directions."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, replace

import pytest

from tests.conftest import load_vectors
from tests.scheme_cases import SignedRequest, TimestampedSchemeContract
from webhooks_app.exceptions import InvalidJSON, InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.schemes import InboundRequest, get_scheme
from webhooks_app.schemes.stripe import StripeScheme

SCHEME = StripeScheme()
TOLERANCE = 300


@dataclass(frozen=True)
class Vector:
    secret: str
    timestamp: str
    body: bytes
    header: str

    def request(self) -> InboundRequest:
        return InboundRequest(body=self.body, headers={"stripe-signature": self.header})


VECTORS = [
    Vector(
        secret=entry["secret"],
        timestamp=str(entry["timestamp"]),
        body=entry["payload"].encode(),
        header=entry["expected_header_Stripe-Signature"],
    )
    for entry in load_vectors("stripe")
]


def _one_byte_changed(text: str) -> str:
    i = len(text) // 2
    return text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1 :]


def _verify(request: InboundRequest, secrets: list[str], now: float) -> None:
    SCHEME.verify(request, secrets, now=now, tolerance=TOLERANCE)


# -- the shared vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.secret)
def test_vector_verifies_and_is_reproduced(vector: Vector) -> None:
    _verify(vector.request(), [vector.secret], now=int(vector.timestamp))
    signed = SCHEME.sign(vector.body, vector.secret, timestamp=int(vector.timestamp))
    assert signed == {"Stripe-Signature": vector.header}
    delivery = SCHEME.parse(vector.request())
    assert delivery.webhook_id == json.loads(vector.body)["id"]


def _tamper(vector: Vector, part: str) -> Vector:
    if part == "body":
        i = len(vector.body) // 2
        body = vector.body[:i] + bytes([vector.body[i] ^ 1]) + vector.body[i + 1 :]
        return replace(vector, body=body)
    timestamp, v1 = vector.header.split(",", 1)
    if part == "timestamp":  # one second later: inside the tolerance, so only the MAC fails
        return replace(vector, header=f"{timestamp[:-1]}{(int(timestamp[-1]) + 1) % 10},{v1}")
    return replace(vector, header=f"{timestamp},v1={_one_byte_changed(v1[3:])}")


@pytest.mark.parametrize("part", ["body", "timestamp", "signature"])
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.secret)
def test_vector_with_one_byte_changed_is_refused(vector: Vector, part: str) -> None:
    """The event id lives in the body: changing it is the body case."""
    with pytest.raises(InvalidSignature):
        _verify(_tamper(vector, part).request(), [vector.secret], now=int(vector.timestamp))


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.secret)
def test_whsec_secret_is_used_literally_never_decoded(vector: Vector) -> None:
    encoded = vector.secret.removeprefix("whsec_")
    decoded_key = base64.b64decode(encoded + "==")  # as the standardwebhooks library would
    wrong = hmac.new(decoded_key, f"{vector.timestamp}.".encode() + vector.body, hashlib.sha256)
    request = InboundRequest(
        vector.body, {"stripe-signature": f"t={vector.timestamp},v1={wrong.hexdigest()}"}
    )
    with pytest.raises(InvalidSignature):
        _verify(request, [vector.secret], now=int(vector.timestamp))


# -- the contract through the endpoint ------------------------------------------------------


class TestStripeScheme(TimestampedSchemeContract):
    source = "stripe"
    scheme_name = "stripe"
    routed_event = "invoice.paid"
    unrouted_event = "customer.created"

    def build(
        self, *, webhook_id: str, event_type: str, secret: str, timestamp: int | None = None
    ) -> SignedRequest:
        event = {"id": webhook_id, "object": "event", "type": event_type, "data": {"object": {}}}
        body = json.dumps(event, indent=2).encode()
        return SignedRequest(body, StripeScheme().sign(body, secret, timestamp=timestamp))

    def with_timestamp(self, request: SignedRequest, value: str) -> SignedRequest:
        """Stripe's timestamp is the ``t=`` entry inside Stripe-Signature."""
        header = request.headers["Stripe-Signature"]
        request.headers["Stripe-Signature"] = f"t={value}," + header.split(",", 1)[1]
        return request


def test_registered_under_its_module_name() -> None:
    assert isinstance(get_scheme("stripe"), StripeScheme)


# -- several signatures, rolled secrets, downgrade -------------------------------------------

NOW = 1_700_000_000
BODY = b'{"id": "evt_1", "object": "event", "type": "invoice.paid"}'


def _v1(secret: str, timestamp: int = NOW, body: bytes = BODY) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def _request(header: str) -> InboundRequest:
    return InboundRequest(BODY, {"stripe-signature": header})


def test_rolled_secret_sends_one_v1_per_secret_and_either_secret_verifies() -> None:
    header = f"t={NOW},v1={_v1('whsec_new')},v1={_v1('whsec_old')},v0={_v1('whsec_old')}"
    for secrets in (["whsec_new"], ["whsec_old"], ["whsec_other", "whsec_old"]):
        _verify(_request(header), secrets, now=NOW)
    with pytest.raises(InvalidSignature):
        _verify(_request(header), ["whsec_other"], now=NOW)


def test_decoys_and_malformed_entries_do_not_hide_a_valid_v1() -> None:
    header = (
        f"t={NOW},v1={'0' * 64},v1=zz,v1=,v1={_v1('k')[:-2]},garbage,=,"
        f"v1={_v1('k').upper()},v2={'1' * 64}"
    )
    _verify(_request(header), ["k"], now=NOW)


def test_v0_alone_is_refused_downgrade_protection() -> None:
    with pytest.raises(InvalidSignature):
        _verify(_request(f"t={NOW},v0={_v1('k')}"), ["k"], now=NOW)


def test_whitespace_around_entries_is_tolerated() -> None:
    _verify(_request(f"t={NOW}, v1={_v1('k')}"), ["k"], now=NOW)


@pytest.mark.parametrize("offset", [-TOLERANCE, 0, TOLERANCE])
def test_timestamp_inside_the_tolerance(offset: int) -> None:
    _verify(_request(f"t={NOW + offset},v1={_v1('k', NOW + offset)}"), ["k"], now=NOW)


@pytest.mark.parametrize(
    "timestamp",
    [
        str(NOW - TOLERANCE - 1),
        str(NOW + TOLERANCE + 1),  # stripe-python accepts the future; we do not
        str(NOW + 100_000),
        f"{NOW}.5",
        f"-{NOW}",
        "",
        "\u0661" * 10,
        "9" * 5000,
    ],
)
def test_bad_timestamps_are_invalid_signatures(timestamp: str) -> None:
    signature = hmac.new(b"k", f"{timestamp}.".encode() + BODY, hashlib.sha256).hexdigest()
    with pytest.raises(InvalidSignature):
        _verify(_request(f"t={timestamp},v1={signature}"), ["k"], now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        "v1=" + "0" * 64,  # no t
        f"t={NOW},t={NOW},v1=" + "0" * 64,  # two t
        f"t={NOW}",  # no v1
        f"t={NOW},v1=",
        f"t={NOW},v1=é" + "0" * 63,
        "t=,v1=",
        "=,=,=",
        "A" * 10_000,
        "t=1,v0=abc",
        f"t={NOW},v1={'g' * 64}",
    ],
)
def test_malformed_headers_are_invalid_signatures(header: str) -> None:
    with pytest.raises(InvalidSignature):
        _verify(_request(header), ["k"], now=NOW)


def test_missing_header() -> None:
    with pytest.raises(MissingSignature):
        _verify(InboundRequest(BODY, {}), ["k"], now=NOW)


def test_sign_defaults_to_the_current_time() -> None:
    header = SCHEME.sign(BODY, "k")["Stripe-Signature"]
    _verify(_request(header), ["k"], now=time.time())


# -- parsing --------------------------------------------------------------------------------


def test_parse_takes_id_and_type_from_the_event() -> None:
    delivery = SCHEME.parse(_request(""))
    assert (delivery.webhook_id, delivery.event_type) == ("evt_1", "invoice.paid")
    assert delivery.payload == json.loads(BODY)


def test_event_without_a_type_has_an_empty_event_type() -> None:
    assert SCHEME.parse(InboundRequest(b'{"id": "evt_1"}', {})).event_type == ""


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"type": "invoice.paid"}', InvalidPayload),
        (b'{"id": 5, "type": "invoice.paid"}', InvalidPayload),
        (b'{"id": "", "type": "invoice.paid"}', InvalidPayload),
        (b'{"id": "evt_1", "type": null}', InvalidPayload),
        (b"[]", InvalidPayload),
        (b"{", InvalidJSON),
    ],
)
def test_parse_refuses(body: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        SCHEME.parse(InboundRequest(body, {}))
