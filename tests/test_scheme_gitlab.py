from __future__ import annotations

import json

import pytest

from tests.scheme_cases import RoutedSchemeContract, SignedRequest
from webhooks_app.exceptions import InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.schemes import InboundRequest
from webhooks_app.schemes.gitlab import GitLabScheme

SCHEME = GitLabScheme()


def test_token_and_rotation():
    SCHEME.verify(InboundRequest(b"{}", {"x-gitlab-token": "b"}), ["a", "b"], now=0, tolerance=0)
    with pytest.raises(InvalidSignature):
        SCHEME.verify(InboundRequest(b"{}", {"x-gitlab-token": ""}), ["a", "b"], now=0, tolerance=0)
    with pytest.raises(MissingSignature):
        SCHEME.verify(InboundRequest(b"{}", {}), ["a"], now=0, tolerance=0)


def test_delivery_id_from_event_uuid_or_idempotency_key():
    assert (
        SCHEME.parse(
            InboundRequest(b"{}", {"idempotency-key": "k-1", "x-gitlab-event": "Push Hook"})
        ).webhook_id
        == "k-1"
    )
    with pytest.raises(InvalidPayload):
        SCHEME.parse(InboundRequest(b"{}", {"x-gitlab-event": "Push Hook"}))


class TestGitLabScheme(RoutedSchemeContract):
    source = "gitlab"
    scheme_name = "gitlab"
    routed_event = "Push Hook"
    unrouted_event = "Issue Hook"

    def build(self, *, webhook_id, event_type, secret, timestamp=None):
        body = json.dumps({"object_kind": "push", "ref": "refs/heads/main"}).encode()
        return SignedRequest(
            body, {**SCHEME.sign(body, secret, webhook_id=webhook_id), "X-Gitlab-Event": event_type}
        )

    def test_tampered_body_is_refused(self) -> None:
        """A token is not a MAC: an altered body cannot be detected (documented; use HTTPS)."""
        request = self.good()
        request.body = request.body.replace(b"main", b"evil")
        assert self.send(request).status_code == 202
