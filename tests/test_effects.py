from __future__ import annotations

import pytest

from webhooks_app.effects import once
from webhooks_app.models import EventEffect, WebhookEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    return WebhookEvent.objects.create(source="generic", webhook_id="e", workflow_name="record")


def test_first_run_does_the_effect_later_runs_skip_it(event):
    done = []
    for _ in range(3):
        with once(event, "credit") as first:
            if first:
                done.append(1)
    assert done == [1]
    with once(event, "another-effect") as first:
        assert first


def test_a_failing_effect_is_done_again_by_the_retry(event):
    with pytest.raises(RuntimeError), once(event, "charge") as first:
        assert first
        raise RuntimeError("payment provider timed out")
    assert not EventEffect.objects.exists()
    with once(event, "charge") as first:
        assert first


def test_effects_go_with_their_event(event):
    with once(event):
        pass
    event.delete()
    assert not EventEffect.objects.exists()
