"""Schemathesis against the app's own OpenAPI schema, on a real gunicorn: no 5xx, and every
response conforms to the schema. Run twice over the receiving endpoint, as the notes advise:
unsigned (everything must stop at 401 and nothing is stored) and signed by a hook that signs
each generated body (so the parser and validation paths are exercised too)."""

from __future__ import annotations

import json
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from tests.conftest import sign
from webhooks_app.models import WebhookEvent

pytestmark = pytest.mark.process

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "40"))
#: Operations that refuse some schema-valid bodies (400), for reasons JSON Schema cannot state:
#: a replay whose ``until`` is before its ``since``, a date-time with a leap second or year 0.
#: Those refusals must still conform (the documented ``invalid_filter`` body).
REFUSE_SOME_VALID = {("/webhooks/api/replays/", "POST")}
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


def load_schema(server, staff_session: dict[str, str]):
    """The schema is for staff: read it with their session."""
    return schemathesis.openapi.from_url(
        f"http://127.0.0.1:{server.port}/webhooks/api/schema/?format=json", headers=staff_session
    )


def send(server, case, *, signed: bool, auth: dict[str, str] | None = None) -> requests.Response:
    # Serialised here, not by the transport, so that the signature covers the exact bytes sent.
    raw = (
        json.dumps(case.body).encode()
        if isinstance(case.body, dict | list | str | int | float | bool)
        else b""
    )
    headers = {key: str(value) for key, value in (case.headers or {}).items()}
    headers.setdefault("Content-Type", "application/json")
    if signed:
        headers["X-Webhook-Signature"] = sign(raw)
    headers.update(auth or {})
    return requests.request(
        case.method,
        f"http://127.0.0.1:{server.port}{case.formatted_path}",
        data=raw,
        params=case.query,
        headers=headers,
        timeout=30,
    )


def run_cases(
    server,
    operation,
    *,
    signed: bool,
    auth: dict[str, str] | None = None,
    refuses_some_valid: bool = False,
) -> list[int]:
    statuses: list[int] = []
    excluded = [ignored_auth] if auth else []
    if refuses_some_valid:
        excluded.append(positive_data_acceptance)

    @HYPOTHESIS
    @given(case=operation.as_strategy())
    def check(case):
        response = send(server, case, signed=signed, auth=auth)
        statuses.append(response.status_code)
        assert response.status_code < 500, response.text
        # Our own session replaces any generated credentials, so "ignored_auth" does not apply.
        case.validate_response(response, excluded_checks=excluded or None)

    check()
    return statuses


def test_receiving_endpoint_unsigned_never_5xx_and_stores_nothing(server, staff_session):
    operation = load_schema(server, staff_session)["/webhooks/{source}/"]["POST"]
    statuses = run_cases(server, operation, signed=False)
    assert statuses and all(status in (401, 404, 415, 413, 503) for status in statuses), set(
        statuses
    )
    assert not WebhookEvent.objects.exists()


def test_receiving_endpoint_signed_never_5xx_and_conforms(server, staff_session):
    operation = load_schema(server, staff_session)["/webhooks/{source}/"]["POST"]
    statuses = run_cases(server, operation, signed=True)
    assert statuses
    assert all(status < 500 for status in statuses)


def test_staff_api_and_health_conform(server, staff_session):
    schema = load_schema(server, staff_session)
    for path, method in [
        ("/webhooks/api/events/", "GET"),
        ("/webhooks/api/events/{id}/", "GET"),
        ("/webhooks/api/events/{id}/replay/", "POST"),
        ("/webhooks/api/sources/", "GET"),
        ("/webhooks/api/sources/{name}/pause/", "POST"),
        ("/webhooks/api/sources/{name}/resume/", "POST"),
        ("/webhooks/api/workflows/", "GET"),
        ("/webhooks/api/workflows/{name}/pause/", "POST"),
        ("/webhooks/api/workflows/{name}/resume/", "POST"),
        ("/webhooks/api/alerts/", "GET"),
        ("/webhooks/api/replays/", "POST"),
        ("/webhooks/api/replays/{id}/", "GET"),
        ("/webhooks/api/replays/{id}/cancel/", "POST"),
        ("/webhooks/health/", "GET"),
    ]:
        run_cases(
            server,
            schema[path][method],
            signed=False,
            auth=staff_session,
            refuses_some_valid=(path, method) in REFUSE_SOME_VALID,
        )


def test_metrics_conform_for_staff_and_refuse_everyone_else(server, staff_session):
    operation = load_schema(server, staff_session)["/webhooks/metrics/"]["GET"]
    assert set(run_cases(server, operation, signed=False, auth=staff_session)) == {200}
    assert set(run_cases(server, operation, signed=False)) == {401}
