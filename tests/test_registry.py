from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from webhooks_app import registry, workflow


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
