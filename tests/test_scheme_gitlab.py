"""The GitLab scheme: the plain secret token, the optional Standard Webhooks signing token,
delivery ids and stored headers; through the shared contract (once per mode) and as a pure
function."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from django.conf import settings
from standardwebhooks.webhooks import Webhook

from tests.conftest import load_vectors
from tests.scheme_cases import (
    RoutedSchemeContract,
    SignedRequest,
    TimestampedSchemeContract,
    assert_one_event,
)
from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.gitlab import GitLabScheme

SCHEME = GitLabScheme()
BODY = b'{"object_kind": "push", "ref": "refs/heads/main"}'


def signing_token(secret: str) -> str:
    """A plain secret as GitLab's signing-token format: ``whsec_<base64 of its bytes>``."""
    return "whsec_" + base64.b64encode(secret.encode()).decode()


def verify(req: InboundRequest, secrets: list[str], now: float = 0, tolerance: int = 300) -> None:
    SCHEME.verify(req, secrets, now=now, tolerance=tolerance)


def change_one_byte(text: str, *, first: bool = False) -> str:
    """``text`` with its first or last alphanumeric character replaced by another."""
    indexes = [i for i, ch in enumerate(text) if ch.isalnum()]
    i = indexes[0] if first else indexes[-1]
    return text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :]


# -- the secret token ------------------------------------------------------------------------------
#: GitLab publishes no token vectors (its entry in the vectors file says there is no MAC);
#: a ``secret_token`` entry added there is picked up too.
TOKENS = [e["secret_token"] for e in load_vectors("gitlab") if "secret_token" in e] + [
    "t",
    "a GitLab token may contain spaces & anything: ✓",
]


def token_request(token: str | None, body: bytes = BODY) -> InboundRequest:
    return InboundRequest(body=body, headers={} if token is None else {"x-gitlab-token": token})


@pytest.mark.parametrize("token", TOKENS)
def test_token_vectors_verify_and_a_changed_byte_is_refused(token):
    verify(token_request(token), [token])
    verify(
        InboundRequest(BODY, {k.lower(): v for k, v in SCHEME.sign(BODY, token).items()}), [token]
    )
    with pytest.raises(InvalidSignature):
        verify(token_request(change_one_byte(token)), [token])
    with pytest.raises(InvalidSignature):
        verify(token_request(token), [change_one_byte(token)])
    # Documented limitation: a token is no MAC, a changed body cannot be detected.
    verify(token_request(token, BODY.replace(b"main", b"evil")), [token])


def test_token_rotation_empty_and_missing():
    verify(token_request("b"), ["a", "b"])
    verify(token_request("a"), ["a", "b"])
    for wrong in ("", " ", "c", "b "):
        with pytest.raises(InvalidSignature):
            verify(token_request(wrong), ["a", "b"])
    with pytest.raises(MissingSignature):
        verify(token_request(None), ["a"])


# -- the signing token (Standard Webhooks) ---------------------------------------------------------
def standard_cases() -> list[Any]:
    """(secret, id, timestamp, body, signature header) from the Standard Webhooks vectors, which
    GitLab's signing reuses (providers notes §1.10); a raw-bytes key is given in GitLab's
    ``whsec_`` form. The decoy entry is the official vector's header with the decoys added."""
    entries = load_vectors("standard_webhooks")
    cases = []
    for entry in entries:
        if "expected_signature" in entry:
            secret = entry.get("secret") or signing_token(entry["secret_bytes_utf8"])
            fields = (entry["msg_id"], entry["timestamp"], entry["payload"])
            cases.append(pytest.param(secret, *fields, entry["expected_signature"], id=fields[0]))
    official = entries[0]
    for entry in entries:
        if "decoy_signatures" in entry:
            header = " ".join([*entry["decoy_signatures"], official["expected_signature"]])
            fields = (official["msg_id"], official["timestamp"], official["payload"])
            cases.append(pytest.param(official["secret"], *fields, header, id="with-decoys"))
    return cases


STANDARD_CASES = standard_cases()


def signed_request(webhook_id: str, timestamp: int | str, body: str, signature: str):
    headers = {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "x-gitlab-event": "Push Hook",
    }
    return InboundRequest(body=body.encode(), headers=headers)


@pytest.mark.parametrize(("secret", "msg_id", "timestamp", "body", "signature"), STANDARD_CASES)
def test_signing_token_vectors_verify(secret, msg_id, timestamp, body, signature):
    verify(signed_request(msg_id, timestamp, body, signature), [secret], now=timestamp)
    verify(signed_request(msg_id, timestamp, body, signature), ["tok", secret], now=timestamp)


@pytest.mark.parametrize("part", ["body", "id", "timestamp", "signature", "secret"])
@pytest.mark.parametrize(("secret", "msg_id", "timestamp", "body", "signature"), STANDARD_CASES)
def test_signing_token_vectors_with_one_byte_changed_are_refused(
    part, secret, msg_id, timestamp, body, signature
):
    now = timestamp
    if part == "body":
        body = change_one_byte(body) if any(c.isalnum() for c in body) else body + " "
    elif part == "id":
        msg_id = change_one_byte(msg_id)
    elif part == "timestamp":
        timestamp = change_one_byte(str(timestamp))  # 1614265330 → 1614265331, inside tolerance
    elif part == "signature":
        # Every entry's digest (decoys too), keeping its version prefix.
        signature = " ".join(
            version + "," + change_one_byte(digest, first=True)
            for version, _, digest in (entry.partition(",") for entry in signature.split())
        )
    else:  # still a well-formed whsec_ key, just another one
        secret = "whsec_" + change_one_byte(secret.removeprefix("whsec_"), first=True)
    with pytest.raises(InvalidSignature):
        verify(signed_request(msg_id, timestamp, body, signature), [secret], now=now)


def test_a_configured_signing_token_makes_the_signature_required():
    """Accepting the plain token instead would leave the body forgeable: it is not consulted."""
    key = signing_token(settings.SECRET_A)
    with pytest.raises(MissingSignature):
        verify(token_request("plain"), ["plain", key])
    signed = {k.lower(): v for k, v in SCHEME.sign(BODY, key, timestamp=1000).items()}
    verify(InboundRequest(BODY, {**signed, "x-gitlab-token": "wrong"}), ["plain", key], now=1000)
    with pytest.raises(InvalidSignature):  # outside the tolerance
        verify(InboundRequest(BODY, signed), [key], now=1000 + 301, tolerance=300)


# -- delivery id, event type, stored headers -------------------------------------------------------
def parse(**headers: str) -> tuple[str | None, str]:
    delivery = SCHEME.parse(InboundRequest(BODY, headers))
    return delivery.webhook_id, delivery.event_type


def test_token_mode_delivery_id_prefers_the_idempotency_key():
    both = {"idempotency-key": "k-1", "x-gitlab-event-uuid": "e-1"}
    assert parse(**both, **{"x-gitlab-event": "Push Hook"}) == ("k-1", "Push Hook")
    assert parse(**{"x-gitlab-event-uuid": "e-1", "x-gitlab-event": "Tag Push Hook"}) == (
        "e-1",
        "Tag Push Hook",
    )
    assert parse(**{"idempotency-key": "k-1"}) == ("k-1", "")
    # Without a signature beside it, a webhook-id header is as unsigned as the others: ignored.
    assert parse(**{"webhook-id": "w-1", **both})[0] == "k-1"
    with pytest.raises(InvalidPayload):
        parse(**{"x-gitlab-event": "Push Hook"})
    with pytest.raises(InvalidPayload):
        parse(**{"idempotency-key": "bad\nid"})


UNSIGNED_IDS = {"idempotency-key": "k-1", "x-gitlab-event-uuid": "e-1"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"webhook-signature": "v1,x", "webhook-id": "w-1"}, "w-1"),
        ({"svix-signature": "v1,x", "svix-id": "s-1"}, "s-1"),
        # The set that verification checks is the one with the signature, whatever else is sent.
        ({"svix-signature": "v1,x", "svix-id": "s-1", "webhook-id": "w-1"}, "s-1"),
        ({"webhook-signature": "v1,x", "webhook-id": "w-1", "svix-id": "s-1"}, "w-1"),
    ],
)
def test_signed_delivery_id_is_the_one_the_signature_covers(headers, expected):
    """Issue #10 finding 3: the id was read from the unsigned Idempotency-Key when the signature
    came in svix-* headers. It is now the id of the header set that verification checks."""
    assert parse(**headers, **UNSIGNED_IDS)[0] == expected


@pytest.mark.parametrize("headers", [{"webhook-signature": "v1,x"}, {"svix-signature": "v1,x"}])
def test_signed_delivery_without_its_signed_id_is_invalid_payload(headers):
    with pytest.raises(InvalidPayload):  # never a fall-back to an unsigned id
        parse(**headers, **UNSIGNED_IDS)


def test_content_key_is_the_body_digest_in_token_mode_and_none_when_signed():
    """A signed id is the key (two messages may share a body); a token-mode id covers nothing."""
    token_mode = InboundRequest(BODY, UNSIGNED_IDS)
    assert SCHEME.content_key(token_mode) == hashlib.sha256(BODY).hexdigest()
    for signature in ("webhook-signature", "svix-signature"):
        assert SCHEME.content_key(InboundRequest(BODY, {signature: "v1,x"})) is None


class GitLabContract(RoutedSchemeContract):
    """What both modes share: GitLab's headers on top of the scheme's own."""

    source = "gitlab"
    scheme_name = "gitlab"
    routed_event = "Push Hook"
    unrouted_event = "Issue Hook"

    def gitlab_headers(self, event_type: str) -> dict[str, str]:
        return {
            "X-Gitlab-Event": event_type,
            "X-Gitlab-Instance": "https://gitlab.example.com",
            "X-Gitlab-Webhook-UUID": "02affd2d-2cba-4033-917d-ec22d5dc4b38",
            "User-Agent": "GitLab/17.4.0",
        }

    def test_gitlab_headers_are_stored_but_no_credential(self) -> None:
        assert self.send(self.good()).status_code == 202
        stored = WebhookEvent.objects.get().headers
        assert stored["x-gitlab-event"] == "Push Hook"
        assert stored["idempotency-key"] == "delivery-1"
        assert stored["x-gitlab-instance"] == "https://gitlab.example.com"
        assert "x-gitlab-webhook-uuid" in stored
        assert not {"x-gitlab-token", "webhook-signature"} & set(stored)


class TestGitLabScheme(GitLabContract):
    """The secret token: everything but body integrity, which a token cannot give."""

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps({"object_kind": "push", "ref": "refs/heads/main"}).encode()
        headers = {**SCHEME.sign(body, secret, webhook_id=webhook_id)}
        return SignedRequest(body, {**headers, **self.gitlab_headers(event_type)})

    def test_tampered_body_is_refused(self) -> None:
        """A token is not a MAC: an altered body cannot be detected (documented; use HTTPS)."""
        request = self.good()
        request.body = request.body.replace(b"main", b"evil")
        assert self.send(request).status_code == 202

    def test_empty_token_is_401_never_500(self) -> None:
        response = self.send(self.good(), **{"x-gitlab-token": ""})
        self.assert_refused(response, 401, ("invalid_signature",))

    @pytest.mark.django_db(transaction=True)
    def test_a_capture_replayed_with_new_ids_or_event_is_one_event(self) -> None:
        """Token mode signs nothing, so the body digest is the key: the same bytes under a new
        Idempotency-Key, X-Gitlab-Event-UUID or X-Gitlab-Event are the first delivery. (Whoever
        captured one also holds the token and can send other bytes: documented, not testable.)"""
        with self.routed({"Issue Hook": "fail"}):
            capture = self.good("delivery-1")
            first = self.send(capture)
            replays = [
                self.send(capture),
                self.send(capture, **{"Idempotency-Key": "new-1", "X-Gitlab-Event-UUID": "new-1"}),
                self.send(capture, **{"Idempotency-Key": None, "X-Gitlab-Event-UUID": "new-2"}),
                self.send(capture, **{"X-Gitlab-Event": "Issue Hook"}),
            ]
            assert_one_event(first, replays)


class TestGitLabSignedScheme(GitLabContract, TimestampedSchemeContract):
    """The signing token: the full timestamped contract, tampering included."""

    timestamp_header = "webhook-timestamp"

    def source_settings(self) -> dict[str, Any]:
        return {
            **super().source_settings(),
            "SECRETS": [signing_token(settings.SECRET_A), signing_token(settings.SECRET_B)],
        }

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps({"object_kind": "push", "ref": "refs/heads/main"}).encode()
        headers = SCHEME.sign(
            body, signing_token(secret), webhook_id=webhook_id, timestamp=timestamp
        )
        return SignedRequest(body, {**headers, **self.gitlab_headers(event_type)})

    @pytest.mark.django_db(transaction=True)
    def test_a_signed_capture_replayed_with_new_unsigned_headers_is_one_event(self) -> None:
        """Issue #10 finding 3: a delivery signed in ``svix-*`` headers took its id from the
        unsigned Idempotency-Key, so each new key (and a new X-Gitlab-Event) ran it again
        inside the tolerance. The reference library signs the capture and accepts the webhook-*
        replays as authentic: only the signed id can tell them apart, and it is now the id."""
        body = BODY
        key = signing_token(settings.SECRET_A)
        now = int(time.time())
        signature = Webhook(key).sign("msg-1", datetime.fromtimestamp(now, tz=UTC), body.decode())
        signed = {
            "webhook-id": "msg-1",
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        }
        svix = {name.replace("webhook-", "svix-"): value for name, value in signed.items()}
        gitlab = {**self.gitlab_headers("Push Hook"), "Idempotency-Key": "msg-1"}
        new_ids = {"Idempotency-Key": "key-2", "X-Gitlab-Event-UUID": "key-2"}
        variants = [
            {**signed, **gitlab},
            {**signed, **gitlab, **new_ids},
            {**signed, **gitlab, "X-Gitlab-Event": "Issue Hook"},
            {**svix, **gitlab, **new_ids, "X-Gitlab-Event": "Issue Hook"},  # as reported
            {**svix, **gitlab, **new_ids, "webhook-id": "key-3"},  # an unsigned webhook-id too
        ]
        for headers in variants[:3]:
            Webhook(key).verify(body, headers)
        with self.routed({"Issue Hook": "fail"}):
            first = self.send(SignedRequest(body, {**signed, **gitlab}))
            replays = [self.send(SignedRequest(body, headers)) for headers in variants]
            assert_one_event(first, replays)
        assert WebhookEvent.objects.get().event_type == "Push Hook"

    def test_svix_spelling_is_stored_under_its_signed_id_without_the_signature(self) -> None:
        request = self.good("msg-1")
        request.headers = {
            name.replace("webhook-", "svix-"): value for name, value in request.headers.items()
        }
        assert self.send(request, **{"Idempotency-Key": "unsigned"}).status_code == 202
        event = WebhookEvent.objects.get()
        assert event.webhook_id == "msg-1"
        assert {"svix-id", "svix-timestamp"} <= set(event.headers)
        assert "svix-signature" not in event.headers

    def test_the_plain_token_alone_is_not_enough(self) -> None:
        request = self.good()
        request.headers = {
            **{k: v for k, v in request.headers.items() if k != "webhook-signature"},
            "X-Gitlab-Token": signing_token(settings.SECRET_A),
        }
        self.assert_refused(self.send(request), 401, ("missing_signature",))
