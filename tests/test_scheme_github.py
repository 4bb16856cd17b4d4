"""The GitHub scheme: shared vectors, the scheme contract, the refused SHA-1 fallback, the
delivery and event headers, form-encoded deliveries and what is stored."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any

import pytest
from django.conf import settings

from tests.conftest import load_vectors, queued_tasks
from tests.scheme_cases import RoutedSchemeContract, SignedRequest, assert_one_event
from tests.testapp.models import Execution
from webhooks_app.exceptions import InvalidJSON, InvalidPayload, InvalidSignature, MissingSignature
from webhooks_app.ingest import stored_headers
from webhooks_app.models import EventStatus, WebhookEvent
from webhooks_app.schemes import InboundRequest, get_scheme
from webhooks_app.schemes.github import GitHubScheme

SCHEME = GitHubScheme()


@dataclass(frozen=True)
class Vector:
    secret: str
    body: bytes
    signature: str
    sha1: str | None

    def request(self) -> InboundRequest:
        return InboundRequest(body=self.body, headers={"x-hub-signature-256": self.signature})


VECTORS = [
    Vector(
        secret=entry["secret"],
        body=entry["payload"].encode(),
        signature=entry["expected_header_X-Hub-Signature-256"],
        sha1=entry.get("expected_header_X-Hub-Signature"),
    )
    for entry in load_vectors("github")
]


def _verify(request: InboundRequest, secrets: list[str]) -> None:
    # GitHub signs no timestamp: the clock and tolerance must not matter.
    SCHEME.verify(request, secrets, now=0, tolerance=0)


# -- the shared vectors ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.secret)
def test_vector_verifies_and_is_reproduced(vector: Vector) -> None:
    _verify(vector.request(), [vector.secret])
    assert SCHEME.sign(vector.body, vector.secret) == {"X-Hub-Signature-256": vector.signature}


@pytest.mark.parametrize("part", ["body", "signature"])
@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v.secret)
def test_vector_with_one_byte_changed_is_refused(vector: Vector, part: str) -> None:
    """Only the body is signed (no id, no timestamp): replays are stopped by the dedupe."""
    if part == "body":
        i = len(vector.body) // 2
        body = vector.body[:i] + bytes([vector.body[i] ^ 1]) + vector.body[i + 1 :]
        tampered = replace(vector, body=body)
    else:
        i = len(vector.signature) // 2
        digit = "1" if vector.signature[i] != "1" else "2"
        tampered = replace(
            vector, signature=vector.signature[:i] + digit + vector.signature[i + 1 :]
        )
    with pytest.raises(InvalidSignature):
        _verify(tampered.request(), [vector.secret])


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.sha1], ids=lambda v: v.secret)
def test_legacy_sha1_signature_alone_is_missing_signature(vector: Vector) -> None:
    assert vector.sha1 is not None
    request = InboundRequest(vector.body, {"x-hub-signature": vector.sha1})
    with pytest.raises(MissingSignature):
        _verify(request, [vector.secret])
    both = InboundRequest(
        vector.body, {"x-hub-signature": vector.sha1, "x-hub-signature-256": vector.signature}
    )
    _verify(both, [vector.secret])


# -- the contract through the endpoint ------------------------------------------------------


class TestGitHubScheme(RoutedSchemeContract):
    source = "github"
    scheme_name = "github"
    routed_event = "push"
    unrouted_event = "ping"  # an ordinary event: ignored because nothing routes it

    def build(
        self, *, webhook_id: str, event_type: str, secret: str, timestamp: int | None = None
    ) -> SignedRequest:
        body = json.dumps({"ref": "refs/heads/main", "hook_id": 1, "zen": webhook_id}).encode()
        headers = {
            **GitHubScheme().sign(body, secret, webhook_id=webhook_id),
            "X-GitHub-Event": event_type,
            "X-GitHub-Hook-ID": "123",
            "User-Agent": "GitHub-Hookshot/abc",
        }
        return SignedRequest(body, headers)

    def test_stored_headers_keep_github_metadata_and_drop_both_signatures(self) -> None:
        request = self.good()
        request.headers["X-Hub-Signature"] = "sha1=" + "0" * 40
        assert self.send(request).status_code == 202
        headers = WebhookEvent.objects.get().headers
        assert headers["x-github-event"] == "push"
        assert headers["x-github-delivery"] == "delivery-1"
        assert headers["x-github-hook-id"] == "123"
        assert "x-hub-signature" not in headers
        assert "x-hub-signature-256" not in headers

    def test_missing_delivery_header_is_400_after_verification(self) -> None:
        response = self.send(self.good(), **{"X-GitHub-Delivery": None})
        self.assert_refused(response, 400, ("invalid_payload",))
        response = self.send(
            self.good(), **{"X-GitHub-Delivery": None, "X-Hub-Signature-256": "sha256=00"}
        )
        self.assert_refused(response, 401, ("invalid_signature",))

    @pytest.mark.django_db(transaction=True)
    def test_a_capture_replayed_under_new_delivery_ids_and_events_is_one_event(self) -> None:
        """Issue #10 finding 4: GitHub signs neither X-GitHub-Delivery nor X-GitHub-Event. A body
        signed as ``issues`` was stored again under each new delivery id, and a replay naming
        ``push`` ran it as a push. The body digest makes every variant the first delivery."""
        with self.routed({"issues": "record", "push": "fail"}):
            capture = self.good("delivery-1", event_type="issues")
            first = self.send(capture)
            replays = [
                self.send(capture),
                self.send(capture, **{"X-GitHub-Delivery": "delivery-2"}),
                self.send(capture, **{"X-GitHub-Event": "push"}),
                self.send(capture, **{"X-GitHub-Delivery": "delivery-3", "X-GitHub-Event": "push"}),
            ]
            assert_one_event(first, replays, workflow="record")
            assert WebhookEvent.objects.get().event_type == "issues"
            self.run_pending()
        assert list(Execution.objects.values_list("workflow", flat=True)) == ["record"]

    @pytest.mark.django_db(transaction=True)
    def test_an_ignored_capture_replayed_as_a_routed_event_does_not_run(self) -> None:
        """An unrouted delivery is stored (``ignored``) with its digest, so naming a routed event
        in a replay does not make it run either."""
        capture = self.good("delivery-1", event_type="ping")
        assert self.send(capture).json()["status"] == "ignored"
        replay = self.send(capture, **{"X-GitHub-Delivery": "delivery-2", "X-GitHub-Event": "push"})
        assert (replay.status_code, replay.json()["status"]) == (200, "duplicate")
        assert WebhookEvent.objects.get().status == EventStatus.IGNORED
        assert queued_tasks() == 0

    def test_form_encoded_delivery(self) -> None:
        payload = json.dumps({"zen": "Keep it logically awesome.", "hook_id": 1})
        body = urllib.parse.urlencode({"payload": payload}).encode()
        headers = {
            **GitHubScheme().sign(body, settings.SECRET_A, webhook_id="form-1"),
            "X-GitHub-Event": "push",
        }
        response = self.send(
            SignedRequest(body, headers, content_type="application/x-www-form-urlencoded")
        )
        assert response.status_code == 202, response.content
        assert WebhookEvent.objects.get().payload == json.loads(payload)


def test_registered_under_its_module_name() -> None:
    assert isinstance(get_scheme("github"), GitHubScheme)


def test_signature_headers_are_never_stored() -> None:
    headers = {
        "x-hub-signature": "sha1=abc",
        "x-hub-signature-256": "sha256=abc",
        "x-github-event": "push",
        "x-github-delivery": "d",
        "cookie": "session=1",
    }
    assert stored_headers(headers, SCHEME) == {"x-github-event": "push", "x-github-delivery": "d"}


# -- signatures -----------------------------------------------------------------------------

BODY = b'{"zen": "Design for failure."}'


def test_rotation_any_configured_secret_verifies() -> None:
    header = SCHEME.sign(BODY, "old-secret")["X-Hub-Signature-256"]
    request = InboundRequest(BODY, {"x-hub-signature-256": header})
    _verify(request, ["new-secret", "old-secret"])
    with pytest.raises(InvalidSignature):
        _verify(request, ["new-secret"])


def test_prefix_and_hex_case_are_tolerated() -> None:
    digest = SCHEME.sign(BODY, "k")["X-Hub-Signature-256"].removeprefix("sha256=")
    _verify(InboundRequest(BODY, {"x-hub-signature-256": "SHA256=" + digest.upper()}), ["k"])


@pytest.mark.parametrize(
    "header",
    [
        "",
        " ",
        "sha256=",
        "sha256=zz",
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 63,
        "sha256=" + "g" * 64,
        "sha256=é" + "0" * 63,
        "sha512=" + "0" * 64,
        "A" * 10_000,
        "=,=,=",
    ],
)
def test_malformed_headers_are_invalid_signatures(header: str) -> None:
    with pytest.raises(InvalidSignature):
        _verify(InboundRequest(BODY, {"x-hub-signature-256": header}), ["k"])


def test_unprefixed_digest_is_refused() -> None:
    """GitHub's header "always starts with sha256=": a bare digest is not GitHub's format."""
    digest = SCHEME.sign(BODY, "k")["X-Hub-Signature-256"].removeprefix("sha256=")
    with pytest.raises(InvalidSignature):
        _verify(InboundRequest(BODY, {"x-hub-signature-256": digest}), ["k"])


# -- parsing --------------------------------------------------------------------------------

DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"


def _parse(body: bytes = BODY, content_type: str = "application/json", **headers: str) -> Any:
    base = {"x-github-event": "ping", "x-github-delivery": DELIVERY, "content-type": content_type}
    merged = {name: value for name, value in {**base, **headers}.items() if value != "-"}
    return SCHEME.parse(InboundRequest(body, merged))


def test_parse_takes_event_and_delivery_from_the_headers() -> None:
    delivery = _parse()
    assert (delivery.webhook_id, delivery.event_type) == (DELIVERY, "ping")
    assert delivery.payload == json.loads(BODY)
    assert delivery.workflow_name is None


def test_parse_form_encoded_payload_field() -> None:
    body = urllib.parse.urlencode({"payload": BODY.decode()}).encode()
    content_type = "application/x-www-form-urlencoded; charset=utf-8"
    assert _parse(body, content_type).payload == json.loads(BODY)


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "error"),
    [
        (BODY, "application/json", {"x-github-delivery": "-"}, InvalidPayload),
        (BODY, "application/json", {"x-github-delivery": ""}, InvalidPayload),
        (BODY, "application/json", {"x-github-delivery": "a\nb"}, InvalidPayload),
        (BODY, "application/json", {"x-github-event": "-"}, InvalidPayload),
        (BODY, "application/json", {"x-github-event": "x" * 256}, InvalidPayload),
        (b"[]", "application/json", {}, InvalidPayload),
        (b"{", "application/json", {}, InvalidJSON),
        (b"other=1", "application/x-www-form-urlencoded", {}, InvalidPayload),
        (b"payload=%7B", "application/x-www-form-urlencoded", {}, InvalidJSON),
        (b"payload=1&payload=2", "application/x-www-form-urlencoded", {}, InvalidPayload),
    ],
)
def test_parse_refuses(
    body: bytes, content_type: str, headers: dict[str, str], error: type[Exception]
) -> None:
    with pytest.raises(error):
        _parse(body, content_type, **headers)


@pytest.mark.django_db
def test_per_source_limit_admits_bodies_beyond_djangos_upload_limit(client):
    """GitHub sends up to 25 MB; Django's DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) is not in the way."""
    from django.conf import settings as django_settings
    from django.test import override_settings

    body = json.dumps({"ref": "refs/heads/main", "blob": "x" * 3_000_000}).encode()
    assert len(body) > django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    headers = {
        "HTTP_X_HUB_SIGNATURE_256": SCHEME.sign(body, django_settings.SECRET_A)[
            "X-Hub-Signature-256"
        ],
        "HTTP_X_GITHUB_EVENT": "push",
        "HTTP_X_GITHUB_DELIVERY": "big-1",
    }
    source = {
        "SCHEME": "github",
        "SECRETS": [django_settings.SECRET_A],
        "ROUTES": {"push": "record"},
    }
    with override_settings(
        WEBHOOKS={"SOURCES": {"github": {**source, "MAX_BODY_BYTES": 25 * 1024 * 1024}}}
    ):
        assert (
            client.generic(
                "POST", "/webhooks/github/", body, CONTENT_TYPE="application/json", **headers
            ).status_code
            == 202
        )
    with override_settings(WEBHOOKS={"SOURCES": {"github": source}}):  # the 1 MiB default
        response = client.generic(
            "POST", "/webhooks/github/", body, CONTENT_TYPE="application/json", **headers
        )
        assert response.status_code == 413
