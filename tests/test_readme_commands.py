"""CI must run exactly the test command the README gives a new user."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.M)
    assert match, ".ci/run must define TEST_COMMAND"
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.+?)\n```", readme, re.S)
    assert match.group(1) in blocks, "the README must show .ci/run's test command verbatim"
    assert 'bash -c "$TEST_COMMAND"' in ci


def test_readme_main_command_speaks_to_a_wav() -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.findall(r"```bash\n(.+?)\n```", readme, re.S)[0]
    assert "lmnt-local say" in first and ".wav" in first
