"""Every built-in scheme, fuzzed for a few seconds: nothing but its own errors escapes.

Each test runs ``tests/fuzz_schemes.py`` (atheris, coverage-guided) on one scheme in a
subprocess for ``FUZZ_SECONDS`` (default 2; libFuzzer stops within a second after it). A
``WebhookError`` is the expected answer to garbage; any other exception, a malformed
``Delivery`` or an input running past 10 s fails the test with the request that caused it and
the command that replays it. Run longer by hand::

    FUZZ_SECONDS=300 .venv/bin/python -m pytest tests/test_fuzz.py -k stripe
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from webhooks_app.schemes import Delivery, InboundRequest, builtin_scheme_names
from webhooks_app.schemes.generic import GenericScheme

ROOT = Path(__file__).resolve().parent.parent
FUZZ_SECONDS = int(os.environ.get("FUZZ_SECONDS", "2"))
REQUEST_BANNER = "=== The request that broke the scheme ==="
#: Unbuffered, so the exception and the request are in the output even if libFuzzer aborts.
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


#: Where requirements-dev.txt installs atheris (its only wheels): Linux x86-64.
ATHERIS_PLATFORM = sys.platform == "linux" and platform.machine() == "x86_64"


@pytest.fixture(autouse=True)
def _atheris() -> None:
    """On Linux x86-64, where ``make test`` installs atheris, a missing atheris fails these
    tests: a run there must never pass without having fuzzed. Elsewhere (no wheels) they are
    skipped, and say so."""
    if importlib.util.find_spec("atheris") is not None:
        return
    if ATHERIS_PLATFORM:
        pytest.fail("atheris is not installed: `make install` installs it (requirements-dev.txt)")
    pytest.skip("atheris has wheels for Linux x86-64 only")


def fuzz(scheme: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the harness on ``scheme`` for ``FUZZ_SECONDS``; reproducers land in ``workdir``."""
    corpus = workdir / "corpus"  # what libFuzzer keeps: the inputs that found new coverage
    corpus.mkdir()
    return run(
        *fuzz_command(scheme),
        f"-max_total_time={FUZZ_SECONDS}",
        "-timeout=10",  # seconds per input: a hang is a finding too
        "-len_control=0",  # full-size inputs from the start: a short run has no time to grow
        f"-artifact_prefix={workdir}/",
        str(corpus),
    )


def fuzz_command(scheme: str) -> list[str]:
    return [sys.executable, "-m", "tests.fuzz_schemes", scheme]


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # atheris prints the exception on stdout, libFuzzer on stderr
        encoding="utf-8",
        errors="replace",
        timeout=FUZZ_SECONDS + 120,
        check=False,
    )


def reproducers(workdir: Path) -> list[Path]:
    return sorted(p for p in workdir.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))


def report(scheme: str, result: subprocess.CompletedProcess[str], found: list[Path]) -> str:
    """What a failure shows: the exception and the request, then how to replay it."""
    output = result.stdout
    starts = [output.find(banner) for banner in (REQUEST_BANNER, "=== Uncaught Python exception")]
    start = min((index for index in starts if index >= 0), default=0)
    lines = [f"fuzzing {scheme!r} exited {result.returncode}", output[start:][-6000:]]
    for path in found:
        lines += [
            f"reproducer {path.name}: {path.read_bytes()!r}",
            "replay (from the repository root): " + shlex.join([*fuzz_command(scheme), str(path)]),
        ]
    return "\n".join(lines)


@pytest.mark.parametrize("scheme", sorted(builtin_scheme_names()))
def test_only_webhook_errors_escape_the_scheme(scheme: str, tmp_path: Path) -> None:
    result = fuzz(scheme, tmp_path)
    found = reproducers(tmp_path)
    assert result.returncode == 0 and not found, report(scheme, result, found)
    # It fuzzed: libFuzzer ends a timed run with "Done <n> runs in <s> second(s)".
    done = re.search(r"^Done (\d+) runs", result.stdout, re.MULTILINE)
    assert done and int(done.group(1)) >= 100, result.stdout[-3000:]


# -- the harness itself finds what it is for -------------------------------------------------
class LeakyScheme(GenericScheme):
    """The classic bug: the body decoded without a guard."""

    def parse(self, request: InboundRequest) -> Delivery:
        request.body.decode("utf-8")  # UnicodeDecodeError for a body that is not UTF-8
        return super().parse(request)


class UnprintableIdScheme(GenericScheme):
    """A delivery the contract forbids, though nothing raises: a control character in the id
    (it would reach logs and the admin)."""

    def parse(self, request: InboundRequest) -> Delivery:
        return Delivery("id\n", "push", {})


@pytest.mark.parametrize(
    ("scheme", "symptom"),
    [("LeakyScheme", "UnicodeDecodeError"), ("UnprintableIdScheme", "is not 1-255 printable")],
)
def test_a_bug_fails_with_the_request_and_a_reproducer_that_replays(
    scheme: str, symptom: str, tmp_path: Path
) -> None:
    dotted = f"{__name__}.{scheme}"
    result = fuzz(dotted, tmp_path)
    assert result.returncode != 0
    assert symptom in result.stdout
    assert REQUEST_BANNER in result.stdout
    [reproducer] = reproducers(tmp_path)
    replay = run(*fuzz_command(dotted), str(reproducer))
    assert replay.returncode != 0
    assert symptom in replay.stdout
