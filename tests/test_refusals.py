"""The refusal audit trail: every refusal counted, a flood logged in a few lines."""

from __future__ import annotations

import logging

import pytest

from tests.conftest import envelope, sign
from webhooks_app import refusals
from webhooks_app.exceptions import InvalidSignature, UnknownSource

pytestmark = pytest.mark.django_db


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "webhooks_app"]


def test_a_flood_of_forgeries_is_counted_exactly_and_logged_once(post_webhook, caplog):
    caplog.set_level(logging.INFO, logger="webhooks_app")
    forged = sign(envelope(), "not-the-secret")
    answers = {post_webhook(envelope(), signature=forged).status_code for _ in range(200)}
    assert answers == {401}
    assert refusal_lines(caplog) == [
        "Webhook refused: source=generic status=401 error=invalid_signature"
    ]
    assert refusals.totals() == {("generic", 401, "invalid_signature"): 200}


def test_the_next_line_after_the_interval_carries_the_count(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="webhooks_app")
    clock = [1000.0]
    monkeypatch.setattr(refusals.time, "monotonic", lambda: clock[0])
    for _ in range(5):
        refusals.record("generic", InvalidSignature())
    clock[0] += refusals.REPORT_INTERVAL
    refusals.record("generic", InvalidSignature())
    assert refusal_lines(caplog) == [
        "Webhook refused: source=generic status=401 error=invalid_signature",
        "Webhook refused: source=generic status=401 error=invalid_signature"
        " (5 times since the last line)",
    ]


def test_kinds_are_logged_apart_and_the_rest_is_flushed_at_exit(caplog):
    caplog.set_level(logging.INFO, logger="webhooks_app")
    for _ in range(3):
        refusals.record("generic", InvalidSignature())
        refusals.record("github", InvalidSignature())
    refusals.flush()
    assert sorted(refusal_lines(caplog)) == [
        "Webhook refused: source=generic status=401 error=invalid_signature",
        "Webhook refused: source=generic status=401 error=invalid_signature"
        " (2 times since the last line)",
        "Webhook refused: source=github status=401 error=invalid_signature",
        "Webhook refused: source=github status=401 error=invalid_signature"
        " (2 times since the last line)",
    ]
    refusals.flush()  # nothing left to say
    assert len(refusal_lines(caplog)) == 4


def test_invented_source_names_cannot_grow_the_counters(client, monkeypatch):
    monkeypatch.setattr(refusals, "MAX_KINDS", 10)
    for n in range(50):
        assert client.post(f"/webhooks/invented-{n}/", b"{}", "application/json").status_code == 404
    totals = refusals.totals()
    assert len(totals) == 10 + 1
    assert totals[(refusals.OTHER_SOURCE, 404, UnknownSource.error)] == 40
    assert sum(totals.values()) == 50
