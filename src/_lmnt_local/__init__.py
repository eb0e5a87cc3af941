"""Entry point of the ``lmnt-local`` command: answers ``--version`` without importing anything.

Any module under ``videosdk.`` first imports the ``videosdk`` package, the VideoSDK RTC SDK,
whose ``__init__`` alone takes about 0.7 s; the plugin's CLI then needs the agents framework
for ``say``.  A top-level module is the only way a version query can skip all of that, so this
one handles ``lmnt-local --version`` itself and hands everything else to
``videosdk.plugins.lmnt.cli``, which imports what each command needs only when it runs.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

__all__ = ["main"]

_VERSION_FILE = Path(__file__).resolve().parent.parent / "videosdk/plugins/lmnt/version.py"


def _version() -> str | None:
    """The package version, read from the source file that defines it (no import)."""
    try:
        match = re.search(r"__version__\s*=\s*[\"']([^\"']+)[\"']", _VERSION_FILE.read_text())
    except OSError:
        match = None
    if match:
        return match.group(1)
    try:
        from importlib.metadata import version

        return version("videosdk-plugins-lmnt")
    except Exception:
        return None


def main() -> int:
    if sys.argv[1:] == ["--version"]:
        found = _version()
        if found is not None:
            print(f"lmnt-local {found}")
            return 0
    from videosdk.plugins.lmnt.cli import main as cli_main

    return cli_main()
