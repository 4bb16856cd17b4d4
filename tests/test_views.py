"""The contract's status table for /webhooks/generic/, row by row, in order."""

from __future__ import annotations

import json
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import DatabaseError
from django.test import override_settings
from django.views.debug import ExceptionReporter
from rest_framework.throttling import BaseThrottle

from tests.conftest import GENERIC_URL, envelope, queued_tasks, sign
from webhooks_app import ingest, queue, schemes, signals
from webhooks_app.models import WebhookEvent
from webhooks_app.views import MetaHeaders, WebhookView

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]


def assert_nothing_stored() -> None:
    assert WebhookEvent.objects.count() == 0
    assert queued_tasks() == 0


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete", "head", "options"])
def test_other_methods_are_405(client, method):
    response = getattr(client, method)(GENERIC_URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"  # generic has no GET handshake
    if method != "head":
        assert_error(response, 405, "method_not_allowed")
        assert "actions" not in response.json()  # OPTIONS reveals no schema
    assert_nothing_stored()


def test_drf_throttles_still_apply_to_deliveries(post_webhook, monkeypatch):
    class Closed(BaseThrottle):
        def allow_request(self, request, view) -> bool:
            return False

    monkeypatch.setattr(WebhookView, "throttle_classes", [Closed])
    response = post_webhook(envelope())
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert_nothing_stored()


def test_other_answers_carry_no_allow_header(post_webhook):
    assert "Allow" not in post_webhook(envelope())
    assert "Allow" not in post_webhook(envelope(), signature=None)


def test_meta_headers_name_headers_like_django(rf):
    request = rf.post(
        "/webhooks/generic/", b"{}", content_type="application/json; charset=utf-8",
        HTTP_X_WEBHOOK_SIGNATURE="sha256=ab", HTTP_USER_AGENT="sender/1.0",
    )  # fmt: skip
    headers = MetaHeaders(request.META)
    assert dict(headers) == {name.lower(): value for name, value in request.headers.items()}
    assert len(headers) == len(request.headers)
    assert headers["x-webhook-signature"] == headers["X-Webhook-Signature"] == "sha256=ab"
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers.get("x-missing") is None
    assert headers.get("x_webhook_signature") is None  # not a name the sender could have sent


def test_unknown_source_is_404(post_webhook):
    assert_error(post_webhook(envelope(), url="/webhooks/nope/"), 404, "unknown_source")
    assert_nothing_stored()


def test_body_over_limit_is_413_before_anything_else(post_webhook):
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "MAX_BODY_BYTES": 100}):
        body = envelope(pad="x" * 200)
        # Wrong content type and no signature too: the size answers first.
        response = post_webhook(body, signature=None, content_type="text/plain")
    assert_error(response, 413, "payload_too_large")
    assert_nothing_stored()


def test_body_exactly_at_limit_is_accepted(post_webhook):
    body = envelope()
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "MAX_BODY_BYTES": len(body)}):
        assert post_webhook(body).status_code == 202


def test_lying_content_length_cannot_smuggle_a_bigger_body(client):
    """The body is read with a bound, whatever Content-Length claims."""
    body = envelope(pad="x" * 200)
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "MAX_BODY_BYTES": 100}):
        response = client.generic(
            "POST", GENERIC_URL, body, content_type="application/json",
            CONTENT_LENGTH="10", HTTP_X_WEBHOOK_SIGNATURE=sign(body),
        )  # fmt: skip
    assert response.status_code in (401, 413)
    assert_nothing_stored()


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_content_type_is_415(post_webhook, content_type):
    response = post_webhook(envelope(), content_type=content_type, signature=None)
    assert_error(response, 415, "unsupported_media_type")
    assert_nothing_stored()


def test_json_content_type_with_charset_is_accepted(post_webhook):
    assert (
        post_webhook(envelope(), content_type="application/json; charset=utf-8").status_code == 202
    )


@pytest.mark.parametrize("secrets", [[], [""], None])
def test_no_usable_secret_is_503_for_every_request(post_webhook, secrets):
    generic = (
        {"SCHEME": "generic"} if secrets is None else {"SCHEME": "generic", "SECRETS": secrets}
    )
    with override_settings(WEBHOOKS={"SOURCES": {"generic": generic}}):
        body = envelope()
        for signature in (None, sign(body), sign(body, secret=""), "sha256=00"):
            assert_error(post_webhook(body, signature=signature), 503, "not_configured")
    assert_nothing_stored()


def test_missing_signature_is_401(post_webhook):
    assert_error(post_webhook(envelope(), signature=None), 401, "missing_signature")
    assert_nothing_stored()


@pytest.mark.parametrize(
    "signature",
    ["", "sha256=", "sha256=zz", "v1,", "sha256=" + "0" * 64, "sha1=abc", "A" * 10_000, "sha256=é"],
)
def test_wrong_or_malformed_signature_is_401(post_webhook, signature):
    assert_error(post_webhook(envelope(), signature=signature), 401, "invalid_signature")
    assert_nothing_stored()


def test_truncated_and_extended_signatures_are_401(post_webhook):
    body = envelope()
    good = sign(body)
    for signature in (good[:-1], good + "0", good + " 0"):
        assert_error(post_webhook(body, signature=signature), 401, "invalid_signature")
    assert_nothing_stored()


def test_signature_over_reserialised_json_is_401(post_webhook):
    body = b'{"workflow_name": "record",  "webhook_id": "evt-1", "inputs": {"b": 1, "a": 2}}'
    for variant in (
        json.dumps(json.loads(body)).encode(),  # other whitespace
        json.dumps(json.loads(body), sort_keys=True).encode(),  # other key order
    ):
        assert variant != body
        assert_error(post_webhook(body, signature=sign(variant)), 401, "invalid_signature")
    assert post_webhook(body, signature=sign(body)).status_code == 202


def test_signature_prefix_optional_and_hex_case_insensitive(post_webhook):
    hexdigest = sign(envelope("record", "a"))[len("sha256=") :]
    assert post_webhook(envelope("record", "a"), signature=hexdigest).status_code == 202
    upper = "SHA256=" + sign(envelope("record", "b"))[7:].upper()
    assert post_webhook(envelope("record", "b"), signature=upper).status_code == 202


def test_both_rotated_secrets_verify(post_webhook):
    first = envelope("record", "old")
    second = envelope("record", "new")
    assert post_webhook(first, signature=sign(first, settings.SECRET_A)).status_code == 202
    assert post_webhook(second, signature=sign(second, settings.SECRET_B)).status_code == 202


def test_a_secret_outside_the_list_is_401(post_webhook):
    body = envelope()
    assert_error(
        post_webhook(body, signature=sign(body, "not-configured-secret")), 401, "invalid_signature"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe{}",
        b'{"workflow_name": "record", "workflow_name": "fail"}',
        b"[" * 100 + b"]" * 100,
        b'{"workflow_name": "record", "inputs": {"x": NaN}}',
        b'{"workflow_name": "record", "inputs": {"x": 1e999}}',
        b'{"workflow_name": "record", "inputs": {"x": "\\u0000"}}',
        b'{"workflow_name": "record", "inputs": {"x": "\\ud800"}}',
        b"",
    ],
)
def test_invalid_json_is_400(post_webhook, body):
    assert_error(post_webhook(body), 400, "invalid_json")
    assert_nothing_stored()


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "string",
        {"inputs": {}},
        {"workflow_name": 7},
        {"workflow_name": ""},
        {"workflow_name": "record", "inputs": []},
        {"workflow_name": "record", "webhook_id": 5},
        {"workflow_name": "record", "webhook_id": ""},
        {"workflow_name": "record", "webhook_id": "x" * 256},
        {"workflow_name": "record", "webhook_id": "evt\n1"},
        {"workflow_name": "record", "webhook_id": "evt\x1b[31m"},
    ],
)
def test_invalid_payload_is_400(post_webhook, payload):
    assert_error(post_webhook(json.dumps(payload).encode()), 400, "invalid_payload")
    assert_nothing_stored()


def test_bad_webhook_id_header_is_400(post_webhook):
    body = envelope(webhook_id=None)
    assert_error(post_webhook(body, HTTP_X_WEBHOOK_ID="a" * 300), 400, "invalid_payload")
    assert_nothing_stored()


def test_unknown_workflow_is_422(post_webhook):
    assert_error(post_webhook(envelope("no_such_workflow")), 422, "unknown_workflow")
    assert_nothing_stored()


def test_database_unavailable_is_503_with_retry_after(post_webhook, monkeypatch):
    def broken(event):
        raise DatabaseError("server closed the connection")

    monkeypatch.setattr(ingest, "insert_unless_duplicate", broken)
    response = post_webhook(envelope())
    assert_error(response, 503, "unavailable")
    assert int(response["Retry-After"]) > 0
    assert_nothing_stored()


@pytest.mark.django_db(transaction=True)
def test_accepted_is_202_stored_and_queued(post_webhook):
    """Real commits, so the Redis broker's after-commit enqueue happens too."""
    response = post_webhook(envelope("record", "evt-42", user_id=42))
    assert response.status_code == 202
    event = WebhookEvent.objects.get()
    assert response.json() == {"status": "accepted", "webhook_id": "evt-42", "event_id": event.pk}
    assert (event.source, event.webhook_id, event.workflow_name) == ("generic", "evt-42", "record")
    assert event.payload == {"user_id": 42}
    assert event.status == "pending"
    assert queued_tasks() == 1


def test_duplicate_is_200_with_the_stored_status(post_webhook):
    assert post_webhook(envelope("record", "evt-7")).status_code == 202
    response = post_webhook(envelope("record", "evt-7", other="body"))
    assert response.status_code == 200
    assert response.json() == {
        "status": "duplicate",
        "webhook_id": "evt-7",
        "event_status": "pending",
    }
    assert WebhookEvent.objects.count() == 1
    assert WebhookEvent.objects.get().payload == {}  # the first delivery's payload is kept


def test_webhook_id_from_header_and_assigned_when_absent(post_webhook):
    assert (
        post_webhook(envelope(webhook_id=None, n=1), HTTP_X_WEBHOOK_ID="from-header").json()[
            "webhook_id"
        ]
        == "from-header"
    )
    assigned = post_webhook(envelope(webhook_id=None, n=2)).json()
    assert assigned["status"] == "accepted"
    assert str(uuid.UUID(assigned["webhook_id"])) == assigned["webhook_id"]  # canonical, dashed
    assert WebhookEvent.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_captured_request_replayed_under_any_id_header_is_one_event(post_webhook):
    """Issue #10 finding 2: the id header is not signed. The same signed bytes sent with a new
    X-Webhook-ID, or with none, were stored and run once per id; now they are one event."""
    body = envelope(webhook_id=None, user_id=42)
    first = post_webhook(body, HTTP_X_WEBHOOK_ID="evt-original")
    assert first.status_code == 202
    replays = [
        post_webhook(body, HTTP_X_WEBHOOK_ID="evt-replayed"),
        post_webhook(body),
        post_webhook(body, HTTP_X_WEBHOOK_ID="evt-original"),
    ]
    assert [r.status_code for r in replays] == [200, 200, 200]
    assert {r.json()["webhook_id"] for r in replays} == {"evt-original"}
    assert WebhookEvent.objects.count() == 1
    assert queued_tasks() == 1


def test_the_same_bytes_without_any_id_are_one_event(post_webhook):
    body = envelope(webhook_id=None, user_id=42)
    first = post_webhook(body)
    again = post_webhook(body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["webhook_id"] == first.json()["webhook_id"]
    assert post_webhook(envelope(webhook_id=None, user_id=42, nonce="x")).status_code == 202
    assert WebhookEvent.objects.count() == 2


def test_inputs_default_to_empty_object(post_webhook):
    body = json.dumps({"workflow_name": "record", "webhook_id": "no-inputs"}).encode()
    assert post_webhook(body).status_code == 202
    assert WebhookEvent.objects.get().payload == {}


def test_no_csrf_token_needed(post_webhook, settings):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    body = envelope()
    response = csrf_client.generic(
        "POST",
        GENERIC_URL,
        body,
        content_type="application/json",
        HTTP_X_WEBHOOK_SIGNATURE=sign(body),
    )
    assert response.status_code == 202


@override_settings(
    WEBHOOKS={"SOURCES": {"generic": {"SCHEME": "generic"}}, "REQUIRE_SIGNATURE": False}
)
def test_signatures_switched_off_accept_unsigned(post_webhook):
    assert post_webhook(envelope(), signature=None).status_code == 202


def test_env_switch_turns_signatures_off(post_webhook, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SIGNATURE_REQUIRED", "false")
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SCHEME": "generic"}}}):
        assert post_webhook(envelope(), signature=None).status_code == 202


def test_stored_headers_are_allow_listed_without_signatures(post_webhook):
    post_webhook(
        envelope(),
        HTTP_USER_AGENT="sender/1.0",
        HTTP_AUTHORIZATION="Bearer leaked-token",
        HTTP_COOKIE="session=abc",
        HTTP_X_GITHUB_ENCODED_SECRET="leaked",
    )
    headers = WebhookEvent.objects.get().headers
    assert headers["user-agent"] == "sender/1.0"
    assert not {"x-webhook-signature", "authorization", "cookie", "x-github-encoded-secret"} & set(
        headers
    )


def test_no_secret_or_signature_in_responses_logs_or_stored_rows(post_webhook, caplog):
    caplog.set_level(logging.DEBUG)
    body = envelope()
    good = sign(body)
    bad = sign(body, "wrong-secret")
    responses = [
        post_webhook(body),
        post_webhook(body),
        post_webhook(body, signature=bad),
        post_webhook(b"{", signature=sign(b"{")),
        post_webhook(envelope("nope"), signature=sign(envelope("nope"))),
    ]
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SCHEME": "generic"}}}):
        responses.append(post_webhook(body))
    texts = [r.content.decode() for r in responses] + [caplog.text]
    texts += [json.dumps(list(WebhookEvent.objects.values()), default=str)]
    for secret_value in (settings.SECRET_A, settings.SECRET_B, good[7:], bad[7:]):
        for text in texts:
            assert secret_value not in text
    assert "Webhook refused" in caplog.text  # the refusals were logged, just not their secrets


def test_a_refusal_is_logged_once_by_the_app_and_5xx_also_by_django(post_webhook, caplog):
    caplog.set_level(logging.INFO)
    post_webhook(envelope(), signature=sign(envelope(), "wrong-secret"))
    refused = [r for r in caplog.records if r.name == "webhooks_app"]
    assert [r.getMessage() for r in refused] == [
        "Webhook refused: source=generic status=401 error=invalid_signature"
    ]
    assert not [r for r in caplog.records if r.name == "django.request"]
    caplog.clear()
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SCHEME": "generic"}}}):
        post_webhook(envelope())
    assert [r.levelname for r in caplog.records if r.name == "django.request"] == ["ERROR"]


def test_log_lines_escape_control_characters(post_webhook, caplog):
    caplog.set_level(logging.INFO, logger="webhooks_app")
    post_webhook(envelope(), url="/webhooks/evil%0A%5BCRITICAL%5D%20forged/")
    assert caplog.records
    for record in caplog.records:
        assert "\n" not in record.getMessage()


def test_health_reports_database_and_queue(admin_client):
    response = admin_client.get("/webhooks/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == "ok"
    assert body["queue"]["status"] == "ok"
    assert body["queue"]["broker"] in {"orm", "redis"}
    assert isinstance(body["queue"]["queued"], int)


def test_health_is_503_when_the_database_fails(client, monkeypatch):
    from django.db import OperationalError, connection

    def down(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(connection, "cursor", down)
    response = client.get("/webhooks/health/")
    assert response.status_code == 503
    assert response.json()["database"] == "unavailable"


def test_webhook_route_opts_out_of_atomic_requests():
    """With ATOMIC_REQUESTS the 2xx would be decided before the request's transaction commits."""
    from django.urls import resolve

    assert "default" in resolve(GENERIC_URL).func._non_atomic_requests


@pytest.mark.django_db(transaction=True)
def test_accepted_under_atomic_requests_is_committed(post_webhook, monkeypatch):
    from django.db import connection

    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    assert post_webhook(envelope("record", "atomic-1")).status_code == 202
    assert WebhookEvent.objects.filter(webhook_id="atomic-1").exists()


def test_a_connection_closed_mid_body_is_400_not_500(client):
    class ClosedEarly:
        def read(self, *args):
            raise OSError("client went away")

        readline = read

    response = client.generic(
        "POST", GENERIC_URL, b"", CONTENT_TYPE="application/json", CONTENT_LENGTH="100",
        **{"wsgi.input": ClosedEarly(), "HTTP_X_WEBHOOK_SIGNATURE": "sha256=" + "0" * 64},
    )  # fmt: skip
    assert_error(response, 400, "invalid_payload")
    assert_nothing_stored()


HEALTH_URL = "/webhooks/health/"


def test_anonymous_health_says_only_up_or_down(client):
    """A load balancer needs up/down; the queue's depth, broker and cluster ids are not public."""
    response = client.get(HEALTH_URL)
    assert response.status_code == 200
    assert response.json() == {"database": "ok", "queue": {"status": "ok"}}


def test_anonymous_health_does_not_scan_the_clusters(client, monkeypatch):
    """Listing clusters is a KEYS scan on Redis: anyone polling must not be able to cause it."""

    def scan(*args, **kwargs):
        raise AssertionError("the cluster scan ran for an anonymous caller")

    monkeypatch.setattr(queue.Stat, "get_all", scan)
    assert client.get(HEALTH_URL).json() == {"database": "ok", "queue": {"status": "ok"}}


def test_health_details_need_a_staff_session_or_the_health_token(client, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "HEALTH_TOKEN": "health-token-0123456789"}
    details = {"status", "broker", "queued", "clusters"}

    def queue_keys(**headers: str) -> set[str]:
        response = client.get(HEALTH_URL, **headers)
        assert response.status_code == 200
        return set(response.json()["queue"])

    assert queue_keys() == {"status"}
    assert queue_keys(HTTP_AUTHORIZATION="Bearer health-token-0123456789") == details
    assert queue_keys(HTTP_AUTHORIZATION="Bearer health-token-012345678") == {"status"}
    assert queue_keys(HTTP_AUTHORIZATION="Basic health-token-0123456789") == {"status"}
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    client.force_login(user)
    assert queue_keys() == {"status"}  # staff who may not view events
    user.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    assert queue_keys() == details


def test_an_unset_health_token_matches_no_bearer(client):
    response = client.get(HEALTH_URL, HTTP_AUTHORIZATION="Bearer ")
    assert response.json() == {"database": "ok", "queue": {"status": "ok"}}


def test_health_tells_staff_which_sources_refuse_every_delivery(client, admin_client, post_webhook):
    """A source without a secret answers 503 to every delivery: staff see it in the details;
    the anonymous answer stays up/down, and stays 200 (the other sources still work)."""
    sources = {"generic": {"SECRETS": []}, "github": {"SECRETS": ["g" * 30]}}
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert post_webhook(envelope()).status_code == 503
        staff = admin_client.get(HEALTH_URL)
        anonymous = client.get(HEALTH_URL)
    assert staff.status_code == 200
    assert staff.json()["sources"] == {"generic": "not_configured", "github": "ok"}
    assert (anonymous.status_code, anonymous.json()) == (
        200,
        {"database": "ok", "queue": {"status": "ok"}},
    )
    assert admin_client.get(HEALTH_URL).json()["sources"] == {
        "generic": "ok",
        "github": "ok",
        "ordered": "ok",
    }


def meta_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


@pytest.fixture
def receiver_crashes() -> Iterator[None]:
    """A project's ``event_received`` receiver with a bug: the delivery is stored, then a 500."""

    def crash(**kwargs: Any) -> None:
        raise RuntimeError("bug in a project's receiver")

    signals.event_received.connect(crash)
    yield
    signals.event_received.disconnect(crash)


def deliver_and_crash(client) -> tuple[Any, list[str]]:
    """A signed Shopify delivery that also carries every other scheme's signature headers
    (Stripe-like ``v1=<hex>`` values), answered 500: the response and the values sent."""
    shopify = schemes.get_scheme("shopify")
    body = b'{"id": 1}'
    signed = {meta_name(k): v for k, v in shopify.sign(body, settings.SECRET_A).items()}
    others = {
        meta_name(header): f"v1={uuid.uuid4().hex}{uuid.uuid4().hex}"
        for name in schemes.scheme_names()
        for header in schemes.get_scheme(name).signature_headers - shopify.signature_headers
    }
    assert {"HTTP_X_HUB_SIGNATURE_256", "HTTP_STRIPE_SIGNATURE", "HTTP_X_TWILIO_SIGNATURE"} <= set(
        others
    )
    source = {"SCHEME": "shopify", "SECRETS": [settings.SECRET_A], "ROUTES": {"*": "record"}}
    client.raise_request_exception = False
    with override_settings(WEBHOOKS={**settings.WEBHOOKS, "SOURCES": {"shop": source}}):
        response = client.post(
            "/webhooks/shop/", body, content_type="application/json",
            HTTP_X_SHOPIFY_TOPIC="orders/create", HTTP_X_SHOPIFY_WEBHOOK_ID="order-1",
            **signed, **others,
        )  # fmt: skip
    assert response.status_code == 500
    assert WebhookEvent.objects.filter(source="shop").exists()  # it did get that far
    return response, [*signed.values(), *others.values()]


@pytest.fixture
def crashed(client, caplog, receiver_crashes) -> tuple[Any, Any, list[str]]:
    """(the request as Django's error reporting got it, its exc_info, the signature values)."""
    _, values = deliver_and_crash(client)
    record = next(r for r in caplog.records if r.name == "django.request" and r.exc_info)
    return record.request, record.exc_info, values


def test_error_reports_hide_every_schemes_signature_headers(crashed):
    request, exc_info, values = crashed
    reporter = ExceptionReporter(request, *exc_info, is_email=True)  # as AdminEmailHandler does
    for report in (reporter.get_traceback_text(), reporter.get_traceback_html()):
        assert "HTTP_X_SHOPIFY_HMAC_SHA256" in report  # the request's META is in the report...
        assert [value for value in values if value in report] == []  # ...without a signature


def test_error_reports_hide_frame_variables_holding_a_signature(crashed):
    request, _, values = crashed

    def project_code(meta: dict[str, str]) -> None:
        shopify_signature = meta["HTTP_X_SHOPIFY_HMAC_SHA256"]  # noqa: F841 - shown in reports
        stripe_v1 = meta["HTTP_STRIPE_SIGNATURE"].split("=")[1]  # noqa: F841 - part of a value
        raise RuntimeError("a bug in code that read the headers")

    try:
        project_code(request.META)
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info(), is_email=True).get_traceback_html()
    assert "shopify_signature" in html and "stripe_v1" in html
    assert [value for value in values if value.removeprefix("v1=") in html] == []


def test_the_debug_page_hides_them_too(client, settings, receiver_crashes):
    settings.DEBUG = True
    response, values = deliver_and_crash(client)
    page = response.content.decode()
    # The receiver's error itself, not an AttributeError of DRF's DEBUG-only error path.
    assert page.split("<title>", 1)[1].lstrip().startswith("RuntimeError")
    assert "HTTP_X_SHOPIFY_HMAC_SHA256" in page
    assert [value for value in values if value.removeprefix("v1=") in page] == []
