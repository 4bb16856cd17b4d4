"""Payload search (contract §10): ``<dotted.path>=<value>`` finds the events whose payload holds
that value at that path; in the API as ``?payload.data.object.customer=cus_123``, in the admin's
search box as ``data.object.customer=cus_123``.

What matches. The path's segments are object keys from the top of the payload; a digit is a key
like any other (``items.0`` is the key ``"0"``) and a path never enters an array. There the
payload holds
- a string equal to the value, character for character; or
- when the value is written as a JSON number (``42``, ``-1``, ``42.0``, ``1e3``; not ``042``,
  ``+1`` or ``.5``), a number equal to it as decimals: ``42`` finds 42, 42.0 and "42"; ``42.0``
  finds 42, 42.0 and "42.0". Only numbers under 2**63 in magnitude are compared as numbers:
  SQLite keeps larger integers as inexact floats, so on every database a longer one matches only
  as a string; or
- when the value is ``true``, ``false`` or ``null``: that JSON literal (or the string).
Objects and arrays are never matched.

The path and the value are data: they never become SQL text or a Django lookup. On PostgreSQL a
term is a JSON document for containment (``payload @> '{"data": {"object": {"customer":
"cus_123"}}}'``, OR'ed with the typed form such as ``{"amount": 42}``), which the GIN
``jsonb_path_ops`` index of migration 0008 serves. On SQLite it is a JSON path bound as a
parameter of ``JSON_TYPE``/``JSON_EXTRACT``. Django's ``KeyTransform`` is not used: it turns a
digit segment into an array index, which containment cannot express, and ``-1`` into a malformed
path (a database error). A term that could not be searched alike on both is refused with
:class:`InvalidSearch` (an API 400, an admin warning), never a database error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, DecimalException
from typing import Any

from django.db import DEFAULT_DB_ALIAS, NotSupportedError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BooleanField, Expression, F, Q
from django.db.models.sql.compiler import SQLCompiler
from django.http import QueryDict
from django.utils.text import smart_split, unescape_string_literal

from webhooks_app import sql

#: The API's query parameters ``payload.<path>``.
PARAMETER_PREFIX = "payload."
#: Characters, for the path and for the value each (the API's other filters allow as many).
MAX_LENGTH = 255
#: Terms in one search (ANDed): each adds a condition to the query.
MAX_TERMS = 10
#: Numbers at least this large in magnitude match only as strings (see the module docstring).
NUMBER_LIMIT = 2**63
#: RFC 8259's number, ASCII digits only.
JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")

Scalar = str | int | float | bool | None


class InvalidSearch(ValueError):
    """A search term that cannot be searched; the message says why, for the operator."""


@dataclass(frozen=True)
class Term:
    """``path=value``: the payload holds ``value`` at ``path`` (see the module docstring)."""

    path: tuple[str, ...]
    value: str

    @classmethod
    def parse(cls, path: str, value: str) -> Term:
        for text, name in ((path, "path"), (value, "value")):
            if len(text) > MAX_LENGTH:
                raise InvalidSearch(f"The {name} is longer than {MAX_LENGTH} characters.")
            # PostgreSQL stores no NUL and no lone surrogate in JSON: nothing could match.
            if "\x00" in text:
                raise InvalidSearch(f"The {name} holds a NUL character.")
            try:
                text.encode()
            except UnicodeEncodeError:
                raise InvalidSearch(f"The {name} is not valid Unicode.") from None
        segments = tuple(path.split("."))
        if "" in segments:
            raise InvalidSearch(
                f"The path {path!r} has an empty segment: name keys separated by single dots, "
                "as in data.object.customer."
            )
        # SQLite (3.40) ends a quoted path label at the first double quote, escaped or not.
        if any('"' in segment for segment in segments):
            raise InvalidSearch("A path cannot hold a double quote.")
        return cls(segments, value)

    @property
    def forms(self) -> tuple[Scalar, ...]:
        """The JSON values that match: the string, and the number or literal it writes."""
        if self.value in ("true", "false", "null"):
            return (self.value, json.loads(self.value))
        number = json_number(self.value)
        return (self.value,) if number is None else (self.value, number)


def json_number(text: str) -> int | float | None:
    """The number ``text`` writes as a JSON number, as the Python value that holds it exactly
    (and that Python's ``json`` writes back as the same decimal), else None: not a number, at
    least :data:`NUMBER_LIMIT`, or a decimal that no float holds, which no stored number equals
    (stored floats are written as the shortest decimal that reads back as them)."""
    if not JSON_NUMBER.fullmatch(text):
        return None
    try:
        exact = Decimal(text)
        if not abs(exact) < NUMBER_LIMIT:
            return None
        if exact == exact.to_integral_value():
            return int(exact)
    except DecimalException:  # an exponent beyond what Decimal represents
        return None
    nearest = float(exact)
    return nearest if Decimal(repr(nearest)) == exact else None


def exactly_a_float(number: int) -> float | None:
    """The float equal to ``number`` that Python writes as ``number``'s decimal, if there is
    one: the stored float that ``number`` finds (42 finds 42.0; 2**60 finds no float, as the
    float 2.0**60 is written 1.152921504606847e+18)."""
    nearest = float(number)
    return nearest if Decimal(repr(nearest)) == number else None


class PayloadHas(Expression):
    """A condition for ``filter()``: the event's payload matches ``term``."""

    conditional = True

    def __init__(self, term: Term, column: str = "payload") -> None:
        super().__init__(output_field=BooleanField())
        self.term = term
        self.column: Any = F(column)

    def get_source_expressions(self) -> list[Any]:
        return [self.column]

    def set_source_expressions(self, exprs: Sequence[Any]) -> None:
        (self.column,) = exprs

    def as_sql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper
    ) -> tuple[str, tuple[Any, ...]]:
        raise NotSupportedError("Payload search needs PostgreSQL or SQLite.")

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper
    ) -> tuple[str, tuple[Any, ...]]:
        column, column_params = compiler.compile(self.column)
        condition, documents = containment(column, self.term)
        params = [value for document in documents for value in (*column_params, document)]
        return condition, tuple(params)

    def as_sqlite(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper
    ) -> tuple[str, tuple[Any, ...]]:
        column, column_params = compiler.compile(self.column)
        # Each key written as Django's JSONField writes it (json.dumps, ASCII): SQLite 3.40
        # compares a path label with the stored key byte for byte, escapes included.
        path = "$" + "".join(f".{json.dumps(segment)}" for segment in self.term.path)
        extract = f"JSON_EXTRACT({column}, %s) = %s"
        branches: list[tuple[str, list[Any]]] = []
        for form in self.term.forms:
            if isinstance(form, str):
                branches.append((f"WHEN 'text' THEN {extract}", [*column_params, path, form]))
            elif form is None or isinstance(form, bool):
                branches.append((f"WHEN '{json.dumps(form)}' THEN 1", []))
            elif isinstance(form, int):
                branches.append((f"WHEN 'integer' THEN {extract}", [*column_params, path, form]))
                if (close := exactly_a_float(form)) is not None:
                    branches.append((f"WHEN 'real' THEN {extract}", [*column_params, path, close]))
            else:
                branches.append((f"WHEN 'real' THEN {extract}", [*column_params, path, form]))
        whens = " ".join(sql for sql, _ in branches)
        params = [*column_params, path, *(value for _, values in branches for value in values)]
        return f"(CASE JSON_TYPE({column}, %s) {whens} ELSE 0 END)", tuple(params)


def containment(column: str, term: Term) -> tuple[str, list[str]]:
    """PostgreSQL: ``term`` as containment tests of ``column``, one JSON document per form
    (the parameters, in order)."""
    documents = [json.dumps(nested(term.path, form)) for form in term.forms]
    return "(" + " OR ".join(f"{column} @> %s::jsonb" for _ in documents) + ")", documents


def nested(path: tuple[str, ...], value: Scalar) -> Any:
    """``{"a": {"b": value}}`` for the path ``a.b``."""
    document: Any = value
    for key in reversed(path):
        document = {key: document}
    return document


def matching(terms: list[Term]) -> Q:
    """Every term matches (an empty list: no condition)."""
    if len(terms) > MAX_TERMS:
        raise InvalidSearch(f"At most {MAX_TERMS} payload terms can be searched at once.")
    return Q(*(PayloadHas(term) for term in terms))


#: How many of the newest events a PostgreSQL search looks at before choosing its plan.
RECENT_ROWS = 5000


@contextmanager
def planned(terms: list[Term], page_size: int) -> Iterator[None]:
    """Run a page of a payload search (newest first) with the plan that bounds its cost.

    PostgreSQL's planner has two ways to serve it, and no statistic to choose between them by:
    walking the events newest-first and testing each payload, which stops at the page's last
    match; or the GIN index, which finds every match and sorts them. For a value frequent
    overall (so the walk looks cheap) but found only in old events, the walk reads most of the
    table before its first match. So look first: when the newest :data:`RECENT_ROWS` events
    hold a page of matches, the walk stops within them, and the planner may choose; when they do
    not, plain index scans (the walk) are switched off for the page's query, and the index
    serves it. The look costs a read of those newest rows (a few milliseconds).
    """
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "postgresql" or not terms or _recent_fill_a_page(terms, page_size):
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_indexscan = off")
        try:
            yield
        finally:
            # Inside a caller's transaction (ATOMIC_REQUESTS) this block is a savepoint, which
            # does not end a SET LOCAL: the rest of that transaction plans as before.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_indexscan TO DEFAULT")


def _recent_fill_a_page(terms: list[Term], page_size: int) -> bool:
    payload = f"recent.{sql.quote('payload')}"
    conditions, params = [], []
    for term in terms:
        condition, documents = containment(payload, term)
        conditions.append(condition)
        params += documents
    order = f"{sql.quote('received_at')} DESC, {sql.quote('id')} DESC"
    statement = (
        f"SELECT COUNT(*) FROM (SELECT {sql.quote('payload')} FROM {sql.table()} "  # noqa: S608
        f"ORDER BY {order} LIMIT %s) AS recent WHERE " + " AND ".join(conditions)
    )
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute(statement, [RECENT_ROWS, *params])
        (found,) = cursor.fetchone()
    return bool(found >= page_size)


def api_terms(params: QueryDict) -> list[Term]:
    """The terms of the API's ``payload.<path>=<value>`` query parameters (a name given twice
    is two terms)."""
    return [
        Term.parse(name.removeprefix(PARAMETER_PREFIX), value)
        for name, values in params.lists()
        if name.startswith(PARAMETER_PREFIX)
        for value in values
    ]


@dataclass
class AdminSearch:
    """The admin's search box split: ``rest``, the terms for ``search_fields``, as typed; the
    ``condition`` of the ``path=value`` terms; a ``problem`` per such term that is no valid
    payload search."""

    rest: str = ""
    condition: Q = field(default_factory=Q)
    problems: list[str] = field(default_factory=list)


def admin_search(search_term: str) -> AdminSearch:
    """The admin's terms, split like Django's admin splits them (by spaces; quotes keep a term
    whole: ``"data.object.description=Order 5"`` or ``description="Order 5"``).

    A term with ``=`` is a payload search, or the webhook id itself: ids may hold ``=``
    (base64), and such a term finds the event of that id as before. A term that is no valid
    payload search is searched as a webhook id only, and its problem reported. (Django's
    changelist refuses a search with NUL before it gets here.)
    """
    found, rest, terms = AdminSearch(), [], []
    for bit in smart_split(search_term):
        text = _unquoted(bit)
        if "=" not in text:
            rest.append(bit)
            continue
        path, _, value = text.partition("=")
        try:
            terms.append(Term.parse(path, _unquoted(value)))
        except InvalidSearch as exc:
            found.problems.append(f"{text} was searched as a webhook id only: {exc}")
            found.condition &= Q(webhook_id=text)
        else:
            found.condition &= Q(webhook_id=text) | Q(PayloadHas(terms[-1]))
    if len(terms) > MAX_TERMS:
        found.problems.append(f"At most {MAX_TERMS} payload terms can be searched at once.")
        found.condition = Q(pk__in=[])
    found.rest = " ".join(rest)
    return found


def _unquoted(text: str) -> str:
    if text[:1] in ('"', "'") and len(text) > 1 and text[0] == text[-1]:
        return unescape_string_literal(text)
    return text
