"""Every install line and command the docs give works as written (issue 11.2, 11.7).

A new user copies lines from README.md, docs/*.md, the examples' docstrings and the messages
the package prints.  Installing them for real takes minutes, so each line is checked against
the rules that decide whether it can work:

* ``pip install`` of this project must name the checkout (``.`` / ``".[extra]"``), never the
  package index: the index holds only the 1.0.30 release, which is another package (no
  ``local`` extra, no ``lmnt-local``).  Every extra named must exist in pyproject.toml, and any
  other package named must be one pyproject.toml declares (so the line installs what is tested).
* every ``lmnt-local ...`` command line parses with the real CLI parser;
* every ``python path/to/script.py`` and every repository path a doc names exists.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from lmnt_local.cli.app import _build_parser

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The server distribution's project, installable alone from ``./server``.
SERVER_PYPROJECT = tomllib.loads((ROOT / "server" / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
EXTRAS = set(PYPROJECT["project"]["optional-dependencies"])
#: The extras each checkout path offers.
PATH_EXTRAS = {
    ".": EXTRAS,
    "./server": set(SERVER_PYPROJECT["project"]["optional-dependencies"]),
}
DECLARED = {
    canonicalize_name(Requirement(r.replace("{root:uri}", "file:///r")).name)
    for project in (PYPROJECT, SERVER_PYPROJECT)
    for r in [
        *project["project"]["dependencies"],
        *(r for reqs in project["project"]["optional-dependencies"].values() for r in reqs),
    ]
}
DOCS = sorted(
    [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *(ROOT / "examples").glob("*.py"),
        *(ROOT / "benchmarks").glob("*.md"),
        *(ROOT / "src").rglob("*.py"),  # hints the packages print
        *(ROOT / "server" / "src").rglob("*.py"),
    ]
)
# Shell text that ends a command: pipes, redirections, chaining, comments.
_STOP = {"|", "||", "&&", ";", "&", "<", ">", ">>", "2>", "2>&1"}


def _source(path: Path) -> str:
    return path.read_text()


def _commands(text: str, program: str) -> list[str]:
    """Each occurrence of ``program ...`` up to the end of its shell command."""
    found = []
    for line in text.splitlines():
        for match in re.finditer(rf"(?<![\w./-]){re.escape(program)}(?=\s)", line):
            found.append(line[match.start() :])
    return found


def _words(command: str) -> list[str]:
    """The arguments of one shell command: quotes resolved, stopped at | && ; < > #."""
    command = command.replace("`", " ` ")  # inline code in Markdown ends at a backtick
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words: list[str] = []
    try:
        for word in lexer:
            if word in _STOP or word.startswith(("|", "&", ";", "<", ">")) or word == "`":
                break
            words.append(word.rstrip(")") or word)
            if word.endswith(")"):  # "(see: lmnt-local say --help)": prose goes on after it
                break
    except ValueError:  # an unclosed quote: the end of a string literal around the command
        if command and command[-1] in "\"'":
            return _words(command[:-1])
        return []
    return words


def _pip_lines() -> list[tuple[str, str]]:
    lines = []
    for path in DOCS:
        for command in _commands(_source(path), "pip install"):
            lines.append((f"{path.relative_to(ROOT)}", command))
    return lines


PIP_LINES = _pip_lines()


def test_the_docs_have_install_lines() -> None:
    assert len(PIP_LINES) >= 5, PIP_LINES


@pytest.mark.parametrize(("where", "command"), PIP_LINES, ids=[w for w, _ in PIP_LINES])
def test_install_line_installs_this_checkout_or_a_declared_package(
    where: str, command: str
) -> None:
    args = _words(command)[2:]  # after "pip install"
    targets = [a for a in args if not a.startswith("-")]
    assert targets, f"{where}: nothing to install in {command!r}"
    for target in targets:
        path, _, extras = target.partition("[")
        if path in (".", "./") or path.startswith(("./", "/")):
            path = path.rstrip("/") or "."
            assert path in PATH_EXTRAS, f"{where}: {target!r} is no installable project here"
            named = {e.strip() for e in extras.rstrip("]").split(",") if e.strip()}
            assert named <= PATH_EXTRAS[path], f"{where}: {target!r} names extras it lacks"
            continue
        try:
            requirement = Requirement(target)
        except InvalidRequirement:
            pytest.fail(f"{where}: {target!r} is neither a path nor a requirement")
        name = canonicalize_name(requirement.name)
        assert name != PROJECT, (
            f"{where}: {target!r} installs the package index's {PROJECT} (the 1.0.30 release: "
            "no 'local' extra, no lmnt-local), not this code; install the checkout: "
            'pip install ".[local]"'
        )
        assert name in DECLARED, f"{where}: {target!r} is not a dependency in pyproject.toml"


def _cli_lines() -> list[tuple[str, list[str]]]:
    lines = []
    for path in DOCS:
        for command in _commands(_source(path), "lmnt-local"):
            words = _words(command)[1:]
            # Inline mentions such as `lmnt-local serve` or a table's `lmnt-local say TEXT -o
            # out.wav` are checked too once placeholders are filled in.
            words = [
                {"TEXT": "text", "URL": "ws://127.0.0.1:1/x", "N": "2"}.get(w, w) for w in words
            ]
            if "/" in words:  # prose such as `lmnt-local serve / say / voices`
                continue
            if words and words[0] in ("serve", "say", "voices", "--version"):
                lines.append((f"{path.relative_to(ROOT)}", words))
    return lines


CLI_LINES = _cli_lines()


def test_the_docs_have_cli_lines() -> None:
    assert len(CLI_LINES) >= 15, CLI_LINES


@pytest.mark.parametrize(
    ("where", "argv"), CLI_LINES, ids=[f"{w}:{' '.join(a)[:40]}" for w, a in CLI_LINES]
)
def test_cli_line_parses(where: str, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    if argv == ["--version"]:
        return
    if argv[0] == "say" and "-o" not in argv and "--output" not in argv:
        argv = [*argv, "-o", "x.wav"]  # prose such as "a `lmnt-local say`" names no output
    try:
        _build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help
            return
        pytest.fail(f"{where}: lmnt-local {' '.join(argv)} -> {exc.code}: {capsys.readouterr()}")


def _repo_paths() -> list[tuple[str, str]]:
    """Repository paths that the docs tell a user to open or run."""
    found = []
    pattern = re.compile(
        r"(?<![\w./-])((?:src|lmnt-local|docs|examples|benchmarks|tests|shared|\.ci)/[\w./*-]*[\w*])"
    )
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "benchmarks/README.md"]:
        text = _source(path)
        for match in pattern.finditer(text):
            found.append((f"{path.relative_to(ROOT)}", match.group(1)))
        # relative links only: "[word](/IPA/)" (inline pronunciations, docs/text.md) is no path
        for link in re.findall(r"\]\(([^)#:/][^)#:]*)(?:#[^)]*)?\)", text):
            found.append((f"{path.relative_to(ROOT)}", str((path.parent / link).relative_to(ROOT))))
    for path in (ROOT / "examples").glob("*.py"):
        for script in re.findall(r"python3? ((?:examples|benchmarks)/\w+\.py)", _source(path)):
            found.append((f"{path.relative_to(ROOT)}", script))
    return sorted(set(found))


REPO_PATHS = _repo_paths()


def test_every_repository_path_the_docs_name_exists() -> None:
    assert len(REPO_PATHS) >= 10
    # Hidden folders (benchmarks/.cache) are made by the scripts, not shipped.
    missing = [
        (w, p)
        for w, p in REPO_PATHS
        if "/." not in p and not (any(ROOT.glob(p)) if "*" in p else (ROOT / p).exists())
    ]
    assert missing == [], missing
