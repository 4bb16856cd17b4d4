"""The shared test case every scheme's tests inherit (cf. anymail's ``webhook_cases``).

A subclass names its source and scheme and says how a provider would build a signed request
(:meth:`SchemeContract.build`); the inherited tests then drive the real endpoint with good, bad,
missing, malformed and rotated signatures, timestamps at the tolerance edges, duplicates and
unrouted events. Signatures are real (the scheme's own ``sign`` or the vectors), never patched.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest
from django.conf import settings
from django.test import Client, override_settings

from tests.conftest import queued_tasks
from tests.testapp.models import Execution
from webhooks_app import tasks
from webhooks_app.models import EventStatus, WebhookEvent
from webhooks_app.schemes import Scheme, get_scheme

#: Signature header values no scheme may answer with a 500.
MALFORMED_SIGNATURES = [
    "",
    " ",
    "v1,",
    "v1",
    "v1,!!!",
    "sha256=",
    "sha256=zz",
    "t=1,v0=abc",
    "t=,v1=",
    "A" * 10_000,
    "é",
    "=,=,=",
]


def assert_one_event(first: Any, replays: Sequence[Any], *, workflow: str = "record") -> None:
    """A captured delivery (``first``, answered 202) and its replays: each replay is ``200
    duplicate`` of it (answered with its webhook id), one event is stored, under the first
    one's workflow, and one task is queued. Call it from a ``django_db(transaction=True)`` test:
    the Redis broker enqueues after the commit."""
    assert first.status_code == 202, first.content
    stored_id = first.json()["webhook_id"]
    for replay in replays:
        assert replay.status_code == 200, replay.content
        assert (replay.json()["status"], replay.json()["webhook_id"]) == ("duplicate", stored_id)
    event = WebhookEvent.objects.get()
    assert (event.webhook_id, event.workflow_name) == (stored_id, workflow)
    assert queued_tasks() == 1


@dataclass
class SignedRequest:
    body: bytes
    headers: dict[str, str]
    content_type: str = "application/json"
    query: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class SchemeContract:
    """The cases every scheme passes. Provider schemes inherit :class:`RoutedSchemeContract`
    or :class:`TimestampedSchemeContract` instead; implement :meth:`build`."""

    source: ClassVar[str]
    scheme_name: ClassVar[str]
    #: The event type routed to the ``record`` workflow, and one with no route.
    routed_event: ClassVar[str] = "push"
    unrouted_event: ClassVar[str] = "unrouted"
    #: Schemes that sign a timestamp get the tolerance tests.
    timestamped: ClassVar[bool] = False
    tolerance: ClassVar[int] = 300

    # -- to implement -------------------------------------------------------------------------
    def build(
        self, *, webhook_id: str, event_type: str, secret: str, timestamp: int | None = None
    ) -> SignedRequest:
        """A request as the provider would send it, signed with ``secret`` at ``timestamp``."""
        raise NotImplementedError

    def source_settings(self) -> dict[str, Any]:
        """The ``WEBHOOKS['SOURCES']`` entry; routes ``routed_event`` to ``record`` by default."""
        return {
            "SCHEME": self.scheme_name,
            "SECRETS": [settings.SECRET_A, settings.SECRET_B],
            "ROUTES": {self.routed_event: "record"},
        }

    # -- helpers ------------------------------------------------------------------------------
    @property
    def scheme(self) -> Scheme:
        return get_scheme(self.scheme_name)

    @property
    def url(self) -> str:
        return f"/webhooks/{self.source}/"

    @pytest.fixture(autouse=True)
    def _configure_source(self, db: Any) -> Any:
        with override_settings(
            WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {self.source: self.source_settings()}}
        ):
            yield

    def routed(self, routes: dict[str, str]) -> override_settings:
        """The source with ``routes`` added to its own (say, a second event type routed to
        another workflow, to show that a replay under it does not run there)."""
        source = self.source_settings()
        source["ROUTES"] = {**source.get("ROUTES", {}), **routes}
        return override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {self.source: source}})

    def send(self, request: SignedRequest, **header_overrides: str | None) -> Any:
        headers = {**request.headers, **header_overrides}
        meta = {
            "HTTP_" + name.upper().replace("-", "_"): value
            for name, value in headers.items()
            if value is not None
        }
        url = self.url + (f"?{request.query}" if request.query else "")
        return Client().generic(
            "POST", url, request.body, CONTENT_TYPE=request.content_type, **meta, **request.extra
        )

    def good(
        self, webhook_id: str = "delivery-1", event_type: str | None = None, **kw: Any
    ) -> SignedRequest:
        return self.build(
            webhook_id=webhook_id,
            event_type=event_type or self.routed_event,
            secret=kw.pop("secret", settings.SECRET_A),
            timestamp=kw.pop("timestamp", int(time.time()) if self.timestamped else None),
        )

    def signature_header_names(self, request: SignedRequest) -> list[str]:
        return [name for name in request.headers if name.lower() in self.scheme.signature_headers]

    def run_pending(self) -> None:
        for pk in WebhookEvent.objects.filter(status=EventStatus.PENDING).values_list(
            "pk", flat=True
        ):
            tasks.process_event(pk)

    def assert_refused(self, response: Any, status: int, codes: tuple[str, ...]) -> None:
        assert response.status_code == status, response.content
        assert response.json()["error"] in codes
        assert WebhookEvent.objects.count() == 0

    # -- the contract -------------------------------------------------------------------------
    def test_good_signature_is_accepted_and_runs_once(self) -> None:
        response = self.send(self.good())
        assert response.status_code == 202, response.content
        event = WebhookEvent.objects.get()
        assert (event.source, event.workflow_name, event.status) == (
            self.source,
            "record",
            "pending",
        )
        assert "delivery-1" in event.webhook_id
        for name in self.scheme.signature_headers:
            assert name not in event.headers
        self.run_pending()
        assert Execution.objects.count() == 1

    def test_wrong_secret_is_refused(self) -> None:
        response = self.send(self.good(secret="a-secret-nobody-configured-123456"))
        self.assert_refused(response, 401, ("invalid_signature",))

    def test_missing_signature_is_refused(self) -> None:
        request = self.good()
        stripped = dict.fromkeys(self.signature_header_names(request))
        self.assert_refused(self.send(request, **stripped), 401, ("missing_signature",))

    @pytest.mark.parametrize("value", MALFORMED_SIGNATURES)
    def test_malformed_signature_is_401_never_500(self, value: str) -> None:
        request = self.good()
        overrides = dict.fromkeys(self.signature_header_names(request), value)
        response = self.send(request, **overrides)
        self.assert_refused(response, 401, ("invalid_signature", "missing_signature"))

    def test_tampered_body_is_refused(self) -> None:
        request = self.good()
        request.body = request.body.replace(b"delivery-1", b"delivery-2", 1) + b" "
        self.assert_refused(self.send(request), 401, ("invalid_signature",))

    def test_rotated_secret_verifies(self) -> None:
        assert self.send(self.good(secret=settings.SECRET_B)).status_code == 202

    def test_no_secret_is_503(self) -> None:
        with override_settings(
            WEBHOOKS={"SOURCES": {self.source: {**self.source_settings(), "SECRETS": []}}}
        ):
            self.assert_refused(self.send(self.good()), 503, ("not_configured",))

    def test_duplicate_delivery_is_200_and_runs_once(self) -> None:
        assert self.send(self.good()).status_code == 202
        response = self.send(self.good())  # re-signed, as a sender's retry would be
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "duplicate"
        assert WebhookEvent.objects.count() == 1
        self.run_pending()
        assert Execution.objects.count() == 1


class RoutedSchemeContract(SchemeContract):
    """For provider schemes: the workflow comes from ``ROUTES``; unrouted events are ignored."""

    def test_unrouted_event_is_ignored_and_not_run(self) -> None:
        response = self.send(self.good(event_type=self.unrouted_event))
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "ignored"
        assert WebhookEvent.objects.get().status == EventStatus.IGNORED
        self.run_pending()
        assert Execution.objects.count() == 0


#: Timestamp values no scheme may accept or answer with a 500.
MALFORMED_TIMESTAMPS = [
    "",
    "abc",
    "1.5e9",
    "-1",
    "99999999999999999999",
    " 1",
    "\uff11\uff12\uff13",
]  # the last: full-width digits


class TimestampedSchemeContract(RoutedSchemeContract):
    """For schemes that sign a timestamp: tolerance edges in both directions, malformed values."""

    timestamped: ClassVar[bool] = True

    def with_timestamp(self, request: SignedRequest, value: str) -> SignedRequest:
        """``request`` with its timestamp replaced by ``value`` (default: a header of its own)."""
        name = self.timestamp_header
        request.headers = {
            k: (value if k.lower() == name else v) for k, v in request.headers.items()
        }
        return request

    timestamp_header: ClassVar[str] = ""

    @pytest.mark.parametrize("value", MALFORMED_TIMESTAMPS)
    def test_malformed_timestamp_is_401_never_500(self, value: str) -> None:
        response = self.send(self.with_timestamp(self.good(), value))
        self.assert_refused(response, 401, ("invalid_signature",))

    def test_timestamps_at_the_tolerance_edges(self) -> None:
        now = int(time.time())
        for n, offset in enumerate((-(self.tolerance - 5), self.tolerance - 5)):
            response = self.send(self.good(webhook_id=f"inside-{n}", timestamp=now + offset))
            assert response.status_code == 202, (offset, response.content)
        for n, offset in enumerate((-(self.tolerance + 5), self.tolerance + 5)):
            response = self.send(self.good(webhook_id=f"outside-{n}", timestamp=now + offset))
            assert response.status_code == 401, (offset, response.content)
        assert WebhookEvent.objects.count() == 2
