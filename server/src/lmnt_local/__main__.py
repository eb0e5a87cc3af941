"""``python -m lmnt_local``: the same as the ``lmnt-local`` command."""

import sys

from lmnt_local.cli import main

sys.exit(main())
