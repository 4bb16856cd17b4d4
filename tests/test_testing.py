"""webhooks_app.testing (contract §13): for every built-in scheme, a signed sample delivered through
the test client and through a real gunicorn is accepted and runs its workflow in this process;
the samples have the providers' shapes; bad inputs are clear errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tests.processes import Server, running, subprocess_env
from tests.settings_providers import BASE_WEBHOOKS, PROVIDER_SOURCES, SOURCE_OF_SCHEME
from tests.settings_providers import WEBHOOKS as PROVIDER_WEBHOOKS
from tests.testapp.models import Execution
from webhooks_app import services
from webhooks_app.conf import webhook_settings
from webhooks_app.exceptions import InvalidSignature, MissingSignature
from webhooks_app.models import EventStatus, WebhookEvent
from webhooks_app.schemes import Delivery, InboundRequest, Scheme, builtin_scheme_names, get_scheme
from webhooks_app.schemes.base import parse_json_object
from webhooks_app.schemes.generic import GenericScheme
from webhooks_app.testing import (
    CONVENTIONS,
    deliver,
    run_events,
    sample_event_types,
    sample_payload,
    signed_request,
)

#: Every built-in scheme's source, plus GitLab's signing-token mode.
SOURCES = sorted({*SOURCE_OF_SCHEME.values(), "gitlab_signed"})
SCHEME_OF = {name: options["SCHEME"] for name, options in PROVIDER_WEBHOOKS["SOURCES"].items()}
#: The workflow each source's sample runs: the generic sample names the demo project's own.
WORKFLOW_OF = {source: "record" for source in SOURCES} | {"generic": "send_welcome_email"}


@pytest.fixture(autouse=True)
def _provider_sources() -> Iterator[None]:
    """The test settings plus a source per built-in scheme (tests/settings_providers.py)."""
    with override_settings(WEBHOOKS=PROVIDER_WEBHOOKS):
        yield


def verified(source: str, body: bytes, headers: dict[str, str], url: str = "") -> Delivery:
    """What the source's scheme makes of the request: verified with its secrets, then parsed."""
    config = webhook_settings.source(source)
    assert config is not None
    scheme = get_scheme(config.scheme)
    request = InboundRequest(
        body=body, headers={name.lower(): value for name, value in headers.items()}, url=url
    )
    scheme.verify(request, config.secrets, now=time.time(), tolerance=300)
    return scheme.parse(request)


def test_every_builtin_scheme_has_conventions_samples_and_a_test_source():
    assert set(CONVENTIONS) == set(builtin_scheme_names()) == set(SOURCE_OF_SCHEME)
    for scheme, conventions in CONVENTIONS.items():
        assert conventions.default_event_type in sample_event_types(scheme), scheme
        assert SCHEME_OF[SOURCE_OF_SCHEME[scheme]] == scheme


def test_the_samples_are_the_providers_events_the_task_names():
    assert {scheme: sample_event_types(scheme) for scheme in CONVENTIONS} == {
        "generic": ["send_welcome_email"],
        "github": ["push"],
        "gitlab": ["Push Hook"],
        "shopify": ["orders/create"],
        "slack": ["app_mention"],
        "standard": ["contact.created"],
        "stripe": ["invoice.paid"],
        "telegram": ["message"],
        "twilio": ["message"],
        "whatsapp": ["messages"],
    }


#: The fields each provider's documentation shows at the top of the event (a subset).
DOCUMENTED_FIELDS = {
    "generic": {"workflow_name", "inputs", "webhook_id"},
    "standard": {"type", "timestamp", "data"},
    "github": {"ref", "before", "after", "repository", "pusher", "sender", "created", "deleted",
               "forced", "base_ref", "compare", "commits", "head_commit"},
    "gitlab": {"object_kind", "event_name", "before", "after", "ref", "checkout_sha", "user_id",
               "project_id", "project", "commits", "total_commits_count", "repository"},
    "shopify": {"id", "admin_graphql_api_id", "email", "created_at", "currency", "total_price",
                "financial_status", "name", "order_number", "customer", "line_items", "token"},
    "stripe": {"id", "object", "api_version", "created", "data", "livemode", "pending_webhooks",
               "request", "type"},
    "slack": {"token", "team_id", "api_app_id", "event", "type", "event_id", "event_time",
              "authorizations"},
    "telegram": {"update_id", "message"},
    "twilio": {"MessageSid", "SmsSid", "AccountSid", "MessagingServiceSid", "From", "To", "Body",
               "NumMedia", "NumSegments", "SmsStatus", "ApiVersion"},
    "whatsapp": {"object", "entry"},
}  # fmt: skip


def test_each_sample_has_the_fields_its_providers_documentation_shows():
    for scheme, fields in DOCUMENTED_FIELDS.items():
        [event_type] = sample_event_types(scheme)
        assert fields <= set(sample_payload(scheme, event_type)), scheme
    invoice = sample_payload("stripe", "invoice.paid")["data"]["object"]
    assert (invoice["object"], invoice["status"], invoice["paid"]) == ("invoice", "paid", True)
    whatsapp = sample_payload("whatsapp", "messages")
    assert whatsapp["object"] == "whatsapp_business_account"
    assert whatsapp["entry"][0]["changes"][0]["value"]["messages"][0]["type"] == "text"


@pytest.mark.parametrize("source", SOURCES)
def test_each_sample_verifies_and_parses_as_its_event_type(source):
    """Pure scheme check: the sample's event type is the one it is filed under."""
    scheme = SCHEME_OF[source]
    url = "https://hooks.example.com/twilio/"
    body, headers = signed_request(source, url=url)
    delivery = verified(source, body, headers, url if get_scheme(scheme).signs_url else "")
    assert delivery.event_type == CONVENTIONS[scheme].default_event_type
    assert delivery.webhook_id


@pytest.mark.django_db
@pytest.mark.parametrize("source", SOURCES)
def test_a_sample_delivered_through_the_test_client_runs_its_workflow(client, source):
    response = deliver(client, source)
    assert response.status_code == 202, response.content
    answer = response.json()
    assert answer["status"] == "accepted"
    [event] = run_events()
    assert (event.pk, event.source, event.webhook_id) == (
        answer["event_id"],
        source,
        answer["webhook_id"],
    )
    assert (event.status, event.workflow_name, event.attempts) == (
        EventStatus.SUCCEEDED,
        WORKFLOW_OF[source],
        1,
    )
    assert event.event_type == CONVENTIONS[SCHEME_OF[source]].default_event_type
    if WORKFLOW_OF[source] == "record":
        assert Execution.objects.filter(webhook_id=event.webhook_id).count() == 1
    assert run_events() == []  # nothing left that is due


@pytest.mark.django_db
@pytest.mark.parametrize("source", SOURCES)
def test_a_sample_is_a_new_delivery_unless_its_webhook_id_repeats(client, source):
    """Each call is the provider's next event; the same webhook_id is the same delivery, stored
    under that id wherever the provider carries it (a header or the body)."""
    first, second = deliver(client, source), deliver(client, source)
    assert (first.status_code, second.status_code) == (202, 202)
    assert first.json()["webhook_id"] != second.json()["webhook_id"]
    again = [deliver(client, source, webhook_id="424242") for _ in range(2)]
    assert [response.status_code for response in again] == [202, 200]
    assert again[1].json()["status"] == "duplicate"
    assert WebhookEvent.objects.filter(source=source, webhook_id="424242").count() == 1


@pytest.mark.parametrize(
    "source", [s for s in SOURCES if SCHEME_OF[s] not in ("telegram", "twilio")]
)
def test_event_type_is_put_where_the_provider_carries_it(source):
    scheme = SCHEME_OF[source]
    payload = sample_payload(scheme, CONVENTIONS[scheme].default_event_type)
    body, headers = signed_request(source, payload, event_type="custom.thing")
    assert verified(source, body, headers).event_type == "custom.thing"
    assert payload == sample_payload(scheme, CONVENTIONS[scheme].default_event_type)  # a copy


@pytest.mark.parametrize("source", ["telegram", "twilio"])
def test_event_type_of_a_payload_shaped_scheme_cannot_be_set(source):
    payload = sample_payload(SCHEME_OF[source], "message")
    with pytest.raises(ValueError, match="reads the event type from the payload's own shape"):
        signed_request(source, payload, event_type="edited_message")


def test_an_own_payload_is_sent_as_given_with_the_id_where_the_provider_puts_it():
    body, headers = signed_request("stripe", {"id": "evt_own", "type": "invoice.paid"})
    assert json.loads(body) == {"id": "evt_own", "type": "invoice.paid"}
    assert verified("stripe", body, headers).webhook_id == "evt_own"
    body, headers = signed_request("stripe", {"id": "evt_own"}, webhook_id="evt_other")
    assert json.loads(body) == {"id": "evt_other"}
    body, headers = signed_request("telegram", {"update_id": 1, "message": {}}, webhook_id="7")
    assert json.loads(body) == {"update_id": 7, "message": {}}
    with pytest.raises(ValueError, match="delivery id is an integer"):
        signed_request("telegram", {"update_id": 1}, webhook_id="seven")
    # A header id is always sent, a fresh one unless given.
    _, headers = signed_request("github", {"ref": "refs/heads/main"})
    assert headers["X-GitHub-Event"] == "push" and headers["X-GitHub-Delivery"]


@pytest.mark.django_db
def test_exact_bytes_are_sent_as_they_are(client):
    raw = b'{"ref":  "refs/heads/main"}'
    response = deliver(client, "github", body=raw, webhook_id="raw-1")
    assert response.status_code == 202, response.content
    [event] = run_events()
    assert (event.webhook_id, event.payload) == ("raw-1", {"ref": "refs/heads/main"})
    with pytest.raises(ValueError, match="reads the delivery id from the body"):
        signed_request("stripe", body=raw, webhook_id="evt_1")
    with pytest.raises(ValueError, match="reads the event type from the body"):
        signed_request("stripe", body=raw, event_type="invoice.paid")
    with pytest.raises(ValueError, match="not both"):
        signed_request("github", {"ref": "x"}, body=raw)


def test_twilio_signs_the_url_it_is_sent_to():
    url = "https://hooks.example.com/webhooks/twilio/"
    body, headers = signed_request("twilio", url=url)
    assert verified("twilio", body, headers, url).event_type == "message"
    with pytest.raises(InvalidSignature):
        verified("twilio", body, headers, "http://testserver/webhooks/twilio/")


@pytest.mark.django_db
def test_twilio_behind_a_public_url_is_signed_for_it(client):
    twilio = {**PROVIDER_SOURCES["twilio"], "PUBLIC_URL": "https://hooks.example.com/twilio/"}
    sources = {**PROVIDER_WEBHOOKS["SOURCES"], "twilio": twilio}
    with override_settings(WEBHOOKS={**PROVIDER_WEBHOOKS, "SOURCES": sources}):
        assert deliver(client, "twilio").status_code == 202


@pytest.mark.django_db
def test_run_events_runs_each_due_event_once_through_the_claim(client):
    """One attempt per call, as a worker would: a failure is retried by a later call once it is
    due (RETRY_BACKOFF is 0 in the test settings), then dead; a paused source waits."""
    failing = deliver(client, "generic", {"workflow_name": "fail", "inputs": {}}, webhook_id="f1")
    assert failing.status_code == 202
    services.pause("source", "stripe")
    assert deliver(client, "stripe").status_code == 202
    statuses = [[(e.source, e.status, e.attempts) for e in run_events()] for _ in range(3)]
    assert statuses == [
        [("generic", "failed", 1), ("stripe", "pending", 0)],
        [("generic", "failed", 2), ("stripe", "pending", 0)],
        [("generic", "dead", 3), ("stripe", "pending", 0)],
    ]
    services.resume("source", "stripe")
    assert [(e.source, e.status) for e in run_events()] == [("stripe", "succeeded")]


@pytest.mark.django_db
def test_run_events_leaves_a_retry_that_is_not_due_yet(client):
    with override_settings(WEBHOOKS={**PROVIDER_WEBHOOKS, "RETRY_BACKOFF": 3600}):
        deliver(client, "generic", {"workflow_name": "fail", "inputs": {}})
        [event] = run_events()
        assert event.status == EventStatus.FAILED
        assert run_events() == []


# A project's own scheme


class AcmeScheme(Scheme):
    """The README's example scheme, with the ``sign`` that makes it testable."""

    signature_headers = frozenset({"x-acme-signature"})
    stored_headers = frozenset({"x-acme-event"})
    _generic = GenericScheme()

    def verify(self, request, secrets, *, now, tolerance):
        header = request.header("x-acme-signature")
        if header is None:
            raise MissingSignature("Send X-Acme-Signature.")
        self._generic.verify(
            InboundRequest(request.body, {"x-webhook-signature": header}), secrets, now=now,
            tolerance=tolerance,
        )  # fmt: skip

    def parse(self, request):
        body = parse_json_object(request.body)
        return Delivery(body["id"], request.header("x-acme-event") or "", body)

    def sign(self, body, secret, *, webhook_id=None, timestamp=None):
        return {"X-Acme-Signature": self._generic.sign(body, secret)["X-Webhook-Signature"]}


class UnsignedScheme(AcmeScheme):
    sign = Scheme.sign  # what a scheme without a sign() of its own has


def own_schemes(**sources: dict[str, Any]) -> override_settings:
    schemes = {"acme": f"{__name__}.AcmeScheme", "unsigned": f"{__name__}.UnsignedScheme"}
    return override_settings(WEBHOOKS={**PROVIDER_WEBHOOKS, "SCHEMES": schemes, "SOURCES": sources})


@pytest.mark.django_db
def test_a_projects_own_scheme_that_signs_is_delivered_and_run(client):
    acme = {"SCHEME": "acme", "SECRETS": [settings.SECRET_A], "ROUTES": {"*": "record"}}
    with own_schemes(acme=acme):
        response = deliver(client, "acme", {"id": "acme-1", "amount": 3})
        assert response.status_code == 202, response.content
        [event] = run_events()
        assert (event.webhook_id, event.status, event.payload) == (
            "acme-1",
            EventStatus.SUCCEEDED,
            {"id": "acme-1", "amount": 3},
        )
        with pytest.raises(
            ValueError, match=r"^The 'acme' scheme has no built-in sample payloads\.$"
        ):
            signed_request("acme")
        with pytest.raises(ValueError, match="payload's own shape"):
            signed_request("acme", {"id": "acme-2"}, event_type="paid")


# Bad input


@pytest.mark.django_db  # a name no settings source has may be a database source
def test_an_unknown_source_names_the_known_ones():
    with override_settings(WEBHOOKS=BASE_WEBHOOKS), pytest.raises(ImproperlyConfigured) as e:
        signed_request("nope")
    assert str(e.value) == (
        "No webhook source 'nope' is configured. Known sources: generic, github, ordered."
    )


@pytest.mark.parametrize(
    ("scheme", "secrets", "message"),
    [
        (
            "stripe",
            [],
            "Source 'sender' has no secret: set WEBHOOK_SECRET_SENDER or WEBHOOK_SECRET_DEFAULT "
            "or WEBHOOKS['SOURCES']['sender']['SECRETS'].",
        ),
        (
            "unsigned",
            [settings.SECRET_A],
            "Source 'sender' uses the 'unsigned' scheme, which cannot sign requests: give "
            "UnsignedScheme a sign() method (see Scheme.sign).",
        ),
        (
            "nonesuch",
            [settings.SECRET_A],
            "Source 'sender' names the unknown scheme 'nonesuch' "
            "(manage.py check reports it as webhooks_app.E001).",
        ),
    ],
    ids=["no secret", "cannot sign", "unknown scheme"],
)
def test_a_source_that_cannot_be_signed_for_is_named_with_what_to_fix(scheme, secrets, message):
    with (
        own_schemes(sender={"SCHEME": scheme, "SECRETS": secrets}),
        pytest.raises(ImproperlyConfigured) as refused,
    ):
        signed_request("sender", {"id": "1"})
    assert str(refused.value) == message


def test_an_unknown_event_type_names_the_known_ones():
    with pytest.raises(ValueError) as e:
        signed_request("stripe", event_type="charge.refunded")
    assert str(e.value) == (
        "The 'stripe' scheme has no sample of event type 'charge.refunded'. "
        "Known event types: invoice.paid."
    )


def test_deliver_without_the_apps_urls_says_so(client):
    with (
        override_settings(ROOT_URLCONF="django.contrib.auth.urls"),
        pytest.raises(
            ImproperlyConfigured, match=r"^webhooks_app\.urls is not in this project's URLconf"
        ),
    ):
        deliver(client, "stripe")


# The docs' example


@pytest.mark.django_db
def test_docs_example_a_stripe_workflow_end_to_end_without_a_qcluster(client):
    response = deliver(client, "stripe", event_type="invoice.paid")
    assert response.status_code == 202
    [event] = run_events()  # the workflow ROUTES picks, here in this process
    assert event.status == "succeeded"
    assert event.result["echo"]["data"]["object"]["status"] == "paid"
    assert Execution.objects.filter(webhook_id=event.webhook_id, workflow="record").exists()


# A real server


@pytest.mark.process
def test_the_same_requests_through_a_real_gunicorn_are_accepted_and_run(transactional_db):
    """No test-client shortcut: the bytes and headers signed_request builds, sent over HTTP to
    gunicorn serving the same sources (Twilio signs the server's own URL)."""
    server = Server(env=subprocess_env(DJANGO_SETTINGS_MODULE="tests.settings_providers"))
    with running(server):
        for source in SOURCES:
            path = f"/webhooks/{source}/"
            body, headers = signed_request(source, url=f"http://127.0.0.1:{server.port}{path}")
            status, answer, _ = server.request("POST", path, body, headers)
            assert (status, answer["status"]) == (202, "accepted"), (source, answer)
    events = run_events()
    assert [event.source for event in events] == SOURCES
    assert {event.status for event in events} == {EventStatus.SUCCEEDED}
