"""Coverage-guided fuzzing of one signature scheme (atheris: libFuzzer for Python).

The property: whatever the headers, body, URL, query and configured secrets, ``verify``,
``parse``, ``content_key`` and ``handshake`` raise a
:class:`~webhooks_app.exceptions.WebhookError` (which the view answers with its 4xx/503) or
return a well-formed answer. Anything else escaping is a bug: libFuzzer reports it, writes the
input to ``crash-<sha1>`` and exits non-zero, and this script prints the request that input
stands for.

The fuzzed bytes are not the body: a :class:`atheris.FuzzedDataProvider` turns them into a
request shaped like the scheme's own (its signature, id, event and timestamp headers, each
absent, plausible or arbitrary; JSON, form or binary bodies whose field names and values come
from the scheme's own code), which is signed most of the time with a configured secret through
the scheme's own ``sign``, so that ``parse`` sees authenticated bodies too. ``parse`` is called
whatever ``verify`` said: its safety must not depend on the signature.

Usage, from the repository root (options after the scheme are libFuzzer's; the corpus
directory must exist, and reproducers land in the current directory unless told otherwise)::

    mkdir -p var/fuzz/stripe
    python -m tests.fuzz_schemes stripe -max_total_time=3600 -fork=2 \
        -artifact_prefix=var/fuzz/ var/fuzz/stripe
    python -m tests.fuzz_schemes stripe var/fuzz/crash-0123abcd     # replay a reproducer
    python -m tests.fuzz_schemes myproject.schemes.AcmeScheme -max_total_time=60

A built-in scheme is named as in ``SOURCES[...]["SCHEME"]``, a project's own by its dotted path
as in ``WEBHOOKS["SCHEMES"]``. ``tests/test_fuzz.py`` runs every built-in one for a few seconds.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import shlex
import sys
import types
import urllib.parse
from collections.abc import Iterator, Sequence
from importlib import import_module
from typing import Any, TypeVar

import atheris

# Instrumented so that coverage of the schemes, not of the harness, guides the mutations.
with atheris.instrument_imports(include=["webhooks_app.schemes", "webhooks_app.exceptions"]):
    from webhooks_app.exceptions import InvalidJSON, WebhookError
    from webhooks_app.schemes import Delivery, InboundRequest, Scheme, builtin_scheme_names
    from webhooks_app.schemes.base import MAX_ID_LENGTH, _check_storable
    from webhooks_app.schemes.twilio import url_with_body_hash

    for _name in builtin_scheme_names():
        import_module(f"webhooks_app.schemes.{_name}")

from django.utils.module_loading import import_string

#: The clock every call sees; signed timestamps are drawn around it.
NOW = 1_700_000_000
TOLERANCES = (0, 300, 86_400)
#: A plain secret, a ``whsec_`` one (Standard Webhooks' base64 key; GitLab's signing token) and
#: a ``whsk_`` Ed25519 private key (Standard Webhooks ``v1a``; other schemes take it as text).
SIGNING_SECRETS = (
    "fuzz-secret-A-0123456789abcdef",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsk_LwcxITW35aKVsMs79p9VmBj4veYN/4X/VnrDMpd6USU=",
)
#: What a source holds beside a signing secret that only its public key verifies.
PUBLIC_KEYS = {
    "whsk_LwcxITW35aKVsMs79p9VmBj4veYN/4X/VnrDMpd6USU=": (
        "whpk_HAIRujSGI5vamJ6arFbjeZ+80sEy1Qs7eW/XFGhWjRk=",
    ),
}
ROTATED_SECRET = "fuzz-secret-B-0123456789abcdef"
VERIFY_TOKEN = "fuzz-verify-token"
CONTENT_KEY_LENGTH = 64  # WebhookEvent.content_key's max_length

#: Words worth trying anywhere, beside those the scheme's code contains (:func:`code_words`).
WORDS = ("", "0", "1", "-1", " ", "\x00", "\x85", "é", "v1,", "v1a,", "sha256=", "whsec_", "t=")
#: JSON texts no ``json.dumps`` writes, spliced in where a value goes: what the strict parser
#: refuses (NaN, out-of-range and over-long numbers, duplicate keys, NUL, lone surrogates, more
#: than 64 levels) and values at the limits (a 256-character id, a non-printable one).
HOSTILE_JSON = (
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"1" * 4301,
    b'{"id": "a", "id": "b"}',
    b'"\\u0000"',
    b'"\\ud800"',
    b'"\\u0085"',
    b"[" * 65 + b"]" * 65,
    b'"' + b"x" * 256 + b'"',
)
URLS = (
    "https://example.com/webhooks/src/",
    "https://example.com:443/webhooks/src/?a=1&a=2",
    "http://user@[::1]:8000/w?bodySHA256=",
    "",
)
MEDIA_PARAMETERS = ("", "; charset=utf-8", ";", " ; boundary=x")

T = TypeVar("T")


def code_words(scheme: Scheme) -> tuple[str, ...]:
    """The short strings in the scheme's own modules: the field names, prefixes and values its
    branches look for. ``dict.get`` and ``in`` are comparisons libFuzzer does not see, so it
    would not come up with ``"workflow_name"`` on its own."""
    found: set[str] = set()
    classes = type(scheme).__mro__
    modules = {cls.__module__ for cls in classes[: classes.index(Scheme)]}
    for module in modules:
        for name, value in vars(sys.modules[module]).items():
            if name.startswith("__"):
                continue
            found.update(_strings(value))  # constants: header names, prefixes, field names
            if getattr(value, "__module__", None) != module:
                continue  # imported: another module's code
            members = vars(value).values() if isinstance(value, type) else [value]
            for member in members:
                function = getattr(member, "__func__", member)
                if isinstance(function, types.FunctionType):
                    found.update(_strings(function.__code__))
    # Dunder names are markers (atheris adds one to instrumented code), not data.
    short = {w for w in found if len(w) <= 40 and " " not in w and not w.startswith("__")}
    return tuple(sorted(short | set(WORDS)))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, types.CodeType):
        yield from _strings(value.co_consts)
    elif isinstance(value, tuple | list | set | frozenset):
        for item in value:
            yield from _strings(item)


class RequestBuilder:
    """Draws one request for ``scheme`` from the fuzzer's bytes, plus the secrets, tolerance
    and verify token it is checked with. Exhausted input reads as zeros, so the first choice
    of each draw is the plausible one: short inputs already reach ``parse``."""

    def __init__(self, scheme: Scheme, words: Sequence[str], data: bytes) -> None:
        self.scheme = scheme
        self.words = words
        self.fdp = atheris.FuzzedDataProvider(data)

    # -- primitives ---------------------------------------------------------------------------
    def pick(self, values: Sequence[T]) -> T:
        return values[self.fdp.ConsumeIntInRange(0, len(values) - 1)]

    def text(self, max_length: int = 64) -> str:
        """A word, latin-1 text (every header value WSGI and ASGI servers hand over) or any
        Unicode but lone surrogates: no header, URL or query can hold one (servers decode them
        as latin-1, Django's ``QueryDict`` with ``errors="replace"``). Bodies are bytes and get
        theirs from ``HOSTILE_JSON`` and arbitrary bytes."""
        kind = self.fdp.ConsumeIntInRange(0, 2)
        if kind == 0:
            return self.pick(self.words)
        length = self.fdp.ConsumeIntInRange(0, max_length)
        if kind == 1:
            return self.fdp.ConsumeBytes(length).decode("latin-1")
        return self.fdp.ConsumeUnicodeNoSurrogates(length)

    def timestamp(self) -> int:
        """Around the clock: inside, at the edges of and outside every tolerance."""
        if self.fdp.ConsumeIntInRange(0, 3) < 3:
            return NOW + self.fdp.ConsumeIntInRange(-400, 400)
        return NOW + self.fdp.ConsumeIntInRange(-100_000, 100_000)

    # -- bodies -------------------------------------------------------------------------------
    def field_name(self) -> str:
        """Mostly a word of the scheme's code: a field it reads."""
        return self.pick(self.words) if self.fdp.ConsumeIntInRange(0, 3) < 3 else self.text(16)

    def json_object(self, depth: int = 0) -> dict[str, Any]:
        return {
            self.field_name(): self.json_value(depth + 1)
            for _ in range(self.fdp.ConsumeIntInRange(0, 5))
        }

    def json_value(self, depth: int = 0) -> Any:
        kind = self.fdp.ConsumeIntInRange(0, 9 if depth < 5 else 6)
        if kind == 0:
            return self.pick(self.words)
        if kind < 3:
            return self.text()
        if kind == 3:
            return self.fdp.ConsumeIntInRange(-(2**70), 2**70)
        if kind == 4:
            return self.fdp.ConsumeRegularFloat()
        if kind == 5:
            return self.pick((None, True, False))
        if kind == 6:  # a placeholder, replaced by the hostile text in json_bytes
            return f"\x01{self.fdp.ConsumeIntInRange(0, len(HOSTILE_JSON) - 1)}\x01"
        if kind == 7:
            return [self.json_value(depth + 1) for _ in range(self.fdp.ConsumeIntInRange(0, 3))]
        return self.json_object(depth)

    def json_bytes(self, value: Any, *, ensure_ascii: bool = True) -> bytes:
        text = json.dumps(value, ensure_ascii=ensure_ascii).encode()
        for index, hostile in enumerate(HOSTILE_JSON):
            text = text.replace(b'"\\u0001%d\\u0001"' % index, hostile)
        return text

    def body(self) -> bytes:
        """A JSON object (ASCII-escaped or raw UTF-8), any JSON, a form, or arbitrary bytes."""
        kind = self.fdp.ConsumeIntInRange(0, 4)
        if kind == 3:  # a form, as GitHub, Slack and Twilio send, whose fields may hold JSON
            fields = (
                urllib.parse.quote_plus(self.field_name())
                + "="
                + urllib.parse.quote_plus(self.form_value())
                for _ in range(self.fdp.ConsumeIntInRange(0, 5))
            )
            return "&".join(fields).encode("ascii")
        if kind == 4:
            return self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 2048))
        value = self.json_object() if kind < 2 else self.json_value()
        body = self.json_bytes(value, ensure_ascii=kind != 1)
        if self.fdp.ConsumeIntInRange(0, 7) == 7:  # almost JSON: cut short, bytes spliced in
            cut = self.fdp.ConsumeIntInRange(0, len(body))
            body = body[:cut] + self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 8))
        return body

    def form_value(self) -> bytes:
        """Text, a JSON document (Slack's and GitHub's ``payload``), or bytes (maybe not UTF-8)."""
        kind = self.fdp.ConsumeIntInRange(0, 2)
        if kind == 0:
            return self.text().encode()
        if kind == 1:
            return self.json_bytes(self.json_object())
        return self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 64))

    # -- the request --------------------------------------------------------------------------
    def content_type(self) -> str | None:
        kind = self.fdp.ConsumeIntInRange(0, 2)
        if kind == 1:
            return None
        if kind == 2:
            return self.text(40)
        media_type = self.pick(sorted(self.scheme.media_types))
        if self.fdp.ConsumeBool():
            media_type = media_type.upper()
        return media_type + self.pick(MEDIA_PARAMETERS)

    def headers(self) -> dict[str, str]:
        """The scheme's own headers, each absent, plausible or arbitrary; and a stray one."""
        headers: dict[str, str] = {}
        if (content_type := self.content_type()) is not None:
            headers["content-type"] = content_type
        for name in sorted(self.scheme.signature_headers | self.scheme.stored_headers):
            kind = self.fdp.ConsumeIntInRange(0, 2)
            if kind == 1:
                headers[name] = self.text(300)
            elif kind == 2:
                headers[name] = str(self.timestamp())
        if self.fdp.ConsumeBool():
            headers[self.text(20).lower()] = self.text()
        return headers

    def url(self) -> str:
        url = self.pick(URLS)
        return url + self.text(80) if self.fdp.ConsumeBool() else url

    def query(self) -> dict[str, str]:
        """Meta's subscription handshake parameters (the other schemes ignore the query)."""
        query = {}
        for name, plausible in (
            ("hub.mode", "subscribe"),
            ("hub.verify_token", VERIFY_TOKEN),
            ("hub.challenge", "1158201444"),
        ):
            kind = self.fdp.ConsumeIntInRange(0, 2)
            if kind == 0:
                query[name] = plausible
            elif kind == 1:
                query[name] = self.text(300)
        return query

    def sign(self, body: bytes, headers: dict[str, str], url: str, secret: str) -> str:
        """Add the headers the scheme's ``sign`` gives (perhaps tampering with one); return
        the URL to send, which a URL-signing scheme may have needed to extend."""
        options: dict[str, Any] = {
            "webhook_id": None if self.fdp.ConsumeBool() else self.text(40),
            "timestamp": self.timestamp(),
        }
        if "url" in inspect.signature(self.scheme.sign).parameters:  # Twilio signs the URL
            if self.fdp.ConsumeBool():
                url = url_with_body_hash(url, body)
            options.update(url=url, content_type=headers.get("content-type") or "")
        try:
            signed = self.scheme.sign(body, secret, **options)
        except (NotImplementedError, ValueError, WebhookError):  # no signature for these inputs
            return url
        signed = {name.lower(): value for name, value in signed.items()}
        headers.update(signed)
        if signed and self.fdp.ConsumeIntInRange(0, 3) == 3:
            name = self.pick(sorted(signed))
            at = self.fdp.ConsumeIntInRange(0, len(headers[name]))
            headers[name] = headers[name][:at] + self.text(4) + headers[name][at:]
        return url

    def secrets(self, signing_secret: str) -> list[str]:
        """The source's ``SECRETS``: never empty (the view answers 503 before any scheme)."""
        kind = self.fdp.ConsumeIntInRange(0, 3)
        own = [signing_secret, *PUBLIC_KEYS.get(signing_secret, ())]
        if kind == 0:
            return own
        if kind == 1:
            return [ROTATED_SECRET, *own]
        if kind == 2:
            return [ROTATED_SECRET]
        # Any string settings can hold, maybe meant as a ``whsec_`` or ``whpk_`` key. An
        # environment variable's undecodable bytes (surrogate escapes) are left out: they are
        # the operator's to fix, and no request can put them there.
        prefix = self.pick(("", "whsec_", "whpk_"))
        secret = prefix + self.fdp.ConsumeUnicodeNoSurrogates(self.fdp.ConsumeIntInRange(1, 60))
        return [secret or "x"]  # SECRETS never holds "": settings drop it

    def build(self) -> tuple[InboundRequest, list[str], int, str]:
        """The request, the secrets it is verified with, the tolerance and the verify token."""
        signing_secret = self.pick(SIGNING_SECRETS)
        body = self.body()
        headers = self.headers()
        url = self.url()
        if self.fdp.ConsumeIntInRange(0, 2) < 2:
            url = self.sign(body, headers, url, signing_secret)
        request = InboundRequest(body=body, headers=headers, url=url, query=self.query())
        secrets = self.secrets(signing_secret)
        tolerance = self.pick(TOLERANCES)
        verify_token = self.pick((VERIFY_TOKEN, "", self.text(40)))
        return request, secrets, tolerance, verify_token


def check_delivery(delivery: Delivery) -> None:
    """What storing relies on: an id the ``webhook_id`` column and the contract accept, text
    for the event type, and payload and reply that PostgreSQL's ``jsonb`` can hold."""
    assert isinstance(delivery, Delivery), f"parse returned {delivery!r}"
    webhook_id = delivery.webhook_id
    assert webhook_id is None or (
        isinstance(webhook_id, str)
        and 1 <= len(webhook_id) <= MAX_ID_LENGTH
        and webhook_id.isprintable()
    ), f"webhook_id {webhook_id!r} is not 1-{MAX_ID_LENGTH} printable characters"
    assert isinstance(delivery.event_type, str), f"event_type {delivery.event_type!r}"
    assert delivery.workflow_name is None or isinstance(delivery.workflow_name, str)
    for name, value in (("payload", delivery.payload), ("reply", delivery.reply)):
        json.dumps(value)
        try:
            _check_storable(value)
        except InvalidJSON as exc:
            raise AssertionError(f"the {name} cannot be stored: {exc.detail}") from None


class SchemeFuzzer:
    """The fuzz target: one input is one request put through ``verify``, ``parse`` (then
    ``content_key`` if it parsed) and, for schemes that have one, ``handshake``."""

    def __init__(self, scheme: Scheme) -> None:
        self.scheme = scheme
        self.words = code_words(scheme)

    def __call__(self, data: bytes) -> None:
        request, secrets, tolerance, verify_token = RequestBuilder(
            self.scheme, self.words, data
        ).build()
        try:
            self.exercise(request, secrets, tolerance, verify_token)
        except BaseException:
            # libFuzzer saves the raw bytes; this is what they mean, for the bug report.
            print(
                "=== The request that broke the scheme ===",
                f"body:    {request.body!r}",
                f"headers: {dict(request.headers)!r}",
                f"url:     {request.url!r}",
                f"query:   {dict(request.query)!r}",
                f"secrets: {secrets!r}  tolerance: {tolerance}  verify_token: {verify_token!r}",
                sep="\n",
                file=sys.stderr,
            )
            raise

    def exercise(
        self, request: InboundRequest, secrets: list[str], tolerance: int, verify_token: str
    ) -> None:
        with contextlib.suppress(WebhookError):
            self.scheme.verify(request, secrets, now=NOW, tolerance=tolerance)
        try:
            delivery = self.scheme.parse(request)
        except WebhookError:
            pass
        else:
            check_delivery(delivery)
            # Asked for once a delivery parsed (ingest.store), outside the guard that turns a
            # scheme's crash into a refusal: an exception here would be a 500.
            with contextlib.suppress(WebhookError):
                key = self.scheme.content_key(request)
                assert key is None or (isinstance(key, str) and len(key) <= CONTENT_KEY_LENGTH), (
                    f"content_key {key!r} does not fit WebhookEvent.content_key"
                )
        if self.scheme.has_handshake:
            try:
                answer = self.scheme.handshake(request, verify_token)
            except WebhookError:
                pass
            else:
                assert isinstance(answer, str), f"handshake returned {answer!r}"


def load_scheme(name: str) -> Scheme:
    """A built-in scheme by name, or a project's own by dotted path (instrumented too)."""
    if name in builtin_scheme_names():
        scheme: Scheme = import_module(f"webhooks_app.schemes.{name}").SCHEME()
        return scheme
    if "." not in name:
        sys.exit(f"{name!r} is no built-in scheme ({', '.join(sorted(builtin_scheme_names()))})")
    with atheris.instrument_imports(include=[name.split(".", 1)[0]]):
        return import_string(name)()


def main(argv: Sequence[str]) -> None:
    if len(argv) < 2 or argv[1].startswith("-"):
        sys.exit("usage: python -m tests.fuzz_schemes SCHEME [libFuzzer options] [CORPUS...]")
    # libFuzzer re-runs its program for -fork, -jobs and -merge by handing its argv[0] and
    # options to the shell, unquoted: a quoted command line there re-runs this very module.
    program = shlex.join([sys.executable, "-m", "tests.fuzz_schemes", argv[1]])
    atheris.Setup([program, *argv[2:]], SchemeFuzzer(load_scheme(argv[1])))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
