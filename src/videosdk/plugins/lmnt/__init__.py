"""LMNT text-to-speech for VideoSDK Agents, with a local LMNT-compatible server.

``from videosdk.plugins.lmnt import LMNTTTS`` is a drop-in replacement for the 1.0.30 plugin;
``videosdk.plugins.lmnt.server`` holds the local server and ``videosdk.plugins.lmnt.testing``
pytest fixtures for it.
"""

from .errors import (
    LMNTAuthError,
    LMNTConnectionError,
    LMNTError,
    LMNTProtocolError,
    LMNTRateLimitError,
    LMNTServerError,
    LMNTTimeoutError,
)
from .tts import LMNTTTS
from .version import __version__

__all__ = [
    "LMNTTTS",
    "LMNTAuthError",
    "LMNTConnectionError",
    "LMNTError",
    "LMNTProtocolError",
    "LMNTRateLimitError",
    "LMNTServerError",
    "LMNTTimeoutError",
    "__version__",
]
