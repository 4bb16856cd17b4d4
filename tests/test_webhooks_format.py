from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import override_settings

from webhooks_app.models import WebhookEvent
from webhooks_app.templatetags.webhooks_format import human_duration, last_error, local_time


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "-"), (0, "< 1 ms"), (0.4, "< 1 ms"), (2.005, "2 ms"), (999.4, "999 ms"),
        (999.6, "1.0 s"), (1400, "1.4 s"), (59_960, "1.0 min"), (64_257, "1.1 min"),
        (1_068_000, "17.8 min"), (3_600_000, "1.0 h"), (86_400_000 * 3, "3.0 d"),
        (timedelta(microseconds=2005), "2 ms"), (timedelta(minutes=17, seconds=48), "17.8 min"),
    ],
)  # fmt: skip
def test_durations_read_in_the_unit_a_person_reads(value, shown):
    assert human_duration(value) == shown


@override_settings(TIME_ZONE="Asia/Kolkata")
def test_times_are_local_to_the_second_with_utc_in_the_title():
    expected = (
        '<time datetime="2026-03-01T23:59:30+00:00" title="2026-03-01 23:59:30 UTC">'
        "2026-03-02 05:29:30</time>"
    )
    assert local_time(datetime(2026, 3, 1, 23, 59, 30, 900000, tzinfo=UTC)) == expected
    assert local_time("2026-03-01T23:59:30.900000+00:00") == expected  # a history entry's
    assert local_time(None) == local_time("") == "-"


@pytest.mark.parametrize(
    ("error", "history", "line"),
    [
        ("", [{"error": "ValueError: stale"}], ""),  # succeeded since: no error to show
        ("Traceback (most recent call last):\n  File ...\nKeyError: 'x'\n\n", [], "KeyError: 'x'"),
        ("Traceback ...\nValueError: a\nb", [{"outcome": "failed", "error": "ValueError: a\\nb"}],
         "ValueError: a\\nb"),
        ("The worker running the last attempt stopped.", [{"outcome": "succeeded"}],
         "The worker running the last attempt stopped."),
    ],
)  # fmt: skip
def test_last_error_is_one_line_naming_the_exception(error, history, line):
    assert last_error(WebhookEvent(error=error, history=history)) == line
