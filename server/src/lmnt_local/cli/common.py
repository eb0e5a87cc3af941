"""Shared by every ``lmnt-local`` command: exit codes, the one-line error, notes on stderr,
and the engine an embedded or served server speaks with.

A leaf module (it imports no other ``cli*`` module), so :mod:`.main`, :mod:`.say`,
:mod:`.voices` and :mod:`.serve` share one ``CLIError`` class however the CLI is
started (``lmnt-local`` or ``python -m lmnt_local``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lmnt_local.protocol import STREAM_PATH

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT / SIGTERM, as shells report them
ENGINES = ("auto", "hibari", "neural", "espeak", "tone")
#: Placeholder key for servers that accept any non-empty key (the embedded one, a keyless
#: ``lmnt-local serve``): a real key is never sent where it is not needed.
LOCAL_KEY = "local"


class CLIError(Exception):
    """A failure reported as one ``lmnt-local: ...`` line with an exit code, no traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def _ws_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected a ws:// or wss:// URL with a host, got {value!r} "
            f"(the local server's is ws://127.0.0.1:PORT{STREAM_PATH})"
        )
    return value


def _engine(
    name: str, quiet: bool = False, voice_dirs: Sequence[Path] = (), announce: bool = True
) -> Any:
    """The engine for an embedded or served server, named on stderr (``announce``, unless
    ``quiet``): ``auto`` is the best installed one (hibari, Piper, espeak-ng, then the tone,
    with a hint)."""
    from lmnt_local.server.engines import EngineUnavailable, make_engine

    try:
        engine = make_engine(name, voice_dirs=voice_dirs)
    except (EngineUnavailable, RuntimeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if not quiet:
        if engine.name == "tone" and name == "auto":
            _note(
                "no speech engine is installed, using the 440 Hz tone engine "
                '(for speech, from a checkout: pip install ".[local]")'
            )
        elif announce and not hasattr(engine, "route"):
            _note(f"speech engine: {_describe_engine(engine)}")
    return engine


def _report_engine(engine: Any, *, announce: bool = True) -> None:
    """After the engine has loaded (a server's ``start()``): what speaks, the voice files
    left out and the names that speak with another gender, on stderr without ``-v``."""
    if announce and hasattr(engine, "route"):
        _note(f"speech engine: {_describe_engine(engine)}")
    for problem in getattr(engine, "problems", ()):
        _note(f"warning: {problem}")
    notes = getattr(engine, "notes", None)
    if callable(notes):
        for line in notes():
            _note(f"note: {line}")


def _describe_engine(engine: Any) -> str:
    describe = getattr(engine, "describe", None)
    if callable(describe):
        return str(describe())
    if engine.name not in ("neural", "hibari"):
        return str(engine.name)
    voices = [v for v in engine.voices() if "alias" not in v.tags]
    if voices and engine.name == "hibari":
        return f"hibari (voices {', '.join(v.id for v in voices)})"
    if voices:
        return f"neural (Piper; voices {', '.join(v.id for v in voices)})"
    return str(engine.name)


def _note(message: str, level: int = logging.INFO) -> None:
    """One ``lmnt-local: ...`` line on stderr, or a JSON log record under ``--log-format json``
    (a log collector reading that stream must get JSON lines only)."""
    if any(getattr(h.formatter, "json_lines", False) for h in logging.getLogger().handlers):
        logging.getLogger("lmnt_local.cli").log(level, "%s", message)
        return
    print(f"lmnt-local: {message}", file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    """The useful part of an OS/library error, without errno noise or reprs."""
    if getattr(exc, "os_error", None) is not None:  # aiohttp's "Cannot connect to host ..."
        from lmnt_local.protocol.hosts import connect_failure_reason

        return connect_failure_reason(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
