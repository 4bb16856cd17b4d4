"""Payload search (contract §10): parsing, the same answers on SQLite and PostgreSQL as a pure
Python statement of the rule (a property test), hostile input never a 500, the API and the
admin, and the GIN index serving it on PostgreSQL."""

from __future__ import annotations

import json
import re
from decimal import Decimal, DecimalException
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.urls import reverse
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from webhooks_app import search
from webhooks_app.models import WebhookEvent
from webhooks_app.search import InvalidSearch, Term, matching

pytestmark = pytest.mark.django_db

EVENTS = "/webhooks/api/events/"
POSTGRES = connection.vendor == "postgresql"


def reference(payload: Any, path: tuple[str, ...], value: str) -> bool:
    """The rule, stated without the code under test: walk object keys; a string equal to the
    value; a JSON literal written as the value; a number equal as decimals to the value written
    as a JSON number below 2**63 in magnitude."""
    node = payload
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    if isinstance(node, str):
        return node == value
    if node is None or isinstance(node, bool):
        return value == json.dumps(node)
    if isinstance(node, int | float):
        if not re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", value):
            return False
        try:
            wanted = Decimal(value)
        except DecimalException:
            return False
        return abs(wanted) < 2**63 and Decimal(json.dumps(node)) == wanted
    return False


def found(*terms: tuple[str, str]) -> set[str]:
    condition = matching([Term.parse(path, value) for path, value in terms])
    return set(WebhookEvent.objects.filter(condition).values_list("webhook_id", flat=True))


def store(**payloads: Any) -> None:
    WebhookEvent.objects.bulk_create(
        WebhookEvent(source="generic", webhook_id=name, payload=payload)
        for name, payload in payloads.items()
    )


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "forms"),
    [
        ("cus_123", ("cus_123",)),
        ("42", ("42", 42)),
        ("-1", ("-1", -1)),
        ("42.0", ("42.0", 42)),
        ("0.1", ("0.1", 0.1)),
        ("1e3", ("1e3", 1000)),
        ("-0", ("-0", 0)),
        ("9223372036854775807", ("9223372036854775807", 2**63 - 1)),
        ("9223372036854775808", ("9223372036854775808",)),  # 2**63: a string only
        ("1e400", ("1e400",)),
        ("1e-400", ("1e-400",)),  # no float holds it, so no stored number equals it
        ("0.1000000000000000055511151231257827", ("0.1000000000000000055511151231257827",)),
        ("1e-" + "9" * 30, ("1e-" + "9" * 30,)),  # beyond Decimal's exponents
        ("042", ("042",)),
        ("+1", ("+1",)),
        (".5", (".5",)),
        ("1.", ("1.",)),
        ("\u0661", ("\u0661",)),  # an Arabic-Indic digit one is no JSON digit
        (" 42", (" 42",)),
        ("true", ("true", True)),
        ("false", ("false", False)),
        ("null", ("null", None)),
        ("True", ("True",)),
        ("", ("",)),
    ],
)
def test_a_value_matches_its_string_and_the_json_scalar_it_writes(value, forms):
    term = Term.parse("a", value)
    assert term.forms == forms
    assert [type(form) for form in term.forms] == [type(form) for form in forms]


def test_paths_are_keys_split_on_dots():
    assert Term.parse("data.object.customer", "x").path == ("data", "object", "customer")
    assert Term.parse("items.0", "x").path == ("items", "0")
    assert Term.parse("a__b.%_'\\", "x").path == ("a__b", "%_'\\")


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("", "x", "The path '' has an empty segment"),
        ("a..b", "x", "The path 'a..b' has an empty segment"),
        (".a", "x", "The path '.a' has an empty segment"),
        ("a.", "x", "The path 'a.' has an empty segment"),
        ('a"b', "x", "A path cannot hold a double quote."),
        ("a\x00", "x", "The path holds a NUL character."),
        ("a", "x\x00", "The value holds a NUL character."),
        ("a\ud800", "x", "The path is not valid Unicode."),
        ("a", "\udfff", "The value is not valid Unicode."),
        ("a" * 256, "x", "The path is longer than 255 characters."),
        ("a", "x" * 256, "The value is longer than 255 characters."),
    ],
)
def test_unsearchable_terms_are_refused(path, value, message):
    with pytest.raises(InvalidSearch) as refused:
        Term.parse(path, value)
    assert str(refused.value).startswith(message)


def test_at_most_ten_terms():
    matching([Term.parse("a", "1")] * 10)
    with pytest.raises(InvalidSearch, match="At most 10 payload terms"):
        matching([Term.parse("a", "1")] * 11)


# -- semantics, on the database the run uses -------------------------------------------------


def test_strings_numbers_literals_and_paths():
    store(
        s={"data": {"object": {"customer": "cus_123", "amount": 42}}},
        t={"data": {"object": {"customer": "cus_1234", "amount": 42.0}}},
        u={"data": {"object": {"customer": "cus_123", "amount": "42"}}},
        v={"data": {"object": {"amount": 42.5, "paid": True, "note": None, "flag": "true"}}},
        w={"items": [{"id": "x"}], "map": {"0": "zero"}, "list": ["zero"], "": {"k": "empty"}},
        x={"data": {"object": {"amount": -1, "big": 2**70, "f": 2.0**60}}},
    )
    assert found(("data.object.customer", "cus_123")) == {"s", "u"}
    assert found(("data.object.amount", "42")) == {"s", "t", "u"}
    assert found(("data.object.amount", "42.0")) == {"s", "t"}
    assert found(("data.object.amount", "4.2e1")) == {"s", "t"}
    assert found(("data.object.amount", "42.50")) == {"v"}
    assert found(("data.object.amount", "-1")) == {"x"}
    assert found(("data.object.paid", "true")) == {"v"}
    assert found(("data.object.flag", "true")) == {"v"}
    assert found(("data.object.paid", "1")) == set()  # a boolean is no number
    assert found(("data.object.note", "null")) == {"v"}
    assert found(("data.object.missing", "null")) == set()
    assert found(("data.object", "{}")) == set()  # objects never match
    # A digit is a key: arrays are never entered.
    assert found(("map.0", "zero")) == {"w"}
    assert found(("list.0", "zero")) == set()
    assert found(("items.0.id", "x")) == set()
    assert found(("items.id", "x")) == set()
    # Beyond 2**63 a number matches only as a string; 2**60 as a float is written 1.15...e+18.
    assert found(("data.object.big", str(2**70))) == set()
    assert found(("data.object.f", str(2**60))) == set()
    assert found(("data.object.f", "1152921504606847000")) == {"x"}
    # Terms are ANDed.
    assert found(("data.object.customer", "cus_123"), ("data.object.amount", "42")) == {"s", "u"}
    assert found(("data.object.customer", "cus_123"), ("data.object.amount", "42.0")) == {"s"}


def test_keys_that_sql_or_django_would_read():
    keys = ["a'b", "a__b", "a%b", "a_b", "$", "[0]", "*", "a\\b", "café", "😀", "a\nb", "-1", " "]
    store(**{f"k{i}": {key: {"v": "yes"}} for i, key in enumerate(keys)})
    for i, key in enumerate(keys):
        assert found((f"{key}.v", "yes")) == {f"k{i}"}, key
    assert found(("a%b.v", "y%")) == set()


# -- the property: SQLite and PostgreSQL both give the reference's answer ---------------------

KEYS = st.sampled_from(["a", "b", "0", "1", "é", "a b", "a'b", "a\\b", "a__b", "%", "-1", "$"])
#: PostgreSQL stores no NUL in JSON (ingest refuses it there too).
TEXT = st.text(st.characters(blacklist_characters="\x00"), max_size=6)
LEAVES = st.one_of(
    TEXT,
    st.sampled_from(["42", "42.0", "-1", "true", "null", "1e3", "0.1", "", "042"]),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, 42, -1, 1000, 2**63 - 1, 2**63, -(2**63), 2**53 + 1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 42.0, 0.1, 1e3, 2.0**60, 1e22, 5e-324, 42.5]),
    st.booleans(),
    st.none(),
)
PAYLOADS = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(KEYS, children, max_size=4)
    ),
    max_leaves=12,
).map(lambda tree: {"a": tree} if not isinstance(tree, dict) else tree)


def leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict):
        return [item for key, child in node.items() for item in leaf_paths(child, (*prefix, key))]
    return [(prefix, node)] if prefix else []


def spellings(leaf: Any) -> list[str]:
    """Values an operator might type for a leaf: as JSON, as Python prints it, and near misses."""
    texts = [leaf] if isinstance(leaf, str) else [json.dumps(leaf), str(leaf)]
    if isinstance(leaf, int | float) and not isinstance(leaf, bool):
        texts += [f"{leaf}.0", f"{leaf:.17g}", f"{leaf:.15g}", f"{leaf:f}", str(leaf + 1)]
    return texts


@st.composite
def searches(draw: st.DrawFn) -> tuple[list[dict[str, Any]], tuple[str, ...], str]:
    payloads = draw(st.lists(PAYLOADS, min_size=1, max_size=4))
    known = [item for payload in payloads for item in leaf_paths(payload)]
    if known and draw(st.booleans()):
        path, leaf = draw(st.sampled_from(known))
        value = draw(st.sampled_from(spellings(leaf)))
    else:
        path = tuple(draw(st.lists(KEYS, min_size=1, max_size=3)))
        value = draw(st.one_of(st.sampled_from(["42", "true", "null", "0", "a"]), st.text()))
    return payloads, path, value


PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(searches())
@example(([{"a": 2.0**60}, {"a": 2**60}], ("a",), str(2**60)))
@example(([{"a": 1e22}, {"a": 10**22}], ("a",), "1e22"))
@example(([{"a": 0.1}, {"a": "0.1"}], ("a",), "0.10"))
@example(([{"a": -0.0}, {"a": 0}], ("a",), "-0"))
@example(([{"a": True}, {"a": 1}], ("a",), "1"))
def test_the_database_agrees_with_the_rule(case):
    payloads, path, value = case
    try:
        term = Term.parse(".".join(path), value)
    except InvalidSearch:
        assume(False)
    with transaction.atomic():
        WebhookEvent.objects.bulk_create(
            WebhookEvent(source="generic", webhook_id=str(i), payload=payload)
            for i, payload in enumerate(payloads)
        )
        expected = {str(i) for i, payload in enumerate(payloads) if reference(payload, path, value)}
        rows = WebhookEvent.objects.filter(matching([term])).values_list("webhook_id", flat=True)
        assert set(rows) == expected
        transaction.set_rollback(True)


# -- the API ---------------------------------------------------------------------------------


@pytest.fixture
def api() -> APIClient:
    user = User.objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_webhookevent"))
    client = APIClient()
    client.force_authenticate(user)
    return client


def listed(response: Any) -> set[str]:
    assert response.status_code == 200, response.content
    return {event["webhook_id"] for event in response.json()["results"]}


def test_api_search_by_payload_anded_with_the_other_filters(api):
    store(
        a={"data": {"object": {"customer": "cus_123", "amount": 42}}, "type": "invoice.paid"},
        b={"data": {"object": {"customer": "cus_123", "amount": 7}}, "type": "invoice.paid"},
        c={"data": {"object": {"customer": "cus_9", "amount": 42}}, "type": "charge"},
    )
    WebhookEvent.objects.filter(webhook_id="b").update(source="stripe")
    assert listed(api.get(EVENTS, {"payload.data.object.customer": "cus_123"})) == {"a", "b"}
    assert listed(api.get(EVENTS, {"payload.data.object.amount": "42"})) == {"a", "c"}
    both = {"payload.data.object.customer": "cus_123", "payload.data.object.amount": "42"}
    assert listed(api.get(EVENTS, both)) == {"a"}
    assert listed(api.get(EVENTS, {"payload.type": "invoice.paid", "source": "stripe"})) == {"b"}
    # A name given twice is two terms, both of which must match.
    assert listed(api.get(f"{EVENTS}?payload.type=charge&payload.type=invoice.paid")) == set()
    assert listed(api.get(f"{EVENTS}?payload.type=charge&payload.type=charge")) == {"c"}
    assert listed(api.get(EVENTS, {"payload": "cus_123"})) == {"a", "b", "c"}  # not a search


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        ({"payload.": "x"}, "The path '' has an empty segment"),
        ({"payload.a..b": "x"}, "The path 'a..b' has an empty segment"),
        ({'payload.a"b': "x"}, "A path cannot hold a double quote."),
        ({"payload.a": "x\x00"}, "The value holds a NUL character."),
        ({"payload.a": "x" * 256}, "The value is longer than 255 characters."),
        ({f"payload.{'a' * 256}": "x"}, "The path is longer than 255 characters."),
        ({f"payload.k{i}": "x" for i in range(11)}, "At most 10 payload terms"),
    ],
)
def test_api_refuses_what_it_cannot_search_with_invalid_search(api, query, detail):
    response = api.get(EVENTS, query)
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == "invalid_search"
    assert body["detail"].startswith(detail)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    path=st.text(st.characters(blacklist_categories=["Cs"]), max_size=300),
    value=st.text(st.characters(blacklist_categories=["Cs"]), max_size=300),
)
@example(path="'; DROP TABLE webhooks_app_webhookevent; --", value="x")
@example(path="a__contains", value="{}")
@example(path="$[0]", value="x")
@example(path="-1", value="x")
@example(path="a.%", value="%")
@example(path="\ufeffa.ü.😀", value="\u202e")
def test_any_text_is_searched_or_refused_never_a_500(api, path, value):
    response = api.get(EVENTS, {f"payload.{path}": value})
    assert response.status_code in (200, 400), response.content
    if response.status_code == 400:
        assert response.json()["error"] == "invalid_search"


def test_undecodable_query_bytes_are_no_500(api):
    store(a={"\ufffd": "\ufffd"})
    assert listed(api.get(f"{EVENTS}?payload.%FF=%FE")) == {"a"}  # Django decodes with U+FFFD


def test_the_schema_documents_payload_search(api):
    schema = api.get("/webhooks/api/schema/", {"format": "json"}).json()
    parameters = {
        p["name"]: p for p in schema["paths"]["/webhooks/api/events/"]["get"]["parameters"]
    }
    documented = parameters["payload.<path>"]
    assert documented["in"] == "query" and documented["schema"]["maxLength"] == 255
    assert "payload.data.object.customer=cus_123" in documented["description"]


# -- the admin -------------------------------------------------------------------------------


def admin_listed(admin_client: Any, q: str) -> tuple[set[str], list[str]]:
    response = admin_client.get(reverse("admin:webhooks_app_webhookevent_changelist"), {"q": q})
    assert response.status_code == 200
    shown = {event.webhook_id for event in response.context["cl"].result_list}
    return shown, [str(message) for message in response.context["messages"]]


def test_admin_search_box_finds_payload_values_and_ids(admin_client):
    store(
        a={"data": {"object": {"customer": "cus_123", "description": "Order 5"}}},
        b={"data": {"object": {"customer": "cus_123", "description": "Order 6"}}},
        c={"data": {"object": {"customer": "cus_9"}}},
        **{"id=with=equals": {}},
    )
    assert admin_listed(admin_client, "data.object.customer=cus_123") == ({"a", "b"}, [])
    assert admin_listed(admin_client, "a") == ({"a"}, [])  # an exact id, as before
    assert admin_listed(admin_client, "cus_123") == (set(), [])
    assert admin_listed(admin_client, "id=with=equals") == ({"id=with=equals"}, [])
    # Terms are ANDed; quotes keep a term with spaces whole, around it or around the value.
    both = "data.object.customer=cus_123 'data.object.description=Order 5'"
    assert admin_listed(admin_client, both) == ({"a"}, [])
    assert admin_listed(admin_client, 'data.object.description="Order 6"') == ({"b"}, [])
    assert admin_listed(admin_client, "data.object.customer=cus_123 b") == ({"b"}, [])
    shown, problems = admin_listed(admin_client, "data..customer=cus_123")
    assert shown == set()
    assert problems == [
        "data..customer=cus_123 was searched as a webhook id only: The path 'data..customer' "
        "has an empty segment: name keys separated by single dots, as in data.object.customer."
    ]
    shown, problems = admin_listed(admin_client, " ".join(f"k{i}=1" for i in range(11)))
    assert shown == set() and problems == ["At most 10 payload terms can be searched at once."]


@settings(max_examples=75, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(st.characters(blacklist_categories=["Cs"]), max_size=300))
@example("a=\x00")
@example("\x00")
@example("'a=b")
@example('a="')
@example("=")
def test_any_text_in_the_admin_search_box_is_no_500(admin_client, q):
    response = admin_client.get(reverse("admin:webhooks_app_webhookevent_changelist"), {"q": q})
    assert response.status_code == 200


def test_admin_search_help_says_so(admin_client):
    response = admin_client.get(reverse("admin:webhooks_app_webhookevent_changelist"))
    assert "data.object.customer=cus_123" in response.content.decode()


# -- the index, on PostgreSQL ----------------------------------------------------------------


@pytest.mark.skipif(not POSTGRES, reason="the GIN index exists on PostgreSQL only")
def test_the_gin_index_serves_the_search():
    WebhookEvent.objects.bulk_create(
        WebhookEvent(
            source="stripe", webhook_id=f"evt_{i}",
            payload={"data": {"object": {"customer": f"cus_{i % 500}", "amount": i}}},
        )
        for i in range(5000)
    )  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE webhooks_app_webhookevent")
        # Without these a small table may be read whole, or walked in the list's order along
        # the received_at index, which is cheaper: whether the index can serve the search is
        # what counts here (bench/search.py shows the plans on a million events).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
    string_only = WebhookEvent.objects.filter(
        matching([Term.parse("data.object.customer", "cus_7")])
    )
    plan = string_only.explain()
    assert "Bitmap Index Scan on webhooks_ev_payload_gin_idx" in plan, plan
    typed = WebhookEvent.objects.filter(matching([Term.parse("data.object.amount", "42")]))
    plan = typed.explain()
    assert (
        "BitmapOr" in plan and plan.count("Bitmap Index Scan on webhooks_ev_payload_gin_idx") == 2
    ), plan
    assert string_only.count() == 10 and list(typed.values_list("webhook_id", flat=True)) == [
        "evt_42"
    ]


def _index_scans(terms: list[Term], page_size: int) -> str:
    with search.planned(terms, page_size), connection.cursor() as cursor:
        cursor.execute("SHOW enable_indexscan")
        (setting,) = cursor.fetchone()
    return setting


@pytest.mark.skipif(not POSTGRES, reason="the plan is chosen on PostgreSQL only")
def test_a_value_missing_from_the_newest_events_is_served_by_the_index_not_the_walk(
    api, monkeypatch
):
    # 60 old events hold the old version, the 60 newest do not: walking newest-first would read
    # past all of these before its first match.
    monkeypatch.setattr(search, "RECENT_ROWS", 60)
    store(**{f"old_{i}": {"api_version": "2019"} for i in range(60)})
    store(**{f"new_{i}": {"api_version": "2024"} for i in range(60)})
    assert _index_scans([Term.parse("api_version", "2019")], page_size=50) == "off"
    assert _index_scans([Term.parse("api_version", "2024")], page_size=50) == "on"
    assert _index_scans([Term.parse("api_version", "2024")], page_size=61) == "off"
    # The setting is the page query's alone, and the answers are the same either way.
    assert _index_scans([], page_size=50) == "on"
    response = api.get(reverse("webhooks_app:event-list"), {"payload.api_version": "2019"})
    assert len(listed(response)) == 50
    assert _index_scans([Term.parse("api_version", "2024")], page_size=50) == "on"
