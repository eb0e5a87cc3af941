"""``lmnt-local``: serve, say, voices.

:func:`main` answers ``lmnt-local --version`` without importing the server or any engine; every
other command is parsed and run by :mod:`.main`, which imports what each command needs only
when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``lmnt-local`` entry point; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:
        from lmnt_local.version import __version__

        print(f"lmnt-local {__version__}")
        return 0
    from lmnt_local.cli.app import main as run

    return run(None if argv is None else args)  # None: the program itself (see app.main)
