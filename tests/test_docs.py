"""The documentation site (issue #16): ``mkdocs build --strict`` passes, and the code samples on
its pages (``docs/**/*.md``, snippets included) run.

The rule every fenced block follows, by its language:

``python``
    Compiles, and carries a ``<!-- docs-test: MODE -->`` comment on the lines just above it
    (other comments, such as ``<!-- install:NAME -->``, may stand between) saying how it runs:

    - ``settings``: exec'ed as the end of a ``startproject`` settings module (``BASE_DIR``,
      ``INSTALLED_APPS`` and ``DATABASES`` given). Every ``WEBHOOKS`` key it sets, and every key
      of its sources, is one the app reads, and with its ``WEBHOOKS``, ``Q_CLUSTER`` and
      ``CACHES`` the app's system checks report no error but ``E002`` (a route to a workflow the
      reader writes).
    - ``urls``: exec'ed as the end of a ``startproject`` URLconf, which must then route
      ``/webhooks/health/`` to the app.
    - ``module``: exec'ed as a module of its own, its ``@workflow`` registrations kept apart
      from the project's (a page's ``send_welcome_email`` is not a second registration).
    - ``pytest``: its ``test_*`` functions run with pytest's fixtures, after the page's
      ``module`` blocks and under the ``WEBHOOKS`` of its ``settings`` blocks: the page's
      example test runs as a reader would run it.
    - ``compile: <why>``: compiled only (it needs a server, a secret, the reader's own code);
      the reason is required.

``json``
    Parses (the included sample payloads too).

``sh``, ``console`` (its ``$`` lines)
    Each command exists as written: ``make`` targets and variables are the Makefile's;
    ``manage.py COMMAND`` is a command of this app's test project; ``python -m MODULE`` can be
    imported; ``python FILE.py`` is in the repository or is a page's block that starts with
    ``# FILE.py``; ``python -c CODE`` compiles; ``bash FILE`` exists; every ``--option`` of
    ``manage.py``, ``python -m``, ``pip`` and ``mkdocs`` appears in that command's ``--help``;
    a ``VAR=value`` prefix or ``export`` names a variable the code reads (any
    ``WEBHOOK_SECRET_<NAME>``); ``$(…)`` inside a value is checked the same way. ``mkdir``,
    ``curl`` and ``django-admin`` are taken as they are; any other program fails (add a rule
    here rather than leave it unchecked). Short options and positional placeholders
    (``/path/to/webhooks_app``) are not checked.

Untagged and ``text`` blocks are output, not code; any other language fails until a rule
says how to check it. The ``test_the_checker_*`` tests feed broken samples to the same rules.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytest
from django.contrib import admin
from django.core import checks
from django.core.management import get_commands, load_command_class
from django.test import override_settings
from django.urls import Resolver404, path, resolve

from tests.processes import REPO
from webhooks_app import registry
from webhooks_app.conf import DEFAULTS, SourceConfig

DOCS = REPO / "docs"
SAMPLES = REPO / "webhooks_app" / "samples"
MARKER = re.compile(r"<!--\s*docs-test:\s*(?P<mode>.*?)\s*-->")
COMMENT = re.compile(r"<!--.*-->")
SNIPPET = re.compile(r"""^\s*--8<--\s+"(?P<path>[^"]+)"\s*$""")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w-]*)")
SHELL_LANGS = {"sh", "bash", "shell", "console"}
OUTPUT_LANGS = {"", "text"}
#: The keys a source's options may have: the fields SourceConfig is built from.
SOURCE_KEYS = {f.name.upper() for f in fields(SourceConfig)} - {"NAME", "SECRET_ORIGIN"}
#: Checks whose finding a docs example leaves to the reader: a route to a workflow they write.
READERS_PART = {"webhooks_app.E002"}
EXTERNAL_PROGRAMS = {"mkdir", "curl", "django-admin"}
PYTHONS = {"python", "python3", ".venv/bin/python"}
ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_]\w*)=(?P<value>.*)$", re.S)
SUBSTITUTION = re.compile(r"\$\((?P<command>.*)\)", re.S)
OPERATORS = {"&&", "||", ";", "|", "&"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a page: where it starts, its language, code and docs-test mode."""

    where: str
    page: str
    lang: str
    code: str
    mode: str | None


# -- reading the pages ------------------------------------------------------------------------


def expanded(path: Path) -> list[tuple[str, str]]:
    """The page's lines with each ``--8<-- "file"`` replaced by that file's lines, as
    pymdownx.snippets includes them (paths from the repository's top), each line with where
    it comes from."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        included = SNIPPET.match(line)
        if included:
            lines.extend(expanded(REPO / included["path"]))
        else:
            lines.append((line, f"{path.relative_to(REPO)}:{number}"))
    return lines


def blocks_of(lines: list[tuple[str, str]], page: str) -> list[Block]:
    found = []
    index = 0
    while index < len(lines):
        line, where = lines[index]
        opening = FENCE.match(line)
        if not opening:
            index += 1
            continue
        start, indent, fence = index, len(opening["indent"]), opening["fence"]
        body = []
        index += 1
        while index < len(lines) and not lines[index][0].strip().startswith(fence):
            body.append(lines[index][0][indent:])
            index += 1
        index += 1  # the closing fence
        mode = marker_above(lines[:start])
        found.append(Block(where, page, opening["lang"], "\n".join(body), mode))
    return found


def marker_above(lines: list[tuple[str, str]]) -> str | None:
    """The ``docs-test`` mode in the comment lines that end ``lines`` (those above a fence)."""
    for line, _ in reversed(lines):
        if not COMMENT.fullmatch(line.strip()):
            return None
        marked = MARKER.fullmatch(line.strip())
        if marked:
            return marked["mode"]
    return None


def page_paths() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def all_blocks() -> list[Block]:
    return [
        block
        for path in page_paths()
        for block in blocks_of(expanded(path), str(path.relative_to(REPO)))
    ]


BLOCKS = all_blocks()


#: ``send_webhook.py`` and the like: files a page's block makes (it starts with ``# NAME.py``).
FILES_MADE_BY_PAGES = frozenset(
    match[1]
    for block in BLOCKS
    if block.lang == "python" and (match := re.match(r"# ([\w./-]+\.py)\b", block.code))
)


# -- shell ----------------------------------------------------------------------------------


@functools.cache
def makefile() -> tuple[frozenset[str], frozenset[str]]:
    """The Makefile's targets and variables."""
    text = (REPO / "Makefile").read_text()
    targets = re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", text, re.M)
    variables = re.findall(r"^([A-Za-z_]\w*)\s*[?:+]?=", text, re.M)
    return frozenset(targets), frozenset(variables)


@functools.cache
def code_text() -> str:
    """Every Python file the environment variables could be read in."""
    return "\n".join(
        path.read_text()
        for folder in ("project", "webhooks_app", "bench", "tests")
        for path in (REPO / folder).rglob("*.py")
        if path != Path(__file__)  # whose broken samples name variables nothing reads
    )


def variable_problems(name: str) -> list[str]:
    if name.startswith("WEBHOOK_SECRET_") or re.search(rf"""["']{name}["']""", code_text()):
        return []
    return [f"no code reads the environment variable {name}"]


@functools.cache
def help_text(*command: str) -> str:
    result = subprocess.run(
        [*command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"{shlex.join(command)} --help failed:\n{result.stderr}"
    return result.stdout


@functools.cache
def manage_py_help(name: str) -> str:
    command = load_command_class(get_commands()[name], name)
    return command.create_parser("manage.py", name).format_help()


def option_problems(args: list[str], help_of: str, program: str) -> list[str]:
    return [
        f"{program} has no option {option}"
        for option in (arg.split("=", 1)[0] for arg in args if arg.startswith("--"))
        if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_of)
    ]


def long_options_used(args: list[str]) -> bool:
    return any(arg.startswith("--") for arg in args)


def python_problems(args: list[str]) -> list[str]:
    if not args:
        return ["python without arguments"]
    first, rest = args[0], args[1:]
    if first == "manage.py":
        if not rest or rest[0] not in get_commands():
            return [f"no manage.py command {rest[:1]}"]
        return option_problems(rest[1:], manage_py_help(rest[0]), f"manage.py {rest[0]}")
    if first == "-m":
        module, options = rest[0], rest[1:]
        if importlib.util.find_spec(module) is None:
            return [f"no module {module}"]
        problems = [
            f"no file {arg}" for arg in options if arg.endswith(".py") and not (REPO / arg).exists()
        ]
        if long_options_used(options):
            problems += option_problems(
                options, help_text(sys.executable, "-m", module), f"python -m {module}"
            )
        return problems
    if first == "-c":
        return code_problems(rest[0], "python -c")
    if first.endswith(".py"):
        return (
            [] if (REPO / first).exists() or first in FILES_MADE_BY_PAGES else [f"no file {first}"]
        )
    return [f"python {first}: no rule for it"]


def code_problems(code: str, where: str) -> list[str]:
    try:
        compile(code, where, "exec")
    except SyntaxError as error:
        return [f"{where} does not compile: {error}"]
    return []


def command_problems(words: list[str]) -> list[str]:
    problems: list[str] = []
    while words and (assignment := ASSIGNMENT.match(words[0])):
        problems += assignment_problems(assignment)
        words = words[1:]
    if not words:
        return problems
    program, args = words[0], words[1:]
    if program == "make":
        targets, variables = makefile()
        for arg in args:
            if assignment := ASSIGNMENT.match(arg):
                if assignment["name"] not in variables:
                    problems.append(f"the Makefile has no variable {assignment['name']}")
            elif arg not in targets:
                problems.append(f"the Makefile has no target {arg}")
    elif program in PYTHONS:
        problems += python_problems(args)
    elif program in ("pip", ".venv/bin/pip", "mkdocs", ".venv/bin/mkdocs"):
        tool = Path(program).name
        if long_options_used(args):
            helped = help_text(sys.executable, "-m", tool, args[0])
            problems += option_problems(args[1:], helped, f"{tool} {args[0]}")
    elif program == "export":
        for arg in args:
            if assignment := ASSIGNMENT.match(arg):
                problems += assignment_problems(assignment)
            else:
                problems.append(f"export {arg}: not an assignment")
    elif program == "bash":
        if not (REPO / args[0]).exists():
            problems.append(f"no file {args[0]}")
    elif program not in EXTERNAL_PROGRAMS:
        problems.append(f"{program}: no rule for this program")
    return problems


def assignment_problems(assignment: re.Match[str]) -> list[str]:
    problems = variable_problems(assignment["name"])
    if substitution := SUBSTITUTION.search(assignment["value"]):
        problems += line_problems(substitution["command"])
    return problems


def line_problems(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    problems: list[str] = []
    words: list[str] = []
    for token in [*lexer, ";"]:
        if token in OPERATORS:
            problems += command_problems(words)
            words = []
        else:
            words.append(token)
    return problems


def shell_lines(block: Block) -> Iterator[str]:
    """The commands of a shell block: a console's ``$`` lines, or every line (continuations
    joined)."""
    text = block.code.replace("\\\n", " ")
    for line in text.splitlines():
        if block.lang == "console":
            if line.startswith("$ "):
                yield line[2:]
        elif line.strip():
            yield line


def shell_problems(block: Block) -> list[str]:
    return [
        f"{line!r}: {problem}" for line in shell_lines(block) for problem in line_problems(line)
    ]


# -- python -----------------------------------------------------------------------------------


def startproject_settings(base_dir: Path) -> dict[str, Any]:
    """What a fresh ``startproject`` settings module holds that the docs' settings extend."""
    return {
        "__name__": "docs_settings",
        "BASE_DIR": base_dir,
        "INSTALLED_APPS": ["django.contrib.admin", "django.contrib.auth"],
        "DATABASES": {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": base_dir / "db.sqlite3"}
        },
    }


def settings_problems(namespace: dict[str, Any]) -> list[str]:
    """Unknown ``WEBHOOKS`` keys, and the system checks' errors for what the block set."""
    webhooks = namespace.get("WEBHOOKS", {})
    problems = [f"WEBHOOKS has no key {key!r}" for key in set(webhooks) - set(DEFAULTS)]
    for name, options in webhooks.get("SOURCES", {}).items():
        problems += [
            f"source {name!r} has no key {key!r}" for key in set(options or {}) - SOURCE_KEYS
        ]
    # A block that sets no WEBHOOKS is judged as a project without it (not the test settings').
    judged = {"WEBHOOKS": webhooks}
    judged.update({name: namespace[name] for name in ("Q_CLUSTER", "CACHES") if name in namespace})
    with override_settings(**judged):
        # No database, as for a plain `manage.py check` on Django 5.2: Django 6 hands every
        # check all the aliases by default, and its model checks then query SQLite's features.
        found = checks.run_checks(databases=[])
    problems += [
        f"{message.id}: {message.msg}"
        for message in found
        if message.is_serious()
        and (message.id or "").startswith("webhooks_app.")
        and message.id not in READERS_PART
    ]
    return problems


def urls_problems(namespace: dict[str, Any]) -> list[str]:
    urlconf = types.ModuleType("docs_urls")
    urlconf.urlpatterns = namespace["urlpatterns"]
    try:
        view_name = resolve("/webhooks/health/", urlconf=urlconf).view_name
    except Resolver404:
        view_name = None
    return [] if view_name == "webhooks_app:health" else ["/webhooks/health/ is not the app's"]


class Runner:
    """Runs a page's Python blocks by their mode (the module docstring's rules)."""

    def __init__(
        self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        self.request, self.tmp_path = request, tmp_path
        # The docs' workflows register into a registry of their own.
        monkeypatch.setattr(registry, "_decorated", {})
        monkeypatch.setattr(registry, "_decorated_limits", {})
        monkeypatch.setattr(registry, "_from_settings", {})

    def problems(self, block: Block, page: list[Block]) -> list[str]:
        if block.lang in SHELL_LANGS:
            return shell_problems(block)
        if block.lang == "json":
            try:
                json.loads(block.code)
            except ValueError as error:
                return [f"not JSON: {error}"]
            return []
        if block.lang in OUTPUT_LANGS:
            return []
        if block.lang != "python":
            return [f"no rule for {block.lang!r} blocks: add one to tests/test_docs.py"]
        return code_problems(block.code, block.where) or self.python_problems(block, page)

    def python_problems(self, block: Block, page: list[Block]) -> list[str]:
        mode = block.mode
        if mode is None:
            return ["a python block needs a <!-- docs-test: MODE --> comment above it"]
        if mode.startswith("compile"):
            return [] if mode.partition(":")[2].strip() else ["compile: say why it cannot run"]
        if mode == "settings":
            self.register_workflows(page)
            return settings_problems(self.exec(block, startproject_settings(self.tmp_path)))
        if mode == "urls":
            start = {"__name__": "docs_urls", "urlpatterns": [path("admin/", admin.site.urls)]}
            return urls_problems(self.exec(block, start))
        if mode == "module":
            self.exec(block, {"__name__": module_name(block)})
            return []
        if mode == "pytest":
            return self.run_tests(block, page)
        return [f"unknown docs-test mode {mode!r}"]

    def exec(self, block: Block, namespace: dict[str, Any]) -> dict[str, Any]:
        exec(compile(block.code, block.where, "exec"), namespace)
        return namespace

    def register_workflows(self, page: list[Block]) -> None:
        """Run the page's ``module`` blocks: the workflows its settings and tests name."""
        for other in page:
            if other.lang == "python" and other.mode == "module":
                self.exec(other, {"__name__": module_name(other)})

    def run_tests(self, block: Block, page: list[Block]) -> list[str]:
        self.register_workflows(page)
        settings = startproject_settings(self.tmp_path)
        for other in page:
            if other.lang == "python" and other.mode == "settings":
                self.exec(other, settings)
        tests = self.exec(block, {"__name__": module_name(block)})
        ran = []
        with override_settings(WEBHOOKS=settings.get("WEBHOOKS", {})):
            for name, func in tests.items():
                if name.startswith("test_") and callable(func):
                    parameters = inspect.signature(func).parameters
                    func(**{p: self.request.getfixturevalue(p) for p in parameters})
                    ran.append(name)
        return [] if ran else ["a pytest block without a test_ function"]


def module_name(block: Block) -> str:
    return "docs_" + re.sub(r"\W", "_", block.where)


@pytest.fixture
def runner(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Runner:
    return Runner(request, monkeypatch, tmp_path)


def blocks_of_page(page: str) -> list[Block]:
    return [block for block in BLOCKS if block.page == page]


# -- the site -------------------------------------------------------------------------------


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=REPO,  # snippets are included from the repository's top (mkdocs.yml: base_path)
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    built = mkdocs_build(REPO / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stderr
    assert "WARNING" not in built.stderr
    stripe = (tmp_path / "site" / "providers" / "stripe" / "index.html").read_text()
    assert "in_1R2xYwAbCdEfGhIjT8kL2mNp" in stripe  # the sample payload, included
    assert "Keep a Changelog" in (tmp_path / "site" / "changelog" / "index.html").read_text()


def test_a_broken_link_fails_the_build(tmp_path):
    """The strict build is not a formality: a page linking nowhere fails it."""
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)  # symlinks followed: the screenshots are copied
    with (docs / "index.md").open("a") as page:
        page.write("\n[gone](no-such-page.md)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"INHERIT: {REPO / 'mkdocs.yml'}\ndocs_dir: {docs}\n")
    built = mkdocs_build(config, tmp_path / "site")
    assert built.returncode != 0
    assert "no-such-page.md" in built.stderr


def test_every_sample_payload_is_on_a_provider_page():
    included = {
        (REPO / match["path"]).resolve()
        for path in page_paths()
        for line in path.read_text().splitlines()
        if (match := SNIPPET.match(line))
    }
    samples = {path.resolve() for path in SAMPLES.rglob("*.json")}
    assert samples <= included, sorted(str(p.relative_to(SAMPLES)) for p in samples - included)


# -- the code samples ---------------------------------------------------------------------------


def test_the_pages_have_code_of_every_kind():
    """The parametrised test below would pass on pages it no longer finds code in."""
    modes = {block.mode.partition(":")[0] for block in BLOCKS if block.mode}
    assert modes == {"settings", "urls", "module", "pytest", "compile"}
    assert {block.lang for block in BLOCKS} >= {"python", "sh", "console", "json"}


def block_params() -> list[Any]:
    """Each block as a test case; a page's pytest example gets the database it asks for."""
    return [
        pytest.param(
            block, id=block.where, marks=[pytest.mark.django_db] if block.mode == "pytest" else []
        )
        for block in BLOCKS
    ]


@pytest.mark.parametrize("block", block_params())
def test_code_block(block, runner):
    assert runner.problems(block, blocks_of_page(block.page)) == []


# -- the checker itself: broken samples are reported -----------------------------------------


def sample_blocks(markdown: str) -> list[Block]:
    lines = [(line, f"sample.md:{n}") for n, line in enumerate(markdown.splitlines(), 1)]
    return blocks_of(lines, "sample.md")


BROKEN = {
    "unmarked python": ("```python\nx = 1\n```", "needs a <!-- docs-test"),
    "compile without why": ("<!-- docs-test: compile -->\n```python\nx = 1\n```", "say why"),
    "syntax error": ("<!-- docs-test: module -->\n```python\ndef f(:\n```", "does not compile"),
    "import error": (
        "<!-- docs-test: module -->\n```python\nfrom webhooks_app import nothing_here\n```",
        ImportError,
    ),
    "unknown setting": (
        '<!-- docs-test: settings -->\n```python\nWEBHOOKS = {"MAX_ATTEMPT": 3}\n```',
        "no key 'MAX_ATTEMPT'",
    ),
    "unknown source key": (
        '<!-- docs-test: settings -->\n```python\nWEBHOOKS = {"SOURCES": {"s": {"SCHEME": "github", "SECRET": "x"}}}\n```',
        "no key 'SECRET'",
    ),
    "unknown scheme": (
        '<!-- docs-test: settings -->\n```python\nWEBHOOKS = {"SOURCES": {"s": {"SCHEME": "nope"}}}\n```',
        "webhooks_app.E001",
    ),
    "retry not above timeout": (
        '<!-- docs-test: settings -->\n```python\nQ_CLUSTER = {"orm": "default", "timeout": 60, "retry": 60}\n```',
        "webhooks_app.E004",
    ),
    "urlconf without the app": (
        "<!-- docs-test: urls -->\n```python\nurlpatterns += []\n```",
        "/webhooks/health/ is not the app's",
    ),
    "bad json": ('```json\n{"a": 1,}\n```', "not JSON"),
    "unknown language": ("```yaml\na: 1\n```", "no rule for 'yaml'"),
    "unknown make target": ("```sh\nmake docs-nope\n```", "no target docs-nope"),
    "unknown make variable": ("```sh\nmake run PROT=8001\n```", "no variable PROT"),
    "unknown command": ("```sh\npython manage.py replay_everything\n```", "no manage.py command"),
    "unknown option": (
        "```console\n$ python manage.py cleanup_webhook_events --age 3\nDeleted 0.\n```",
        "has no option --age",
    ),
    "unknown module": ("```sh\npython -m bench.nope --smoke\n```", "no module bench.nope"),
    "unknown module option": ("```sh\npython -m bench.ingest --quick\n```", "has no option --quick"),
    "unknown variable": ("```sh\nWEBHOOKS_MODE=fast make test\n```", "WEBHOOKS_MODE"),
    "unknown program": ("```sh\nrm -rf var\n```", "rm: no rule"),
    "missing file": ("```sh\nbash .ci/nothing\n```", "no file .ci/nothing"),
    "substitution": ('```sh\nexport WEBHOOK_SECRET_X="$(python -c \'print(\')"\n```', "does not compile"),
}  # fmt: skip


@pytest.mark.parametrize("name", BROKEN)
def test_the_checker_reports_a_broken_sample(name, runner):
    markdown, expected = BROKEN[name]
    [block] = sample_blocks(markdown)
    if isinstance(expected, str):
        assert any(expected in problem for problem in runner.problems(block, [block]))
    else:
        with pytest.raises(expected):
            runner.problems(block, [block])


@pytest.mark.django_db
def test_the_checker_runs_a_pages_pytest_example(runner):
    """A pytest block runs for real: an assertion that does not hold fails it."""
    page = sample_blocks(
        "<!-- docs-test: pytest -->\n```python\ndef test_it(db):\n    assert 1 == 2\n```"
    )
    with pytest.raises(AssertionError):
        runner.problems(page[0], page)
