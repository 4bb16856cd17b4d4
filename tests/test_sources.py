"""Sources in the database (contract §12): validation, encryption at rest, resolution beside
the settings sources, the per-process cache, checks, and what never shows the plaintext."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
import time
from datetime import UTC, timedelta
from io import StringIO
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.views.debug import ExceptionReporter
from rest_framework.test import APIClient

from tests.conftest import envelope, sign
from tests.processes import STREAK, WITHIN, settled
from webhooks_app import alerts, checks, crypto, ordering, services, sources, tasks
from webhooks_app.checks import message
from webhooks_app.models import (
    EventStatus,
    SourceVersion,
    WebhookEvent,
    WebhookSource,
    WebhookSourceSecret,
)
from webhooks_app.testing import deliver

pytestmark = pytest.mark.django_db

SECRET = "acme-secret-0123456789-abcdefghijklmnop"
OTHER = "acme-other-secret-0123456789-qrstuvwxyz"
KEY_OLD = "old-encryption-key-0123456789-abcdefghij"
KEY_NEW = "new-encryption-key-0123456789-klmnopqrst"
URL = "/webhooks/acme/"
DB = ["default"]


def make_source(name: str = "acme", secret: str | None = SECRET, **fields: Any) -> WebhookSource:
    fields = {"scheme": "generic", "routes": {}, "options": {}, "enabled": True, **fields}
    source = WebhookSource.objects.create(name=name, **fields)
    if secret is not None:
        source.add_secret(secret, label="first")
    return source


def post(client, body: bytes, secret: str = SECRET, url: str = URL):
    return client.post(
        url, body, content_type="application/json", HTTP_X_WEBHOOK_SIGNATURE=sign(body, secret)
    )


def webhooks(**extra: Any) -> dict[str, Any]:
    return {**settings.WEBHOOKS, **extra}


# -- validation: every bad input is refused with the field named, and nothing is saved -------


BAD_SOURCES: dict[str, tuple[dict[str, Any], str, str]] = {
    "a space in the name": ({"name": "my source"}, "name", "slug"),
    "a slash in the name": ({"name": "a/b"}, "name", "slug"),
    "an empty name": ({"name": ""}, "name", "blank"),
    "a name too long": ({"name": "a" * 65}, "name", "at most 64"),
    "the api route": ({"name": "api"}, "name", "the app's own URLs"),
    "the health route": ({"name": "health"}, "name", "the app's own URLs"),
    "the metrics route": ({"name": "Metrics"}, "name", "the app's own URLs"),
    "an unknown scheme": ({"scheme": "nope"}, "scheme", "'nope' is not a signature scheme"),
    "routes not an object": ({"routes": ["record"]}, "routes", "an object of event type"),
    "an empty list of routes": ({"routes": []}, "routes", "an object of event type"),
    "a route to no name": ({"routes": {"push": 5}}, "routes", "'push': the workflow is a name"),
    "an empty event type": ({"routes": {"": "record"}}, "routes", "an event type is a string"),
    "a route to an unknown workflow": (
        {"routes": {"push": "missing"}}, "routes", "not a registered workflow",
    ),
    "options not an object": ({"options": "ORDER_KEY"}, "options", "Options are an object"),
    "an unknown option": ({"options": {"ORDER": "x"}}, "options", "'ORDER' is not a source option"),
    "secrets among the options": (
        {"options": {"SECRETS": [SECRET]}}, "options", "SECRETS: not an option",
    ),
    "a tolerance as text": (
        {"options": {"TIMESTAMP_TOLERANCE": "300"}}, "options", "TIMESTAMP_TOLERANCE: a whole",
    ),
    "a tolerance of True": (
        {"options": {"TIMESTAMP_TOLERANCE": True}}, "options", "TIMESTAMP_TOLERANCE: a whole",
    ),
    "a zero body limit": ({"options": {"MAX_BODY_BYTES": 0}}, "options", "MAX_BODY_BYTES: a whole"),
    "a relative public URL": (
        {"options": {"PUBLIC_URL": "/webhooks/acme/"}}, "options", "PUBLIC_URL: an absolute",
    ),
    "an order key function that does not load": (
        {"options": {"ORDER_KEY": "no.such.module:key"}}, "options", "ORDER_KEY: 'no.such",
    ),
    "an empty order key": ({"options": {"ORDER_KEY": ""}}, "options", "ORDER_KEY: a non-empty"),
    "a verify token for a scheme without handshake": (
        {"options": {"VERIFY_TOKEN": "t" * 30}}, "options", "VERIFY_TOKEN: the generic scheme",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_SOURCES)
def test_a_bad_source_is_refused_naming_the_field(case):
    fields, field, text = BAD_SOURCES[case]
    with pytest.raises(ValidationError) as refused:
        WebhookSource.objects.create(**{"name": "acme", "scheme": "generic", **fields})
    assert field in refused.value.message_dict, refused.value.message_dict
    assert any(text in m for m in refused.value.message_dict[field]), refused.value.message_dict
    assert WebhookSource.objects.count() == 0


def test_a_second_source_of_one_name_is_refused():
    make_source()
    with pytest.raises(ValidationError) as refused:
        WebhookSource.objects.create(name="acme", scheme="github")
    assert list(refused.value.message_dict) == ["name"]
    assert WebhookSource.objects.count() == 1


def test_an_edit_is_validated_too():
    source = make_source()
    source.routes = {"push": "missing"}
    with pytest.raises(ValidationError):
        source.save()
    source.refresh_from_db()
    assert source.routes == {}


def test_every_option_a_settings_source_takes_is_accepted():
    source = WebhookSource.objects.create(
        name="meta",
        scheme="whatsapp",
        routes={"messages": "record", "*": "record"},
        options={
            "ORDER_KEY": "entry.0.id",
            "TIMESTAMP_TOLERANCE": 60,
            "MAX_BODY_BYTES": 2048,
            "VERIFY_TOKEN": "a-verify-token",
            "PUBLIC_URL": "https://hooks.example.com/webhooks/meta/",
        },
    )
    config = sources.get_source(source.name)
    assert (config.scheme, config.order_key, config.timestamp_tolerance) == (
        "whatsapp",
        "entry.0.id",
        60,
    )
    assert (config.max_body_bytes, config.verify_token) == (2048, "a-verify-token")
    assert config.public_url == "https://hooks.example.com/webhooks/meta/"
    assert config.stored and config.route("messages") == "record"


BAD_SECRETS: dict[str, tuple[dict[str, Any], str, str]] = {
    "empty": ({"value": ""}, "value", "cannot be empty"),
    "not text": ({"value": None}, "value", "cannot be empty"),
    "too short": ({"value": "short-secret"}, "value", "shorter than 24 bytes"),
    "a trailing line break": ({"value": SECRET + "\n"}, "value", "starts or ends with a space"),
    "a control character": ({"value": SECRET[:10] + "\x00" + SECRET[10:]}, "value", "control"),
    "an end in the past": (
        {"value": SECRET, "not_after": timezone.now() - timedelta(seconds=1)},
        "not_after", "has passed",
    ),
    "an end without time zone": (
        {"value": SECRET, "not_after": timezone.now().replace(tzinfo=None)},
        "not_after", "time zone",
    ),
    "a label too long": ({"value": SECRET, "label": "x" * 101}, "label", "at most 100"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_SECRETS)
def test_a_bad_secret_is_refused_naming_the_field_and_never_quoting_it(case):
    source = make_source(secret=None)
    arguments, field, text = BAD_SECRETS[case]
    with pytest.raises(ValidationError) as refused:
        source.add_secret(**arguments)
    assert list(refused.value.message_dict) == [field]
    assert text in refused.value.message_dict[field][0]
    if isinstance(arguments["value"], str) and arguments["value"]:
        assert arguments["value"].strip() not in str(refused.value)
    assert WebhookSourceSecret.objects.count() == 0


# -- encryption at rest --------------------------------------------------------------------


def test_a_secret_is_stored_encrypted_and_round_trips():
    make_source()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {WebhookSourceSecret._meta.db_table}")
        raw = json.dumps(cursor.fetchall(), default=str)
    for form in (SECRET, SECRET.encode().hex(), base64.b64encode(SECRET.encode()).decode()):
        assert form not in raw
    assert hashlib.sha256(SECRET.encode()).hexdigest()[:8] not in raw
    stored = WebhookSourceSecret.objects.get()
    assert crypto.decrypt(stored.ciphertext) == SECRET
    assert stored.fingerprint == crypto.fingerprint(SECRET) and len(stored.fingerprint) == 8
    assert str(stored) == f"first ({stored.fingerprint})"


def test_the_fingerprint_is_keyed():
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=[KEY_OLD])):
        old = crypto.fingerprint(SECRET)
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=[KEY_NEW])):
        assert crypto.fingerprint(SECRET) != old


def test_the_default_key_derives_from_secret_key_and_its_fallbacks(client):
    with override_settings(SECRET_KEY="an-old-django-secret-key-" + "x" * 30):
        make_source()
    with override_settings(
        SECRET_KEY="a-new-django-secret-key-" + "y" * 30,
        SECRET_KEY_FALLBACKS=["an-old-django-secret-key-" + "x" * 30],
    ):
        assert post(client, envelope("record")).status_code == 202
        out = StringIO()
        call_command("reencrypt_webhook_secrets", stdout=out)
        assert out.getvalue() == "Re-encrypted 1 secret under the current key.\n"
    with override_settings(SECRET_KEY="a-new-django-secret-key-" + "y" * 30):
        assert post(client, envelope("record", "evt-2")).status_code == 202


def test_rotating_the_encryption_keys(client):
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=[KEY_OLD])):
        make_source()
        make_source("beta", OTHER)
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=[KEY_NEW, KEY_OLD])):
        assert post(client, envelope("record", "evt-1")).status_code == 202  # old still works
        out = StringIO()
        call_command("reencrypt_webhook_secrets", stdout=out)
        assert out.getvalue() == "Re-encrypted 2 secrets under the current key.\n"
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=[KEY_NEW])):
        assert post(client, envelope("record", "evt-2")).status_code == 202
        assert (
            post(client, envelope("record", "evt-3"), OTHER, "/webhooks/beta/").status_code == 202
        )


# -- resolution ----------------------------------------------------------------------------


def test_a_database_source_verifies_and_stores_deliveries(client):
    make_source()
    response = post(client, envelope("record", "evt-1", n=1))
    assert response.status_code == 202, response.content
    event = WebhookEvent.objects.get()
    assert (event.source, event.webhook_id, event.workflow_name) == ("acme", "evt-1", "record")
    wrong = post(client, envelope("record", "evt-2"), OTHER)
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_signature"


def test_testing_helpers_sign_with_the_newest_secret(client):
    source = make_source(scheme="github", routes={"push": "record"})
    source.add_secret(OTHER, label="newer")
    assert deliver(client, "acme", {"ref": "main"}, event_type="push").status_code == 202
    assert sources.get_source("acme").secrets == (OTHER, SECRET)


def test_two_secrets_verify_at_once(client):
    make_source().add_secret(OTHER)
    assert post(client, envelope("record", "evt-1"), SECRET).status_code == 202
    assert post(client, envelope("record", "evt-2"), OTHER).status_code == 202


def test_a_secret_past_its_not_after_is_refused_at_delivery_time(client):
    source = make_source()
    source.add_secret(OTHER, not_after=timezone.now() + timedelta(seconds=1))
    assert post(client, envelope("record", "evt-1"), OTHER).status_code == 202  # now cached
    time.sleep(1.1)
    refused = post(client, envelope("record", "evt-2"), OTHER)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_signature"
    assert post(client, envelope("record", "evt-3"), SECRET).status_code == 202


def test_a_source_whose_secrets_all_ended_fails_closed(client):
    make_source(secret=None).add_secret(SECRET, not_after=timezone.now() + timedelta(seconds=1))
    time.sleep(1.1)
    response = post(client, envelope("record"))
    assert response.status_code == 503 and response.json() == {
        "error": "not_configured",
        "detail": "Add a secret to webhook source 'acme': it has none that is valid.",
    }
    assert WebhookEvent.objects.count() == 0


def test_rotate_secret_adds_one_and_ends_the_others_after_the_grace(client):
    source = make_source()
    new = source.rotate_secret(timedelta(hours=1))
    assert len(new) >= 40 and new not in repr(list(source.secrets.all()))
    old, rotated = source.secrets.order_by("created_at", "pk")
    assert old.not_after is not None
    assert abs((old.not_after - timezone.now()) - timedelta(hours=1)) < timedelta(seconds=5)
    assert rotated.not_after is None and rotated.label.startswith("rotated ")
    assert post(client, envelope("record", "evt-1"), SECRET).status_code == 202
    assert post(client, envelope("record", "evt-2"), new).status_code == 202
    source.rotate_secret(timedelta(0))
    assert post(client, envelope("record", "evt-3"), new).status_code == 401
    with pytest.raises(ValidationError) as refused:
        source.rotate_secret(timedelta(seconds=-1))
    assert list(refused.value.message_dict) == ["grace"]


def test_a_standard_source_rotates_to_a_whsec_key():
    assert make_source(scheme="standard").rotate_secret(timedelta(0)).startswith("whsec_")


def test_a_settings_source_of_the_same_name_wins(client):
    WebhookSource.objects.create(name="generic", scheme="generic").add_secret(OTHER)
    url = "/webhooks/generic/"
    assert post(client, envelope("record", "evt-1"), OTHER, url).status_code == 401
    assert post(client, envelope("record", "evt-2"), settings.SECRET_A, url).status_code == 202
    assert sources.get_source("generic").stored is False
    assert checks.check_database_sources(databases=DB) == [message("W010", source="generic")]


def test_disabled_and_deleted_sources_are_unknown(client):
    source = make_source()
    source.enabled = False
    source.save()
    refused = post(client, envelope("record", "evt-1"))
    assert refused.status_code == 404 and refused.json()["error"] == "unknown_source"
    source.enabled = True
    source.save()
    assert post(client, envelope("record", "evt-2")).status_code == 202
    source.delete()
    assert post(client, envelope("record", "evt-3")).status_code == 404
    assert WebhookSourceSecret.objects.count() == 0


def test_edits_of_routes_apply(client):
    source = make_source(scheme="github", routes={"push": "record"})
    assert deliver(client, "acme", {"ref": "a"}, event_type="push").status_code == 202
    source.routes = {"push": "fail"}
    source.save()
    assert deliver(client, "acme", {"ref": "b"}, event_type="push").status_code == 202
    source.routes = {}
    source.save()
    ignored = deliver(client, "acme", {"ref": "c"}, event_type="push")
    assert ignored.status_code == 200 and ignored.json()["status"] == "ignored"
    workflows = WebhookEvent.objects.order_by("pk").values_list("workflow_name", flat=True)
    assert list(workflows) == ["record", "fail", ""]


def test_the_options_of_a_database_source_apply(client):
    make_source(options={"MAX_BODY_BYTES": 100})
    response = post(client, envelope("record", "evt-1", padding="x" * 200))
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


# -- the per-process cache -----------------------------------------------------------------


def test_no_query_per_delivery_in_the_steady_state():
    make_source()
    assert sources.get_source("acme").secrets == (SECRET,)
    with CaptureQueriesContext(connection) as queries:
        for _ in range(50):
            assert sources.get_source("acme") is not None
            assert sources.get_source("nobody") is None
    assert len(queries) == 0


def test_a_change_by_another_process_is_seen_after_the_refresh_interval(monkeypatch):
    source = make_source()
    assert sources.get_source("acme").routes == {}
    # What another process's save does here: the row and the stamp change, this process's
    # cache is not told (QuerySet.update() sends no signal).
    WebhookSource.objects.filter(pk=source.pk).update(routes={"*": "record"})
    SourceVersion.objects.update(stamp="another-process")
    assert sources.get_source("acme").routes == {}  # still the cached copy
    monkeypatch.setattr(sources, "_checked_at", time.monotonic() - sources.REFRESH_SECONDS)
    with CaptureQueriesContext(connection) as queries:
        assert sources.get_source("acme").routes == {"*": "record"}
    assert len(queries) == 3  # the stamp, the sources, their secrets
    monkeypatch.setattr(sources, "_checked_at", time.monotonic() - sources.REFRESH_SECONDS)
    with CaptureQueriesContext(connection) as queries:
        assert sources.get_source("acme").routes == {"*": "record"}
    assert len(queries) == 1  # the stamp alone: unchanged, nothing reloaded


def test_a_process_that_cannot_read_the_sources_answers_503(client, monkeypatch):
    make_source()
    sources.forget()

    def unavailable() -> None:
        from django.db import OperationalError

        raise OperationalError("the database is gone")

    monkeypatch.setattr(sources, "_read_stamp", unavailable)
    response = post(client, envelope("record"))
    assert response.status_code == 503 and response.json()["error"] == "unavailable"
    assert post(client, envelope("record"), url="/webhooks/generic/").status_code != 503


@pytest.mark.django_db(transaction=True)
def test_the_async_lookup_reads_the_database_in_a_thread():
    import asyncio

    from asgiref.sync import sync_to_async
    from django.db import connections

    make_source()
    sources.forget()

    async def lookups() -> None:
        try:
            assert (await sources.aget_source("acme")).secrets == (SECRET,)
            assert (await sources.aget_source("generic")).stored is False
            assert await sources.aget_source("nobody") is None
        finally:  # the connection of the thread the lookup ran in
            await sync_to_async(connections.close_all)()

    asyncio.run(lookups())


# -- undecryptable secrets -----------------------------------------------------------------


def test_an_undecryptable_secret_is_skipped_logged_once_and_reported(client, caplog):
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=[KEY_OLD])):
        make_source()
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=[KEY_NEW])):
        WebhookSource.objects.get(name="acme").add_secret(OTHER, label="readable")
        with caplog.at_level(logging.ERROR, logger="webhooks_app"):
            refused = post(client, envelope("record", "evt-1"), SECRET)
            assert refused.status_code == 401
            assert post(client, envelope("record", "evt-2"), OTHER).status_code == 202
        fingerprint = WebhookSourceSecret.objects.get(label="first").fingerprint
        logged = [r.getMessage() for r in caplog.records if "cannot be decrypted" in r.getMessage()]
        assert logged == [
            f"Secret first ({fingerprint}) of webhook source acme cannot be decrypted with any "
            "key in WEBHOOKS['ENCRYPTION_KEYS']: it is skipped (check webhooks_app.E030)."
        ]
        assert checks.check_database_sources(databases=DB) == [
            message("E030", source="acme", secrets=f"first ({fingerprint})")
        ]
        WebhookSourceSecret.objects.get(label="readable").delete()
        response = post(client, envelope("record", "evt-3"), SECRET)
        assert response.status_code == 503 and response.json()["error"] == "not_configured"
        with pytest.raises(CommandError, match="1 secret"):
            call_command("reencrypt_webhook_secrets", stdout=StringIO())


# -- what never shows the plaintext --------------------------------------------------------


def test_the_plaintext_is_not_in_reprs_logs_or_the_api(client, caplog):
    with caplog.at_level(logging.DEBUG):
        source = make_source()
        post(client, envelope("record", "evt-1"))
        post(client, envelope("record", "evt-2"), OTHER)
        checks.check_database_sources(databases=DB)
    config = sources.get_source("acme")
    shown = [
        repr(source), str(source), repr(source.secrets.get()), repr(config),
        repr(sources._stored()), caplog.text,
    ]  # fmt: skip
    user = User.objects.create_user("staff", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    api = APIClient()
    api.force_authenticate(user)
    listed = api.get("/webhooks/api/sources/")
    assert listed.status_code == 200 and "acme" in [row["name"] for row in listed.json()]
    shown.append(listed.content.decode())
    for text in shown:
        assert SECRET not in text


def report_of(call: Any, *, debug: bool = False) -> str:
    """Django's error report (the page, as mailed to ADMINS) of what ``call`` raised, from
    the frames below this one and the lambda (this test's frames hold no plaintext)."""
    try:
        call()
    except Exception:
        exc_type, exc, tb = sys.exc_info()
    with override_settings(DEBUG=debug):
        reporter = ExceptionReporter(None, exc_type, exc, tb.tb_next.tb_next)
        return reporter.get_traceback_html()


def test_an_error_report_hides_the_plaintext(monkeypatch):
    source = make_source(secret=None)
    with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=["too short"])):
        add = lambda: source.add_secret(SECRET)  # noqa: E731
        assert SECRET in report_of(add, debug=True)  # the report shows frame variables
        report = report_of(add)
    assert "add_secret" in report and "ImproperlyConfigured" in report
    assert SECRET not in report
    source.add_secret(SECRET)
    sources.forget()
    assert sources.webhook_settings.sources  # built before the loader is broken below

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug while loading")

    monkeypatch.setattr(sources.webhook_settings, "build_source", crash)
    load = lambda: sources.get_source("acme")  # noqa: E731
    assert SECRET in report_of(load, debug=True)
    sources.forget()
    report = report_of(load)
    assert "_load" in report and "a bug while loading" in report
    assert SECRET not in report


# -- the API, the commands and pausing -----------------------------------------------------


def test_a_database_source_is_listed_and_paused_like_any_other():
    make_source()
    assert "acme" in services.known_names("source")
    services.pause("source", "acme", by="test")
    event = WebhookEvent.objects.create(source="acme", webhook_id="e1", workflow_name="record")
    assert tasks.process_event(event.pk).startswith("skipped")
    assert services.resume("source", "acme") == 1
    event.refresh_from_db()
    assert event.status in (EventStatus.PENDING, EventStatus.SUCCEEDED)
    (state,) = [c for c in services.controls("source") if c.name == "acme"]
    assert state.paused is False


# -- checks --------------------------------------------------------------------------------


def test_the_database_checks_run_only_with_databases():
    make_source(secret=None)
    assert checks.check_database_sources() == []
    assert checks.check_database_sources(databases=DB) == [message("W012", source="acme")]
    assert checks.check_stored_secrets_for_deployment() == []
    assert checks.check_stored_secrets_for_deployment(databases=DB) == [
        message("E032", source="acme")
    ]
    assert checks.check_secrets_for_deployment(databases=DB) == []  # the settings sources'
    assert checks.missing_secret_errors() == [message("E032", source="acme")]  # the dashboard


def test_secrets_ending_within_seven_days_are_listed():
    source = make_source(secret=None)
    ends = timezone.now() + timedelta(days=6, hours=23)
    soon = source.add_secret(SECRET, not_after=ends, label="old")
    source.add_secret(OTHER, not_after=timezone.now() + timedelta(days=8), label="later")
    assert checks.check_database_sources(databases=DB) == [
        message(
            "W011",
            secret=soon,
            source="acme",
            not_after=f"{ends.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
            days=7,
        )
    ]


def test_a_route_to_a_workflow_that_went_away_is_reported(monkeypatch):
    source = make_source(routes={"push": "record"})
    from webhooks_app import registry

    monkeypatch.setattr(registry, "is_registered", lambda name: name != "record")
    sources.forget()
    assert checks.check_database_sources(databases=DB) == [
        message("E002", source=source.name, event="push", workflow="record")
    ]


def order_key_of(payload: dict[str, Any], event_type: str) -> str:
    return str(payload.get("customer"))


def test_an_order_key_function_that_went_away_is_reported_as_the_database_option(monkeypatch):
    source = make_source(options={"ORDER_KEY": "tests.test_sources:order_key_of"})
    monkeypatch.delitem(globals(), "order_key_of")  # a deploy removed it: a new process
    ordering.load_function.cache_clear()
    sources.forget()
    error = "module 'tests.test_sources' has no attribute 'order_key_of'"
    assert checks.check_database_sources(databases=DB) == [
        message(
            "E010",
            setting=f"The ORDER_KEY option of the database source {source.name!r}",
            spec="tests.test_sources:order_key_of",
            error=error,
        )
    ]


def test_unusable_encryption_keys_are_an_error():
    assert checks.check_encryption_keys() == []
    for keys, problem in [
        ("a-single-string-that-is-long-enough-0123", "is not a list"),
        (["short"], "[0] is not a string of at least 32 characters"),
    ]:
        with override_settings(WEBHOOKS=webhooks(ENCRYPTION_KEYS=keys)):
            assert checks.check_encryption_keys() == [
                message("E031", problem=problem, min_length=32)
            ]


def test_an_alert_rule_may_watch_a_database_source():
    make_source()
    rule = {"NAME": "quiet", "WHEN": "silence", "SOURCE": "acme", "WINDOW": 60}
    typo = {"NAME": "typo", "WHEN": "silence", "SOURCE": "acmee", "WINDOW": 60}
    with override_settings(WEBHOOKS=webhooks(ALERTS=[rule, typo])):
        found = checks.check_alert_sources(databases=DB)
        assert [m.id for m in found] == ["webhooks_app.E020"] and "'acmee'" in found[0].msg
        assert [m.id for m in checks.check_alert_sources()] == []  # no database: not judged
        assert [m.id for m in checks.check_alerts(databases=DB)] == []  # the static rules'
        assert [r.name for r in alerts.parse_rules()[0]] == ["quiet"]


def test_the_new_check_messages():
    assert message("W010", source="generic").msg == (
        "Webhook source 'generic' is configured in WEBHOOKS['SOURCES'] and in the database: the "
        "settings one is served, the database one is ignored."
    )
    assert message("E032", source="acme").hint == (
        "Add one: the admin's Add secret, or WebhookSource.objects.get(name='acme')"
        ".add_secret(value). A secret past its not_after, or one that no key decrypts (E030), "
        "does not count."
    )
    assert message("E030", source="acme", secrets="first (0123abcd)").msg == (
        "Webhook source 'acme' has secrets that no key in WEBHOOKS['ENCRYPTION_KEYS'] decrypts "
        "(first (0123abcd)): they are skipped, and deliveries signed with them are refused."
    )


# -- across processes: a real gunicorn with 2 workers ---------------------------------------


@pytest.mark.process
def test_every_worker_serves_a_change_within_five_seconds(server):
    from webhooks_app.testing import signed_request

    counter = iter(range(10**6))

    def push() -> tuple[bytes, dict[str, str]]:
        return signed_request("acme", {"ref": f"r{next(counter)}"}, event_type="push")

    def forged() -> tuple[bytes, dict[str, str]]:  # the source is unknown before its signature
        return envelope("record"), {"Content-Type": "application/json"}

    unknown = lambda status, body: status == 404  # noqa: E731
    accepted = lambda status, body: status == 202  # noqa: E731
    github = {"scheme": "github", "routes": {"push": "record"}}
    # Both workers load their copy of the database sources, without acme.
    make_source("other", **github)
    for _ in range(STREAK):
        assert server.request("POST", "/webhooks/acme/", *forged())[0] == 404
    source = make_source(**github)
    assert settled(server, accepted, push) < WITHIN
    assert set(WebhookEvent.objects.values_list("workflow_name", flat=True)) == {"record"}

    source.routes = {"push": "fail"}
    source.save()
    WebhookEvent.objects.all().delete()
    routed = lambda status, body: (  # noqa: E731
        status == 202 and WebhookEvent.objects.get(pk=body["event_id"]).workflow_name == "fail"
    )
    assert settled(server, routed, push) < WITHIN

    source.enabled = False
    source.save()
    assert settled(server, unknown, forged) < WITHIN
    source.enabled = True
    source.save()
    assert settled(server, accepted, push) < WITHIN
    source.delete()
    assert settled(server, unknown, forged) < WITHIN


def test_the_reserved_names_are_every_fixed_first_segment_of_the_urlconf():
    from webhooks_app import source_validation, urls

    fixed = {
        str(pattern.pattern).split("/", 1)[0]
        for pattern in urls.urlpatterns
        if not str(pattern.pattern).startswith(("<", "^<"))
    }
    assert {segment.removeprefix("^") for segment in fixed} == source_validation.RESERVED_NAMES
