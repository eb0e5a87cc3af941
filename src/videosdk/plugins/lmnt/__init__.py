"""LMNT text-to-speech for VideoSDK Agents, with a local LMNT-compatible server.

``from videosdk.plugins.lmnt import LMNTTTS`` is a drop-in replacement for the 1.0.30 plugin;
``lmnt_local.server`` holds the local server and ``videosdk.plugins.lmnt.testing``
pytest fixtures for it.

``LMNTTTS`` is imported on first use: it pulls in the VideoSDK Agents framework (over a second
of imports), which ``lmnt-local --version`` or a server-only process should not pay for.
"""

from typing import TYPE_CHECKING, Any

from .agent_text import pipeline_options
from .errors import (
    LMNTAuthError,
    LMNTConnectionError,
    LMNTError,
    LMNTProtocolError,
    LMNTRateLimitError,
    LMNTServerError,
    LMNTTimeoutError,
)
from .version import __version__

if TYPE_CHECKING:
    from .tts import LMNTTTS

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
    "pipeline_options",
]


def __getattr__(name: str) -> Any:
    if name == "LMNTTTS":
        from .tts import LMNTTTS

        return LMNTTTS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
