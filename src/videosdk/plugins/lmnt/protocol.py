"""Old home of the wire codec, now the ``lmnt-local`` distribution's :mod:`lmnt_local.protocol`.

An alias (the same module object), so code importing ``videosdk.plugins.lmnt.protocol`` keeps
working unchanged.
"""

import sys

import lmnt_local.protocol as _protocol

sys.modules[__name__] = _protocol
