"""Sans-IO codec of the LMNT streaming speech protocol, for both client and server.

Two generations share one socket shape (JSON text frames for control, binary frames for audio):

* legacy ("1.0", or no ``lmnt-version``): ``{"text"}``, ``{"flush": true}``, ``{"eof": true}``;
  the server answers with audio, optional ``durations`` extras before each audio frame, and
  ``{"error": "<string>"}`` followed by close 1002.
* typed ("1.1"/"1.2"): ``{"type": "text"|"flush"|"reset"|"finish", ...}``; the server sends
  ``ready``, ``timestamps``, ``flush_complete``, ``reset_complete`` and structured ``error``.

Nothing here touches a socket or an event loop: callers hand in the frames they read and send
the strings this module builds, which is what lets the plugin, the local server and the fuzz
tests agree on one definition of the wire.  See ``shared/reference/lmnt-protocol.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias

# The shared vocabulary and the server side live in their own modules; every name stays
# importable from here, as before the split.
from lmnt_local.protocol.server import (
    ClientCommand as ClientCommand,
)
from lmnt_local.protocol.server import (
    Eof,
    Flush,
    InitRequest,
    Reset,
    Text,
    decode_client_message,
    encode_error,
    encode_extras,
    encode_flush_complete,
    encode_interim_complete,
    encode_ready,
    encode_reset_complete,
    encode_timestamps,
    parse_init,
)
from lmnt_local.protocol.server import (
    InitError as InitError,
)
from lmnt_local.protocol.server import (
    split_complete_sentences as split_complete_sentences,
)
from lmnt_local.protocol.wire import (
    DEFAULT_WS_URL,
    ERROR_TYPES,
    FORMATS,
    JSON,
    LANGUAGES,
    LEGACY_VERSION,
    MODELS,
    SAMPLE_RATES,
    SERVER_FORMATS,
    TYPED_VERSIONS,
    WordSpan,
    _dumps,
    _finite,
    _nonce,
    _quote,
    _short,
    has_lone_surrogate,
    is_typed,
)
from lmnt_local.protocol.wire import (
    STREAM_PATH as STREAM_PATH,
)
from lmnt_local.protocol.wire import (
    VERSIONS as VERSIONS,
)
from lmnt_local.protocol.wire import (
    ErrorType as ErrorType,
)

__all__ = [
    "DEFAULT_WS_URL",
    "ERROR_TYPES",
    "FORMATS",
    "LANGUAGES",
    "LEGACY_VERSION",
    "MODELS",
    "SAMPLE_RATES",
    "SERVER_FORMATS",
    "TYPED_VERSIONS",
    "Audio",
    "ClientDecoder",
    "ClientEvent",
    "Eof",
    "ErrorFrame",
    "Extras",
    "Flush",
    "FlushComplete",
    "InitRequest",
    "ProtocolViolation",
    "Ready",
    "Reset",
    "ResetComplete",
    "SessionOptions",
    "Text",
    "Timestamps",
    "WordSpan",
    "decode_client_message",
    "encode_client_eof",
    "encode_client_flush",
    "encode_client_reset",
    "encode_client_text",
    "encode_error",
    "encode_extras",
    "encode_flush_complete",
    "encode_interim_complete",
    "encode_ready",
    "encode_reset_complete",
    "encode_timestamps",
    "has_lone_surrogate",
    "is_typed",
    "parse_init",
]

# --------------------------------------------------------------------------------------------
# Client side: the init frame and commands
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Everything the init frame carries.

    ``None`` means "not sent": the service rejected explicit JSON nulls (close 1002, no audio),
    so optional fields are omitted rather than nulled.
    """

    api_key: str
    voice: str
    model: str | None = "blizzard"
    language: str | None = "auto"
    format: str = "pcm_s16le"
    sample_rate: int = 24000
    seed: int | None = None
    temperature: float | None = 1.0
    top_p: float | None = 0.8
    version: str = LEGACY_VERSION
    speed: float | None = None  # LMNT's pace, 0.25-2.0; None keeps 1.0.30's init frame
    return_extras: bool = False
    return_timestamps: bool = False

    def init_payload(self) -> JSON:
        payload: JSON = {"X-API-Key": self.api_key, "lmnt-version": self.version}
        if is_typed(self.version):
            payload["type"] = "init"
        payload["voice"] = self.voice
        optional: dict[str, Any] = {
            "model": self.model,
            "format": self.format,
            "language": self.language,
            "sample_rate": self.sample_rate,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "speed": self.speed,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        if self.return_extras and not is_typed(self.version):
            payload["return_extras"] = True
        if self.return_timestamps and is_typed(self.version):
            payload["return_timestamps"] = True
        return payload

    def encode_init(self) -> str:
        return _dumps(self.init_payload())

    def fingerprint(self) -> tuple[Any, ...]:
        """What must match for a pre-opened connection to serve a turn."""
        return tuple(sorted(self.init_payload().items()))

    def __repr__(self) -> str:  # the key must never reach a log line through a repr
        return (
            f"SessionOptions(voice={self.voice!r}, format={self.format!r}, "
            f"sample_rate={self.sample_rate}, version={self.version!r})"
        )


def encode_client_text(text: str, version: str) -> str:
    return _dumps({"type": "text", "text": text} if is_typed(version) else {"text": text})


def encode_client_flush(version: str, nonce: int = 0) -> str:
    return _dumps({"type": "flush", "nonce": nonce} if is_typed(version) else {"flush": True})


def encode_client_eof(version: str) -> str:
    return _dumps({"type": "finish"} if is_typed(version) else {"eof": True})


def encode_client_reset(version: str, nonce: int) -> str:
    if not is_typed(version):
        raise ValueError("reset exists only in the typed API (lmnt-version 1.1/1.2)")
    return _dumps({"type": "reset", "nonce": nonce})


# --------------------------------------------------------------------------------------------
# Client side: server frames -> events
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Audio:
    data: bytes


@dataclass(frozen=True, slots=True)
class Extras:
    """Legacy per-chunk metadata; ``durations`` start at 0 for each audio chunk."""

    durations: tuple[WordSpan, ...] = ()
    buffer_empty: bool = False
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class Ready:
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Timestamps:
    items: tuple[WordSpan, ...]


@dataclass(frozen=True, slots=True)
class FlushComplete:
    nonce: int


@dataclass(frozen=True, slots=True)
class ResetComplete:
    nonce: int


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    """An error the server reported; it closes the connection right after."""

    message: str
    type: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """The server sent something this protocol does not allow (bad JSON, unknown type...)."""

    reason: str


ClientEvent: TypeAlias = (
    Audio | Extras | Ready | Timestamps | FlushComplete | ResetComplete | ErrorFrame
    | ProtocolViolation
)  # fmt: skip


def _spans(raw: Any) -> tuple[WordSpan, ...] | None:
    if not isinstance(raw, list):
        return None
    out: list[WordSpan] = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        text, start, dur = (
            item.get("text"),
            _finite(item.get("start")),
            _finite(item.get("duration")),
        )
        if not isinstance(text, str) or start is None or dur is None or start < 0 or dur < 0:
            return None
        out.append(WordSpan(text, start, dur))
    return tuple(out)


class ClientDecoder:
    """Turns the frames a client receives into events, validating them on the way.

    It never raises on server data: whatever arrives becomes an event, and a malformed frame a
    :class:`ProtocolViolation`, so the caller decides what ends a turn in one place.
    """

    def __init__(self, version: str = LEGACY_VERSION) -> None:
        self.version = version
        self.typed = is_typed(version)

    def binary(self, data: bytes) -> list[ClientEvent]:
        return [Audio(bytes(data))] if data else []

    def text(self, data: str) -> list[ClientEvent]:
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):
            return [ProtocolViolation(f"invalid JSON from server: {_short(data)!r}")]
        if not isinstance(msg, dict):
            return [ProtocolViolation(f"expected a JSON object from server, got {_short(data)!r}")]
        return [self._typed(msg) if self.typed else self._legacy(msg)]

    def _legacy(self, msg: JSON) -> ClientEvent:
        if "error" in msg:
            err = msg["error"]
            if isinstance(err, dict):  # tolerate a typed-style body on a legacy socket
                return ErrorFrame(str(err.get("message", err)), _str_or_none(err.get("type")))
            return ErrorFrame(str(err))
        if msg.get("type") == "error":  # a typed server answering a legacy client
            return self._typed(msg)
        if "durations" in msg or "buffer_empty" in msg or "warning" in msg:
            spans = _spans(msg.get("durations", []))
            if spans is None:
                return ProtocolViolation("malformed 'durations' in extras")
            warning = msg.get("warning")
            return Extras(
                spans,
                bool(msg.get("buffer_empty", False)),
                warning if isinstance(warning, str) else None,
            )
        return ProtocolViolation(f"unexpected message on legacy stream: {_quote(msg)}")

    def _typed(self, msg: JSON) -> ClientEvent:
        kind = msg.get("type")
        rid = _str_or_none(msg.get("request_id"))
        if kind == "ready":
            return Ready(rid)
        if kind == "timestamps":
            spans = _spans(msg.get("timestamps", []))
            return (
                Timestamps(spans)
                if spans is not None
                else ProtocolViolation("malformed 'timestamps' message")
            )
        if kind in ("flush_complete", "reset_complete"):
            nonce = _nonce(msg.get("nonce"))
            if nonce is None:
                return ProtocolViolation(f"{kind} without an integer nonce")
            return FlushComplete(nonce) if kind == "flush_complete" else ResetComplete(nonce)
        if kind == "error":
            err = msg.get("error")
            if isinstance(err, dict):
                return ErrorFrame(
                    str(err.get("message", "unknown error")), _str_or_none(err.get("type")), rid
                )
            return ErrorFrame(str(err) if err is not None else "unknown error", None, rid)
        if "error" in msg and kind is None:  # legacy-shaped error on a typed socket
            return ErrorFrame(str(msg["error"]), None, rid)
        return ProtocolViolation(f"unexpected message type {_short(repr(kind))} from server")


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
