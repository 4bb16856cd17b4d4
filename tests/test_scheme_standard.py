"""The Standard Webhooks scheme: shared vectors, the scheme contract, rotation, malformed input
and interoperability with the reference ``standardwebhooks`` library in both directions; and
its ed25519 (``v1a``) signatures: their vectors (also through the endpoint), keys and mixed
headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import string
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import load_vectors
from tests.scheme_cases import SignedRequest, TimestampedSchemeContract
from webhooks_app.exceptions import (
    InvalidJSON,
    InvalidPayload,
    InvalidSignature,
    MissingSignature,
    NotConfigured,
    WebhookError,
)
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest, get_scheme
from webhooks_app.schemes.standard import (
    StandardWebhooksScheme,
    private_key,
    public_key,
    signing_key,
)

SCHEME = StandardWebhooksScheme()
TOLERANCE = 300


@dataclass(frozen=True)
class Vector:
    secrets: tuple[str, ...]
    msg_id: str
    timestamp: str
    body: bytes
    signature: str
    name: str
    #: ``accepted``, or the error code of the refusal.
    expected: str = "accepted"
    #: The key (of ``V1A_KEYS``) that made ``signature``, for the ``sign`` round trip.
    signed_by: str = ""

    def request(self) -> InboundRequest:
        headers = {
            "webhook-id": self.msg_id,
            "webhook-timestamp": self.timestamp,
            "webhook-signature": self.signature,
        }
        return InboundRequest(body=self.body, headers=headers)

    def verify(self) -> None:
        """Through the public ``verify``, with the clock frozen at the vector's timestamp."""
        SCHEME.verify(self.request(), self.secrets, now=int(self.timestamp), tolerance=TOLERANCE)


def _vectors() -> list[Vector]:
    """Signed vectors; a bytes key (``secret_bytes_utf8``) is configured as a plain string."""
    return [
        Vector(
            secrets=(entry.get("secret", entry.get("secret_bytes_utf8", "")),),
            msg_id=entry["msg_id"],
            timestamp=str(entry["timestamp"]),
            body=entry["payload"].encode(),
            signature=entry["expected_signature"],
            name=entry["msg_id"],
        )
        for entry in load_vectors("standard_webhooks")
        if "expected_signature" in entry
    ]


VECTORS = _vectors()
DECOYS = [
    decoy
    for entry in load_vectors("standard_webhooks")
    for decoy in entry.get("decoy_signatures", [])
]
V1A_DATA = load_vectors("standard_webhooks_v1a")
V1A_KEYS = {key["name"]: key for entry in V1A_DATA for key in entry.get("keys", [])}
V1A_VECTORS = [
    Vector(
        secrets=tuple(entry["secrets"]),
        msg_id=entry["msg_id"],
        timestamp=str(entry["timestamp"]),
        body=entry["payload"].encode(),
        signature=entry["signature"],
        name=entry["name"],
        expected=entry["expected"],
        signed_by=entry.get("signed_by", ""),
    )
    for entry in V1A_DATA
    if "expected" in entry
]
#: The accepted ones holding a single ``v1a`` entry: what one changed byte must break.
V1A_SIGNED = [v for v in V1A_VECTORS if v.expected == "accepted" and " " not in v.signature]
KEY_A, KEY_B, KEY_C = (V1A_KEYS[name] for name in "ABC")


def _one_byte_changed(text: str) -> str:
    """``text`` with its middle character changed (a digit stays valid hex/base64/id/number)."""
    i = len(text) // 2
    return text[:i] + ("1" if text[i] != "1" else "2") + text[i + 1 :]


# -- the shared vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector_verifies(vector: Vector) -> None:
    vector.verify()
    delivery = SCHEME.parse(vector.request())
    assert delivery.webhook_id == vector.msg_id


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.name)
def test_vector_signature_is_reproduced_by_sign(vector: Vector) -> None:
    headers = SCHEME.sign(
        vector.body, vector.secrets[0], webhook_id=vector.msg_id, timestamp=int(vector.timestamp)
    )
    assert headers["webhook-signature"] == vector.signature


def _tamper(vector: Vector, part: str) -> Vector:
    if part == "body":
        i = len(vector.body) // 2
        return replace(
            vector, body=vector.body[:i] + bytes([vector.body[i] ^ 1]) + vector.body[i + 1 :]
        )
    if part == "id":
        return replace(vector, msg_id=_one_byte_changed(vector.msg_id))
    if part == "timestamp":  # one second later: still inside the tolerance, so only the MAC fails
        return replace(
            vector, timestamp=vector.timestamp[:-1] + str((int(vector.timestamp[-1]) + 1) % 10)
        )
    version, digest = vector.signature.split(",")
    return replace(vector, signature=f"{version},{_one_byte_changed(digest)}")


@pytest.mark.parametrize("part", ["body", "id", "timestamp", "signature"])
@pytest.mark.parametrize("vector", VECTORS + V1A_SIGNED, ids=lambda v: v.name)
def test_vector_with_one_byte_changed_is_refused(vector: Vector, part: str) -> None:
    tampered = _tamper(vector, part)
    with pytest.raises(InvalidSignature):
        tampered.verify()


@pytest.mark.parametrize("vector", VECTORS + V1A_SIGNED, ids=lambda v: v.name)
def test_decoys_around_the_valid_signature(vector: Vector) -> None:
    assert DECOYS, "the vectors hold decoy signatures"
    replace(vector, signature=" ".join([*DECOYS, vector.signature, *DECOYS])).verify()
    with pytest.raises(InvalidSignature):
        replace(vector, signature=" ".join(DECOYS)).verify()


# -- the v1a (ed25519) vectors --------------------------------------------------------------


def test_the_v1a_vectors_hold_every_verdict() -> None:
    verdicts = {vector.expected for vector in V1A_VECTORS}
    assert verdicts == {"accepted", "invalid_signature", "not_configured"}
    assert V1A_SIGNED and any(vector.signed_by for vector in V1A_VECTORS)


@pytest.mark.parametrize("vector", V1A_VECTORS, ids=lambda v: v.name)
def test_v1a_vector(vector: Vector) -> None:
    if vector.expected == "accepted":
        vector.verify()
        return
    with pytest.raises(WebhookError) as refused:
        vector.verify()
    assert refused.value.error == vector.expected


@pytest.mark.parametrize("vector", [v for v in V1A_VECTORS if v.signed_by], ids=lambda v: v.name)
def test_v1a_vector_is_reproduced_by_sign_with_the_private_key(vector: Vector) -> None:
    """Ed25519 signatures are deterministic: the same key signs the same content alike."""
    headers = SCHEME.sign(
        vector.body,
        V1A_KEYS[vector.signed_by]["private_key"],
        webhook_id=vector.msg_id,
        timestamp=int(vector.timestamp),
    )
    assert headers["webhook-signature"] == vector.signature


# -- the contract through the endpoint ------------------------------------------------------


class TestStandardScheme(TimestampedSchemeContract):
    source = "standard"
    scheme_name = "standard"
    routed_event = "invoice.paid"
    unrouted_event = "invoice.voided"
    timestamp_header = "webhook-timestamp"

    def build(
        self, *, webhook_id: str, event_type: str, secret: str, timestamp: int | None = None
    ) -> SignedRequest:
        body = json.dumps({"type": event_type, "data": {"id": webhook_id}}).encode()
        headers = StandardWebhooksScheme().sign(
            body, secret, webhook_id=webhook_id, timestamp=timestamp
        )
        return SignedRequest(body, headers)

    def test_event_keeps_id_and_timestamp_headers_but_not_the_signature(self) -> None:
        request = self.good()
        assert self.send(request).status_code == 202
        headers = WebhookEvent.objects.get().headers
        assert headers["webhook-id"] == "delivery-1"
        assert "webhook-timestamp" in headers
        assert "webhook-signature" not in headers

    def test_id_with_a_full_stop_is_400_after_verification(self) -> None:
        request = self.good(webhook_id="a.b")
        self.assert_refused(self.send(request), 400, ("invalid_payload",))
        unsigned = self.good(webhook_id="a.b")
        self.assert_refused(
            self.send(unsigned, **{"webhook-signature": "v1,AAAA"}), 401, ("invalid_signature",)
        )


class TestStandardAsymmetricScheme(TestStandardScheme):
    """The same contract for a source holding only ``whpk_`` public keys, its sender signing
    ``v1a`` entries: ``SECRET_A`` and ``SECRET_B`` stand for keys A and B, any other secret for
    key C, which no source holds."""

    source = "ed25519"

    def source_settings(self) -> dict[str, Any]:
        return {**super().source_settings(), "SECRETS": [KEY_A["public_key"], KEY_B["public_key"]]}

    def build(
        self, *, webhook_id: str, event_type: str, secret: str, timestamp: int | None = None
    ) -> SignedRequest:
        key = {settings.SECRET_A: KEY_A, settings.SECRET_B: KEY_B}.get(secret, KEY_C)
        return super().build(
            webhook_id=webhook_id,
            event_type=event_type,
            secret=key["private_key"],
            timestamp=timestamp,
        )

    def test_the_sender_signs_v1a(self) -> None:
        assert self.good().headers["webhook-signature"].startswith("v1a,")


#: Wide enough for the vectors' fixed timestamps, so that only their signatures are tested.
VECTOR_TOLERANCE = 10**10


def post_vector(vector: Vector) -> Any:
    """``vector`` POSTed to ``/webhooks/ed25519/``, a source holding the vector's secrets."""
    source = {
        "SCHEME": "standard",
        "SECRETS": list(vector.secrets),
        "ROUTES": {"invoice.paid": "record"},
        "TIMESTAMP_TOLERANCE": VECTOR_TOLERANCE,
    }
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {"ed25519": source}}):
        return Client().post(
            "/webhooks/ed25519/",
            vector.body,
            content_type="application/json",
            HTTP_WEBHOOK_ID=vector.msg_id,
            HTTP_WEBHOOK_TIMESTAMP=vector.timestamp,
            HTTP_WEBHOOK_SIGNATURE=vector.signature,
        )


@pytest.mark.django_db
@pytest.mark.parametrize("vector", V1A_VECTORS, ids=lambda v: v.name)
def test_v1a_vectors_through_the_endpoint(vector: Vector) -> None:
    response = post_vector(vector)
    if vector.expected == "accepted":
        assert response.status_code == 202, response.content
        assert WebhookEvent.objects.get().webhook_id == vector.msg_id
    else:
        assert response.status_code in (401, 503), response.content
        assert response.json()["error"] == vector.expected
        assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("part", ["body", "id", "timestamp", "signature"])
@pytest.mark.parametrize("vector", V1A_SIGNED, ids=lambda v: v.name)
def test_v1a_vector_with_one_byte_changed_is_refused_by_the_endpoint(
    vector: Vector, part: str
) -> None:
    assert post_vector(vector).status_code == 202  # the vector itself passes here
    WebhookEvent.objects.all().delete()
    response = post_vector(_tamper(vector, part))
    assert (response.status_code, response.json()["error"]) == (401, "invalid_signature")
    assert not WebhookEvent.objects.exists()


def test_registered_under_its_module_name() -> None:
    assert isinstance(get_scheme("standard"), StandardWebhooksScheme)


# -- secrets --------------------------------------------------------------------------------

BASE64_SECRET = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(
    "secret",
    [BASE64_SECRET, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBr"],
)
def test_whsec_secrets_are_base64_decoded_padded_or_not(secret: str) -> None:
    """The reference library's unpadded-secret cases, with the prefix our rule requires."""
    body, now = b'{"type": "x"}', int(time.time())
    signature = Webhook("whsec_" + secret).sign(
        "msg_1", datetime.fromtimestamp(now, UTC), body.decode()
    )
    request = InboundRequest(
        body, {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": signature}
    )
    SCHEME.verify(request, ["whsec_" + secret], now=now, tolerance=TOLERANCE)


def test_unprefixed_secret_is_raw_utf8_like_a_bytes_secret_in_the_library() -> None:
    assert signing_key("raw-key-bytes") == b"raw-key-bytes"
    assert signing_key(BASE64_SECRET) == BASE64_SECRET.encode()
    assert signing_key("whsec_" + BASE64_SECRET) != BASE64_SECRET.encode()


@pytest.mark.parametrize("secret", ["whsec_", "whsec_a", "whsec_!!!!", "whsec_abc=====", "whsec_é"])
def test_malformed_whsec_secret_is_unusable(secret: str) -> None:
    assert signing_key(secret) is None
    with pytest.raises(ValueError):
        SCHEME.sign(b"{}", secret)


def test_only_unusable_secrets_is_not_configured_else_they_are_skipped() -> None:
    good = "whsec_" + BASE64_SECRET
    now = int(time.time())
    headers = SCHEME.sign(b"{}", good, webhook_id="msg_1", timestamp=now)
    request = InboundRequest(b"{}", headers)
    with pytest.raises(NotConfigured):
        SCHEME.verify(request, ["whsec_!!"], now=now, tolerance=TOLERANCE)
    SCHEME.verify(request, ["whsec_!!", good], now=now, tolerance=TOLERANCE)


def test_rotation_any_secret_and_any_entry() -> None:
    old, new = "whsec_" + BASE64_SECRET, "a-new-plain-secret"
    now = int(time.time())
    body = b'{"type": "rotated"}'
    old_headers = SCHEME.sign(body, old, webhook_id="msg_1", timestamp=now)
    new_headers = SCHEME.sign(body, new, webhook_id="msg_1", timestamp=now)
    both = f"{new_headers['webhook-signature']} {old_headers['webhook-signature']}"
    for signature, secrets in [
        (both, [old]),
        (both, [new]),
        (old_headers["webhook-signature"], [new, old]),
    ]:
        request = InboundRequest(body, {**old_headers, "webhook-signature": signature})
        SCHEME.verify(request, secrets, now=now, tolerance=TOLERANCE)
    with pytest.raises(InvalidSignature):
        SCHEME.verify(InboundRequest(body, old_headers), [new], now=now, tolerance=TOLERANCE)


# -- interoperability with the reference library --------------------------------------------


@pytest.mark.parametrize("secret", ["whsec_" + BASE64_SECRET, b"raw-key-bytes"])
def test_requests_signed_by_the_reference_library_are_accepted(secret: str | bytes) -> None:
    now = int(time.time())
    payload = '{"type": "contact.created", "data": {"name": "café"}}'
    signature = Webhook(secret).sign(
        "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", datetime.fromtimestamp(now, UTC), payload
    )
    request = InboundRequest(
        payload.encode(),
        {
            "webhook-id": "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        },
    )
    configured = secret.decode() if isinstance(secret, bytes) else secret
    SCHEME.verify(request, [configured], now=now, tolerance=TOLERANCE)
    assert SCHEME.parse(request).event_type == "contact.created"


@pytest.mark.parametrize("secret", ["whsec_" + BASE64_SECRET, b"raw-key-bytes"])
def test_our_signatures_pass_the_reference_library(secret: str | bytes) -> None:
    body = '{"type": "contact.created", "n": "ünïcode"}'.encode()
    configured = secret.decode() if isinstance(secret, bytes) else secret
    headers = SCHEME.sign(body, configured, webhook_id="msg_abc")
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_sign_defaults_to_a_fresh_id_and_the_current_time() -> None:
    before = int(time.time())
    headers = SCHEME.sign(b"{}", "k")
    assert headers["webhook-id"].startswith("msg_")
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    SCHEME.verify(InboundRequest(b"{}", headers), ["k"], now=time.time(), tolerance=TOLERANCE)


def test_svix_branded_headers_are_read_when_webhook_headers_are_absent() -> None:
    now = int(time.time())
    headers = SCHEME.sign(b'{"type": "user.created"}', "k", webhook_id="msg_svix", timestamp=now)
    svix = {name.replace("webhook-", "svix-"): value for name, value in headers.items()}
    request = InboundRequest(b'{"type": "user.created"}', svix)
    SCHEME.verify(request, ["k"], now=now, tolerance=TOLERANCE)
    assert SCHEME.parse(request).webhook_id == "msg_svix"


# -- timestamps and malformed headers -------------------------------------------------------

NOW = 1_700_000_000


def _signed(timestamp: str, webhook_id: str = "msg_1", body: bytes = b"{}") -> InboundRequest:
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(b"k", signed, hashlib.sha256).digest()
    return InboundRequest(
        body,
        {
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        },
    )


@pytest.mark.parametrize("offset", [-TOLERANCE, 0, TOLERANCE])
def test_timestamp_inside_the_tolerance(offset: int) -> None:
    SCHEME.verify(_signed(str(NOW + offset)), ["k"], now=NOW, tolerance=TOLERANCE)


@pytest.mark.parametrize(
    "timestamp",
    [
        str(NOW - TOLERANCE - 1),
        str(NOW + TOLERANCE + 1),  # the future too: stricter than "not too old"
        f"{NOW}.9",  # the reference library floors floats; we sign the text verbatim
        f"{NOW}.0",
        "1e9",
        "-1",
        f" {NOW}",
        "",
        "abc",
        "\u0661\u0667" + "\u0660" * 8,  # Arabic-Indic digits: int() would accept them
        "9" * 5000,
    ],
)
def test_bad_timestamps_are_invalid_signatures(timestamp: str) -> None:
    with pytest.raises(InvalidSignature):
        SCHEME.verify(_signed(timestamp), ["k"], now=NOW, tolerance=TOLERANCE)


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "v1,",
        "v1",
        "garbage",
        "v1,a,b",
        "v1,dawfeoifkpqwoekfpqoekf",
        "v1,!!!",
        "v1a,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=",
        "v1,é",
        "v1," + "A" * 10_000,
        "=,=,=",
        " ",
    ],
)
def test_malformed_signature_entries_are_invalid_signatures(signature: str) -> None:
    request = replace(
        _signed(str(NOW)), headers={**_signed(str(NOW)).headers, "webhook-signature": signature}
    )
    with pytest.raises(InvalidSignature):
        SCHEME.verify(request, ["k"], now=NOW, tolerance=TOLERANCE)


def test_malformed_entries_do_not_hide_a_valid_one() -> None:
    valid = _signed(str(NOW))
    noisy = "garbage v1,a,b v1,!!! v1,é " + valid.headers["webhook-signature"]
    SCHEME.verify(
        replace(valid, headers={**valid.headers, "webhook-signature": noisy}),
        ["k"],
        now=NOW,
        tolerance=TOLERANCE,
    )


def test_non_canonical_base64_of_the_right_digest_is_refused() -> None:
    valid = _signed(str(NOW))
    unpadded = valid.headers["webhook-signature"].rstrip("=")
    with pytest.raises(InvalidSignature):
        SCHEME.verify(
            replace(valid, headers={**valid.headers, "webhook-signature": unpadded}),
            ["k"],
            now=NOW,
            tolerance=TOLERANCE,
        )


def test_missing_headers() -> None:
    valid = _signed(str(NOW))
    without = {name: value for name, value in valid.headers.items() if name != "webhook-signature"}
    with pytest.raises(MissingSignature):
        SCHEME.verify(replace(valid, headers=without), ["k"], now=NOW, tolerance=TOLERANCE)
    for name in ("webhook-id", "webhook-timestamp"):
        headers = {key: value for key, value in valid.headers.items() if key != name}
        with pytest.raises(InvalidSignature):
            SCHEME.verify(replace(valid, headers=headers), ["k"], now=NOW, tolerance=TOLERANCE)


def test_non_ascii_and_unencodable_ids() -> None:
    SCHEME.verify(_signed(str(NOW), webhook_id="msg_é"), ["k"], now=NOW, tolerance=TOLERANCE)
    broken = replace(
        _signed(str(NOW)), headers={**_signed(str(NOW)).headers, "webhook-id": "\udc80"}
    )
    with pytest.raises(InvalidSignature):
        SCHEME.verify(broken, ["k"], now=NOW, tolerance=TOLERANCE)


# -- asymmetric signatures (v1a, ed25519) -----------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _raw(key: str) -> bytes:
    return base64.b64decode(key.split("_", 1)[1])


PUBLIC_A = _raw(KEY_A["public_key"])
SEED_A = _raw(KEY_A["private_key"])
#: 32 bytes that decode to no curve point: a key object, which never verifies anything.
NOT_A_POINT = "whpk_" + _b64(b"\xff" * 32)


@pytest.mark.parametrize("secret", [KEY_A["public_key"], KEY_A["public_key"].rstrip("=")])
def test_whpk_secret_is_a_public_key_padded_or_not(secret: str) -> None:
    key = public_key(secret)
    assert key is not None and key.public_bytes_raw() == PUBLIC_A


@pytest.mark.parametrize(
    "secret",
    [
        "whpk_",
        "whpk_!!!!",
        "whpk_é",
        "whpk_" + _b64(PUBLIC_A[:31]),
        "whpk_" + _b64(PUBLIC_A + b"\x00"),
        "whpk_" + _b64(bytes(32)),  # a point of order 4: accepts forgeries (the vectors)
        "whpk_" + _b64(bytes(31) + b"\x80"),  # the same point, the sign bit set
        "whpk_" + _b64(b"\x01" + bytes(31)),  # the neutral element
        KEY_A["public_key"][len("whpk_") :],  # no prefix: an HMAC secret
        KEY_A["private_key"],
        "whsec_" + BASE64_SECRET,
    ],
)
def test_unusable_public_keys(secret: str) -> None:
    assert public_key(secret) is None


def test_ed25519_keys_are_never_hmac_keys() -> None:
    """Public, a whpk_ key's text as an HMAC key would let anyone sign v1 entries."""
    assert signing_key(KEY_A["public_key"]) is None
    assert signing_key(KEY_A["private_key"]) is None


@pytest.mark.parametrize(
    "secret",
    [KEY_A["private_key"], KEY_A["private_key"].rstrip("="), "whsk_" + _b64(SEED_A + PUBLIC_A)],
    ids=["seed", "seed-unpadded", "libsodium"],
)
def test_whsk_secret_is_a_private_key_seed_or_seed_and_public_key(secret: str) -> None:
    key = private_key(secret)
    assert key is not None and key.public_key().public_bytes_raw() == PUBLIC_A


@pytest.mark.parametrize(
    "secret",
    [
        "whsk_" + _b64(SEED_A + _raw(KEY_B["public_key"])),  # halves of two key pairs
        "whsk_" + _b64(SEED_A[:31]),
        "whsk_" + _b64(SEED_A + PUBLIC_A + b"\x00"),
        "whsk_!!",
        KEY_A["public_key"],
    ],
)
def test_unusable_private_keys(secret: str) -> None:
    assert private_key(secret) is None
    with pytest.raises(ValueError):
        SCHEME.sign(b"{}", secret)


def test_a_public_key_cannot_sign() -> None:
    with pytest.raises(ValueError, match="whsk_"):
        SCHEME.sign(b"{}", KEY_A["public_key"])


def test_a_private_key_signs_v1a_which_only_its_public_key_verifies() -> None:
    body = b'{"type": "contact.created"}'
    headers = SCHEME.sign(body, KEY_A["private_key"], webhook_id="msg_1", timestamp=NOW)
    assert headers["webhook-signature"].startswith("v1a,")
    request = InboundRequest(body, headers)
    SCHEME.verify(request, [KEY_A["public_key"]], now=NOW, tolerance=TOLERANCE)
    SCHEME.verify(request, [KEY_B["public_key"], KEY_A["public_key"]], now=NOW, tolerance=TOLERANCE)
    for secrets in ([KEY_B["public_key"]], ["whsec_" + BASE64_SECRET], [NOT_A_POINT]):
        with pytest.raises(InvalidSignature):
            SCHEME.verify(request, secrets, now=NOW, tolerance=TOLERANCE)


def test_a_source_holding_both_kinds_takes_either_kind_of_entry() -> None:
    hmac_secret, body = "whsec_" + BASE64_SECRET, b"{}"
    secrets = [hmac_secret, KEY_A["public_key"]]
    v1 = SCHEME.sign(body, hmac_secret, webhook_id="msg_1", timestamp=NOW)["webhook-signature"]
    v1a = SCHEME.sign(body, KEY_A["private_key"], webhook_id="msg_1", timestamp=NOW)[
        "webhook-signature"
    ]
    for signature in (v1, v1a, f"{v1} {v1a}", f"{v1a} {v1}"):
        SCHEME.verify(_with_signature(signature), secrets, now=NOW, tolerance=TOLERANCE)
    # Each kind of entry is checked against its kind of secret only.
    with pytest.raises(InvalidSignature):
        SCHEME.verify(_with_signature(v1), [KEY_A["public_key"]], now=NOW, tolerance=TOLERANCE)
    with pytest.raises(InvalidSignature):
        SCHEME.verify(_with_signature(v1a), [hmac_secret], now=NOW, tolerance=TOLERANCE)


def test_public_keys_count_as_usable_secrets_unusable_ones_do_not() -> None:
    v1 = _signed(str(NOW))  # an HMAC entry: nothing a public key could verify
    with pytest.raises(InvalidSignature):
        SCHEME.verify(v1, [KEY_A["public_key"]], now=NOW, tolerance=TOLERANCE)
    for unusable in (
        "whpk_" + _b64(bytes(32)),
        "whpk_" + _b64(PUBLIC_A[:31]),
        KEY_A["private_key"],
    ):
        with pytest.raises(NotConfigured):
            SCHEME.verify(v1, [unusable], now=NOW, tolerance=TOLERANCE)
    SCHEME.verify(v1, [KEY_A["private_key"], "k"], now=NOW, tolerance=TOLERANCE)


def _with_signature(signature: str, body: bytes = b"{}") -> InboundRequest:
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(NOW), "webhook-signature": signature}
    return InboundRequest(body, headers)


VALID_V1A = SCHEME.sign(b"{}", KEY_A["private_key"], webhook_id="msg_1", timestamp=NOW)[
    "webhook-signature"
]
VALID_V1A_BYTES = base64.b64decode(VALID_V1A[len("v1a,") :])


def _unused_bits_set(entry: str) -> str:
    """The same 64 bytes, spelt with one of the 4 unused bits of the last character set (a
    lenient decoder reads both alike)."""
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
    last = alphabet.index(entry[-3])
    assert last % 16 == 0  # canonical: the unused bits are clear
    spelt = entry[:-3] + alphabet[last + 1] + "=="
    assert base64.b64decode(spelt[len("v1a,") :]) == base64.b64decode(entry[len("v1a,") :])
    return spelt


@pytest.mark.parametrize(
    "signature",
    [
        "v1a,",
        "v1a",
        "v1a,!!!",
        "v1a,é",
        "v1a,a,b",
        "v1a,=,=",
        "v1a,AAAA",
        "v1a," + "A" * 10_000,
        "v1a," + _b64(bytes(64)),
        "v1a," + _b64(VALID_V1A_BYTES[:63]),
        "v1a," + _b64(VALID_V1A_BYTES + b"\x00"),
        VALID_V1A.rstrip("="),  # the right bytes, unpadded: not the canonical encoding
        _unused_bits_set(VALID_V1A),  # the right bytes: not canonical either
        VALID_V1A.upper(),
        "V1A," + VALID_V1A[4:],
        "v1," + VALID_V1A[4:],
        "v1a;" + VALID_V1A[4:],
    ],
)
def test_malformed_v1a_entries_are_invalid_signatures(signature: str) -> None:
    secrets = [NOT_A_POINT, KEY_A["public_key"]]
    with pytest.raises(InvalidSignature):
        SCHEME.verify(_with_signature(signature), secrets, now=NOW, tolerance=TOLERANCE)


def test_malformed_v1a_entries_do_not_hide_a_valid_one() -> None:
    noisy = f"v1a,!!! v1a,é v1a,AAAA v1a,{_b64(bytes(64))} {VALID_V1A} v1,!!!"
    SCHEME.verify(
        _with_signature(noisy), [NOT_A_POINT, KEY_A["public_key"]], now=NOW, tolerance=TOLERANCE
    )


# -- parsing --------------------------------------------------------------------------------


def test_parse_takes_the_type_and_the_id() -> None:
    delivery = SCHEME.parse(_signed(str(NOW), body=b'{"type": "contact.created", "data": {}}'))
    assert (delivery.webhook_id, delivery.event_type) == ("msg_1", "contact.created")
    assert delivery.payload == {"type": "contact.created", "data": {}}
    assert delivery.workflow_name is None


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{}"])
def test_payload_without_a_type_has_an_empty_event_type(body: bytes) -> None:
    assert SCHEME.parse(_signed(str(NOW), body=body)).event_type == ""


@pytest.mark.parametrize(
    ("webhook_id", "body", "error"),
    [
        ("msg.1", b"{}", InvalidPayload),
        ("msg\n1", b"{}", InvalidPayload),
        ("x" * 256, b"{}", InvalidPayload),
        ("msg_1", b'{"type": 3}', InvalidPayload),
        ("msg_1", b"{not json", InvalidJSON),
        ("msg.1", b"{not json", InvalidJSON),  # the body's errors come first, as in the contract
    ],
)
def test_parse_refuses(webhook_id: str, body: bytes, error: type[Exception]) -> None:
    request = InboundRequest(body, {"webhook-id": webhook_id})
    with pytest.raises(error):
        SCHEME.parse(request)


def test_parse_requires_the_id_header() -> None:
    with pytest.raises(InvalidPayload):
        SCHEME.parse(InboundRequest(b"{}", {}))
