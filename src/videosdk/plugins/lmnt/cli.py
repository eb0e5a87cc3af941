"""Old home of the ``lmnt-local`` command, now :mod:`lmnt_local.cli` (server distribution).

``python -m videosdk.plugins.lmnt.cli ...`` still runs it.
"""

import sys

from lmnt_local.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
