from __future__ import annotations

import pytest
from django.conf import settings
from django.core import checks
from django.test import override_settings

from tests.conftest import envelope, sign
from webhooks_app import registry
from webhooks_app.conf import TOKEN_SCHEMES, env_secret_name, webhook_settings
from webhooks_app.exceptions import InvalidSignature
from webhooks_app.models import WebhookEvent
from webhooks_app.schemes import InboundRequest, builtin_scheme_names, get_scheme
from webhooks_app.schemes.base import SharedTokenScheme


def test_defaults_apply_for_missing_keys():
    with override_settings(WEBHOOKS={}):
        assert webhook_settings.MAX_BODY_BYTES == 1024 * 1024
        assert webhook_settings.MAX_ATTEMPTS == 5
        assert webhook_settings.RETENTION_DAYS == 30
        assert webhook_settings.REQUIRE_SIGNATURE is True
        assert list(webhook_settings.sources) == ["generic"]
        assert webhook_settings.source("generic").scheme == "generic"


def test_override_settings_is_seen_and_undone():
    with override_settings(WEBHOOKS={"MAX_ATTEMPTS": 9}):
        assert webhook_settings.MAX_ATTEMPTS == 9
    assert settings.WEBHOOKS["MAX_ATTEMPTS"] == webhook_settings.MAX_ATTEMPTS


def test_unknown_setting_is_an_attribute_error():
    with pytest.raises(AttributeError):
        webhook_settings.NOPE  # noqa: B018


def test_secret_precedence_settings_then_source_env_then_default_env(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET_DEFAULT", "from-default")
    with override_settings(
        WEBHOOKS={"SOURCES": {"a": {"SECRETS": ["configured"]}, "b": {}, "c": {}}}
    ):
        monkeypatch.setenv("WEBHOOK_SECRET_B", "from-b")
        webhook_settings.reload()
        assert webhook_settings.source("a").secrets == ("configured",)
        assert webhook_settings.source("b").secrets == ("from-b",)
        assert webhook_settings.source("c").secrets == ("from-default",)
        assert webhook_settings.source("b").secret_origin == "WEBHOOK_SECRET_B"


def test_empty_secrets_are_not_secrets(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET_GENERIC", "")
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {"SECRETS": ["", None]}}}):
        assert webhook_settings.source("generic").secrets == ()


def test_env_name_is_upper_case_with_underscores():
    assert env_secret_name("my-shop.eu") == "WEBHOOK_SECRET_MY_SHOP_EU"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("false", False), ("0", False), ("no", False), ("true", True), ("", True)],
)
def test_signature_switch_from_environment(monkeypatch, value, expected):
    monkeypatch.setenv("WEBHOOK_SIGNATURE_REQUIRED", value)
    with override_settings(WEBHOOKS={}):
        assert webhook_settings.REQUIRE_SIGNATURE is expected


def test_explicit_setting_beats_environment(monkeypatch):
    monkeypatch.setenv("WEBHOOK_SIGNATURE_REQUIRED", "false")
    with override_settings(WEBHOOKS={"REQUIRE_SIGNATURE": True}):
        assert webhook_settings.REQUIRE_SIGNATURE is True


def test_a_source_set_to_none_is_disabled():
    with override_settings(WEBHOOKS={"SOURCES": {"generic": None}}):
        assert webhook_settings.source("generic") is None


def test_per_source_overrides_and_routes():
    with override_settings(
        WEBHOOKS={
            "SOURCES": {
                "github": {
                    "SCHEME": "github", "SECRETS": "one", "MAX_BODY_BYTES": 25_000_000,
                    "TIMESTAMP_TOLERANCE": 60, "ROUTES": {"push": "deploy", "*": "log"},
                }
            }
        }
    ):  # fmt: skip
        github = webhook_settings.source("github")
        assert github.secrets == ("one",)
        assert github.max_body_bytes == 25_000_000
        assert github.timestamp_tolerance == 60
        assert github.route("push") == "deploy"
        assert github.route("issues") == "log"
        assert "one" not in repr(github)  # secrets never appear in reprs (logs, debug pages)


def test_secrets_setting_is_hidden_on_error_pages():
    from django.views.debug import SafeExceptionReporterFilter

    cleansed = SafeExceptionReporterFilter().get_safe_settings()["WEBHOOKS"]
    assert settings.SECRET_A not in str(cleansed)


TOKEN = "a-token-seen-on-the-wire-0123456789"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("source", "token_header", "body"),
    [
        ("telegram", "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN", b'{"update_id": 1, "message": {}}'),
        ("gitlab", "HTTP_X_GITLAB_TOKEN", b'{"object_kind": "push"}'),
    ],
)
def test_the_default_secret_is_never_a_token_schemes_secret(
    client, monkeypatch, source, token_header, body
):
    """The attack: the default was Telegram's token (sent in clear in a header) and so the
    generic source's HMAC key; whoever saw the token ran any workflow. Now a token scheme never
    takes the default: its source is not configured (503) until it gets a token of its own."""
    monkeypatch.setenv("WEBHOOK_SECRET_DEFAULT", TOKEN)
    sources = {"generic": {}, source: {"SCHEME": source, "ROUTES": {"*": "record"}}}
    with override_settings(WEBHOOKS={"SOURCES": sources}):
        assert webhook_settings.source(source).secrets == ()
        assert webhook_settings.source("generic").secrets == (TOKEN,)
        response = client.generic(
            "POST",
            f"/webhooks/{source}/",
            body,
            CONTENT_TYPE="application/json",
            HTTP_IDEMPOTENCY_KEY="delivery-1",
            **{token_header: TOKEN},
        )
        assert (response.status_code, response.json()["error"]) == (503, "not_configured")
        monkeypatch.setenv(env_secret_name(source), TOKEN + "-own")
        webhook_settings.reload()
        assert webhook_settings.source(source).secrets == (TOKEN + "-own",)
        assert webhook_settings.source(source).secret_origin == env_secret_name(source)
    assert not WebhookEvent.objects.exists()


def test_token_schemes_are_the_shared_token_scheme_classes():
    """conf names them (it imports nothing of the app); the classes are the truth."""
    assert {
        name for name in builtin_scheme_names() if isinstance(get_scheme(name), SharedTokenScheme)
    } == TOKEN_SCHEMES


@pytest.mark.django_db
def test_a_secret_that_is_not_utf8_fails_closed_instead_of_crashing(client, monkeypatch):
    """An environment variable holding bytes that are not UTF-8 reaches Python with lone
    surrogates, which no scheme can encode: found by fuzzing, it crashed the system checks and
    every delivery. It is not a secret: 503 not_configured, and W006 (--deploy: E003) says so."""
    monkeypatch.setenv("WEBHOOK_SECRET_GENERIC", "abc\udcff-not-utf8-0123456789abcdef")
    with override_settings(WEBHOOKS={"SOURCES": {"generic": {}}}):
        assert webhook_settings.source("generic").secrets == ()
        found = checks.run_checks(include_deployment_checks=True)
        assert sorted(m.id for m in found if m.id.startswith("webhooks_app.")) == [
            "webhooks_app.E003",
            "webhooks_app.W006",
        ]
        body = envelope()
        response = client.post(
            "/webhooks/generic/", body, "application/json", HTTP_X_WEBHOOK_SIGNATURE=sign(body)
        )
    assert (response.status_code, response.json()["error"]) == (503, "not_configured")
    assert not WebhookEvent.objects.exists()


def test_a_token_header_with_a_lone_surrogate_is_refused_not_a_crash():
    """Found by fuzzing: a scheme called directly with such a header raised UnicodeEncodeError."""
    request = InboundRequest(b"{}", {"x-telegram-bot-api-secret-token": "\ud800"})
    with pytest.raises(InvalidSignature):
        get_scheme("telegram").verify(request, ["s" * 30], now=0, tolerance=300)


def test_reload_and_override_settings_clear_every_cache_built_from_webhooks():
    """conf imports none of the caching modules: each clears itself on ``setting_changed``,
    which ``reload()`` sends too. Changed in place, ``WEBHOOKS`` is not announced: the stale
    values first show that each cache is real, then ``reload()`` must clear all of them."""
    configured = {
        "MAX_ATTEMPTS": 2,
        "SCHEMES": {"custom": "webhooks_app.schemes.github.GitHubScheme"},
        "WORKFLOWS": {"from_settings": "builtins.len"},
        "WORKFLOW_LIMITS": {"from_settings": {"CONCURRENCY": 2}},
    }

    def seen():
        return (
            webhook_settings.MAX_ATTEMPTS,
            type(get_scheme("custom")).__name__,
            registry.get_workflow("from_settings"),
            registry.limits("from_settings").concurrency,
        )

    with override_settings(WEBHOOKS=configured):
        assert seen() == (2, "GitHubScheme", len, 2)
        configured["MAX_ATTEMPTS"] = 3
        configured["SCHEMES"]["custom"] = "webhooks_app.schemes.slack.SlackScheme"
        configured["WORKFLOWS"]["from_settings"] = "builtins.repr"
        configured["WORKFLOW_LIMITS"]["from_settings"] = {"CONCURRENCY": 3}
        assert seen() == (2, "GitHubScheme", len, 2)
        webhook_settings.reload()
        assert seen() == (3, "SlackScheme", repr, 3)
    with pytest.raises(KeyError):
        get_scheme("custom")
    assert registry.get_workflow("from_settings") is None
    assert registry.limits("from_settings") == registry.NO_LIMITS
