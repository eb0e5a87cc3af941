"""Where fetched voices live: one directory the server reads by default.

``lmnt-local voices fetch`` writes there and ``lmnt-local serve`` (every engine choice that has
voices) reads it without being told, so a fetched voice is one command away from speaking.
``$LMNT_VOICES_HOME`` overrides it; else ``$XDG_DATA_HOME/lmnt-local/voices`` (default
``~/.local/share/lmnt-local/voices``).  Each engine has its own subdirectory (``piper/``,
``hibari/``): their files are both ``.onnx`` and must not be read by the other engine.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["VOICES_HOME_ENV", "engine_dir", "voices_home"]

VOICES_HOME_ENV = "LMNT_VOICES_HOME"


def voices_home() -> Path:
    """The voice directory (it may not exist yet)."""
    given = os.environ.get(VOICES_HOME_ENV, "").strip()
    if given:
        return Path(given).expanduser()
    data = os.environ.get("XDG_DATA_HOME", "").strip()
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "lmnt-local" / "voices"


def engine_dir(engine: str) -> Path:
    """``voices_home() / engine`` (``piper`` or ``hibari``)."""
    return voices_home() / engine


def existing_dirs(engine: str) -> list[Path]:
    """The engine's fetched-voice directory, if it exists: what engines read by default."""
    path = engine_dir(engine)
    return [path] if path.is_dir() else []
