"""lmnt-local: an LMNT-compatible speech server that runs anywhere, with no key and no network.

The server distribution of this repository, installable without the VideoSDK Agents framework:
the sans-IO wire codec (:mod:`lmnt_local.protocol`), the server with its APIs, text front-end,
engines, operations and encoding (:mod:`lmnt_local.server`), and the ``lmnt-local`` command
(:mod:`lmnt_local.cli`).  Nothing heavy is imported here, so ``lmnt-local --version`` is instant.
"""

from .version import __version__

__all__ = ["__version__"]
