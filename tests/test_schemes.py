"""The scheme registry: built-ins by module, a project's own schemes, and crash containment."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest
from django.conf import settings
from django.test import override_settings

from webhooks_app import checks
from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.schemes import (
    Delivery,
    InboundRequest,
    Scheme,
    builtin_scheme_names,
    get_scheme,
    register_scheme,
    scheme_names,
)
from webhooks_app.schemes.base import HmacHeaderScheme, parse_json_object

BUILTINS = {
    "generic",
    "standard",
    "stripe",
    "github",
    "slack",
    "shopify",
    "whatsapp",
    "telegram",
    "twilio",
    "gitlab",
}


class CrashingScheme(Scheme):
    """A project's buggy scheme: crashes in verify or content_key on one header, in parse on a
    body field."""

    def verify(self, request, secrets, *, now, tolerance):
        if request.header("x-crash") == "verify":
            raise KeyError("oops")

    def content_key(self, request):
        if request.header("x-crash") == "content_key":
            raise KeyError("oops")
        return super().content_key(request)

    def parse(self, request):
        body = parse_json_object(request.body)
        return Delivery(webhook_id=body["id"], event_type="", payload=body)


def test_every_contract_scheme_is_built_in():
    assert scheme_names() >= BUILTINS
    for name in BUILTINS:
        assert isinstance(get_scheme(name), Scheme)


def test_unknown_scheme_is_a_key_error():
    with pytest.raises(KeyError):
        get_scheme("nope")


@pytest.mark.django_db
@override_settings(
    WEBHOOKS={
        "SCHEMES": {"crashing": "tests.test_schemes.CrashingScheme"},
        "SOURCES": {
            "acme": {"SCHEME": "crashing", "SECRETS": ["s" * 30], "ROUTES": {"*": "record"}}
        },
    }
)
def test_a_project_scheme_from_settings_and_its_crashes_are_not_500(client, caplog):
    caplog.set_level(logging.ERROR, logger="webhooks_app")
    assert not [m for m in checks.check_sources() if m.id == "webhooks_app.E001"]

    def post(body, **h):
        return client.generic("POST", "/webhooks/acme/", body, CONTENT_TYPE="application/json", **h)

    assert post(b'{"id": "a1"}').status_code == 202
    crashed = post(b'{"id": "a2"}', HTTP_X_CRASH="verify")
    assert crashed.status_code == 401 and crashed.json()["error"] == "invalid_signature"
    crashed_key = post(b'{"id": "a3"}', HTTP_X_CRASH="content_key")
    assert crashed_key.status_code == 400 and crashed_key.json()["error"] == "invalid_payload"
    no_id = post(b'{"other": 1}')
    assert no_id.status_code == 400 and no_id.json()["error"] == "invalid_payload"
    assert "Traceback" not in no_id.content.decode()
    assert "crashed" in caplog.text  # logged for the scheme's author


def test_register_scheme_from_code():
    register_scheme("crashing-too", CrashingScheme)
    assert isinstance(get_scheme("crashing-too"), CrashingScheme)
    assert "crashing-too" in scheme_names()
    assert settings.WEBHOOKS  # the settings are untouched


class StampedScheme(HmacHeaderScheme):
    """A project's declared scheme: ``X-Stamped: t1=<hex HMAC of "{ts}.{body}">``."""

    signature_header = "X-Stamped"
    prefix = "t1="
    missing_detail = "Send X-Stamped."
    timestamp_header = "X-Stamped-At"
    id_header = "X-Stamped-Id"

    def signed_content(self, body, timestamp):
        return timestamp.encode() + b"." + body

    def parse(self, request):
        return Delivery(webhook_id=None, event_type="", payload=parse_json_object(request.body))


def test_a_declared_hmac_scheme_signs_verifies_and_never_stores_its_signature():
    scheme = StampedScheme()
    body, secrets = b'{"a": 1}', ["old-secret", "new-secret"]
    headers = scheme.sign(body, "new-secret", webhook_id="d-1", timestamp=1_000)
    digest = hmac.new(b"new-secret", b"1000." + body, hashlib.sha256).hexdigest()
    assert headers == {"X-Stamped": "t1=" + digest, "X-Stamped-At": "1000", "X-Stamped-Id": "d-1"}
    assert scheme.signature_headers == {"x-stamped"}  # not listed, yet never stored

    def verify(headers, now=1_100):
        request = InboundRequest(body, {name.lower(): value for name, value in headers.items()})
        scheme.verify(request, secrets, now=now, tolerance=300)

    verify(headers)
    verify({**headers, "X-Stamped": "T1=" + digest.upper()})  # prefix and hex in either case
    with pytest.raises(MissingSignature) as missing:
        verify({"X-Stamped-At": "1000"})
    assert missing.value.detail == "Send X-Stamped."
    with pytest.raises(InvalidSignature, match="X-Stamped-At is outside the tolerance window"):
        verify(headers, now=1_301)
    for forged in ({**headers, "X-Stamped-At": "1001"}, {**headers, "X-Stamped": digest}):
        with pytest.raises(InvalidSignature):
            verify(forged)


#: The schemes whose provider generates the secret (the admin says "paste it with Add secret");
#: for the others the admin generates it ("Rotate secret") and you paste it at the provider.
SECRET_FROM_PROVIDER = {"stripe", "slack", "shopify", "whatsapp", "twilio", "standard"}


@pytest.mark.parametrize("name", sorted(builtin_scheme_names()))
def test_every_built_in_scheme_has_a_recipe_the_admin_can_format(name):
    recipe = get_scheme(name).recipe
    assert recipe.count("{url}") == 1
    url = "https://x.example/webhooks/s/"
    assert url in recipe.format(url=url)  # also: no other placeholders to trip format()


def test_exactly_the_providers_that_generate_secrets_say_so():
    generating = {name for name in builtin_scheme_names() if get_scheme(name).secret_from_provider}
    assert generating == SECRET_FROM_PROVIDER
