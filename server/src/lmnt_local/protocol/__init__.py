"""Sans-IO codec of the LMNT streaming speech protocol, for both ends.

:mod:`.wire` is the vocabulary both ends share, :mod:`.client` builds and reads frames as a
client does, :mod:`.server` as a server does, and :mod:`.hosts` says where clear-text ``ws://``
may go.  No sockets, no event loop: the plugin, the local server, the CLI and the fuzz tests
agree on one definition of the wire.  Every public name is importable from this package.
"""

from lmnt_local.protocol.client import *  # noqa: F403
from lmnt_local.protocol.client import STREAM_PATH as STREAM_PATH
from lmnt_local.protocol.client import VERSIONS as VERSIONS
from lmnt_local.protocol.client import ClientCommand as ClientCommand
from lmnt_local.protocol.client import ErrorType as ErrorType
from lmnt_local.protocol.client import InitError as InitError
from lmnt_local.protocol.client import __all__ as __all__
from lmnt_local.protocol.client import split_complete_sentences as split_complete_sentences
