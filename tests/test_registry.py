from __future__ import annotations

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from webhooks_app import registry, workflow
from webhooks_app.conf import parse_rate


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "_decorated", dict(registry._decorated))
    monkeypatch.setattr(registry, "_from_settings", {})


def test_autodiscovered_workflows_are_registered():
    # tests/testapp/workflows.py and project/workflows.py are imported by AppConfig.ready.
    assert {"record", "fail", "sleep", "log_event", "send_welcome_email"} <= set(
        registry.workflow_names()
    )
    assert registry.get_workflow("record").__module__ == "tests.testapp.workflows"


def test_a_second_registration_of_a_name_is_an_error(clean_registry):
    @workflow("twice")
    def first(inputs, event): ...

    with pytest.raises(ImproperlyConfigured, match="registered twice"):

        @workflow("twice")
        def second(inputs, event): ...


def test_the_same_function_registered_again_is_harmless(clean_registry):
    def func(inputs, event): ...

    workflow("same")(func)
    workflow("same")(func)
    assert registry.get_workflow("same") is func


def test_workflows_from_settings(clean_registry):
    with override_settings(WEBHOOKS={"WORKFLOWS": {"by_path": "tests.testapp.workflows.record"}}):
        from tests.testapp.workflows import record

        assert registry.is_registered("by_path")
        assert registry.get_workflow("by_path") is record
    assert registry.get_workflow("by_path") is None


def test_a_name_in_both_places_fails_at_start_up(clean_registry):
    with (
        override_settings(WEBHOOKS={"WORKFLOWS": {"record": "tests.testapp.workflows.record"}}),
        pytest.raises(ImproperlyConfigured, match="both with @workflow and in"),
    ):
        registry.autodiscover()


def test_empty_name_is_refused():
    with pytest.raises(ImproperlyConfigured):
        workflow("")


def test_decorator_limits_apply_and_settings_win_key_by_key():
    def handler(inputs, event):
        return None

    registry.workflow("decorated_limits", concurrency=2, rate="3/s")(handler)
    try:
        assert registry.limits("decorated_limits") == registry.Limits(
            concurrency=2, rate=parse_rate("3/s")
        )
        assert "decorated_limits" in registry.limited_workflows()
        limits = {"decorated_limits": {"RATE": "60/m"}}
        with override_settings(WEBHOOKS={**settings.WEBHOOKS, "WORKFLOW_LIMITS": limits}):
            assert registry.limits("decorated_limits") == registry.Limits(
                concurrency=2, rate=parse_rate("60/m")
            )
        assert registry.limits("record") == registry.NO_LIMITS
    finally:
        registry._decorated.pop("decorated_limits")
        registry._decorated_limits.pop("decorated_limits")
        registry.clear_settings_cache()
