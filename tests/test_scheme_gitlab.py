"""The GitLab scheme: the plain secret token, the optional Standard Webhooks signing token,
delivery ids and stored headers; through the shared contract (once per mode) and as a pure
function."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import load_vectors
from tests.scheme_cases import RoutedSchemeContract, SignedRequest, TimestampedSchemeContract
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


def test_delivery_id_prefers_the_idempotency_key():
    both = {"idempotency-key": "k-1", "x-gitlab-event-uuid": "e-1"}
    assert parse(**both, **{"x-gitlab-event": "Push Hook"}) == ("k-1", "Push Hook")
    assert parse(**{"x-gitlab-event-uuid": "e-1", "x-gitlab-event": "Tag Push Hook"}) == (
        "e-1",
        "Tag Push Hook",
    )
    assert parse(**{"webhook-id": "w-1", **both})[0] == "w-1"  # signed, when signing is on
    assert parse(**{"idempotency-key": "k-1"}) == ("k-1", "")
    with pytest.raises(InvalidPayload):
        parse(**{"x-gitlab-event": "Push Hook"})
    with pytest.raises(InvalidPayload):
        parse(**{"idempotency-key": "bad\nid"})


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

    def test_the_plain_token_alone_is_not_enough(self) -> None:
        request = self.good()
        request.headers = {
            **{k: v for k, v in request.headers.items() if k != "webhook-signature"},
            "X-Gitlab-Token": signing_token(settings.SECRET_A),
        }
        self.assert_refused(self.send(request), 401, ("missing_signature",))
