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
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

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

DEFAULT_WS_URL: Final = "wss://api.lmnt.com/v1/ai/speech/stream"
STREAM_PATH: Final = "/v1/ai/speech/stream"
LEGACY_VERSION: Final = "1.0"
TYPED_VERSIONS: Final = ("1.1", "1.2")
VERSIONS: Final = (LEGACY_VERSION, *TYPED_VERSIONS)

#: What the plugin accepts (the 1.0.30 constructor's ``format`` values).
FORMATS: Final = ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm")
#: What a server accepts on the WebSocket: ``raw`` is the legacy name of 16-bit LE PCM.
SERVER_FORMATS: Final = (*FORMATS, "raw")
SAMPLE_RATES: Final = (8000, 16000, 24000)
MODELS: Final = ("aurora", "blizzard", "blizzard-2.0", "blizzard-2.1", "blizzard-dialogue")
LANGUAGES: Final = (
    "auto", "ar", "as", "bn", "cs", "da", "de", "en", "es", "fi", "fr", "hi", "id", "it", "ja",
    "ko", "ml", "mr", "nl", "pl", "pt", "ru", "sk", "sv", "ta", "te", "th", "tr", "uk", "ur",
    "vi", "zh",
)  # fmt: skip
ERROR_TYPES: Final = (
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "payment_required_error",
    "rate_limit_error",
    "internal_server_error",
)

JSON: TypeAlias = dict[str, Any]


def is_typed(version: str | None) -> bool:
    """True for the typed API (1.1/1.2); anything else speaks legacy, as the service did."""
    return version in TYPED_VERSIONS


def _dumps(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
class WordSpan:
    text: str
    start: float
    duration: float


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


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


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


def _nonce(raw: Any) -> int | None:
    return raw if isinstance(raw, int) and not isinstance(raw, bool) else None


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _quote(msg: Any) -> str:
    """A bounded rendering of a peer's message for an error text.

    Never raises: the peer's JSON may hold NaN or Infinity, which our own encoder refuses, or
    lone surrogates, which no UTF-8 frame can carry (escaped here).  An ``X-API-Key`` member
    (a client re-sending its init frame) is masked: an error text is logged and sent back, and
    a key must reach neither.
    """
    if isinstance(msg, dict) and "X-API-Key" in msg:
        msg = {**msg, "X-API-Key": "***"}
    try:
        text = json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(msg)
    return _short(text).encode("utf-8", "backslashreplace").decode("utf-8")


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone surrogate (legal in JSON escapes, not in UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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


# --------------------------------------------------------------------------------------------
# Server side: the init frame and commands -> typed requests; events -> frames
# --------------------------------------------------------------------------------------------


class InitError(ValueError):
    """The init frame is unacceptable; ``error_type`` is the typed API's error slug.

    ``version`` is the generation the error frame must be shaped for: :func:`parse_init` sets it
    from the frame's ``lmnt-version`` when that member is valid, even if another field is not,
    so a typed client gets a structured error it can parse.
    """

    def __init__(
        self,
        message: str,
        error_type: str = "invalid_request_error",
        version: str = LEGACY_VERSION,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.version = version


@dataclass(frozen=True, slots=True)
class InitRequest:
    api_key: str = field(repr=False)
    version: str
    voice: str
    model: str = "blizzard"
    language: str = "auto"
    format: str = "mp3"
    sample_rate: int = 24000
    return_extras: bool = False
    return_timestamps: bool = False
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    speed: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def typed(self) -> bool:
        return is_typed(self.version)


def _literal_error(name: str, allowed: tuple[Any, ...]) -> InitError:
    choices = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
    return InitError(f"{name}: Input should be {choices}")


def _bool_field(msg: JSON, *names: str) -> bool:
    for name in names:
        value = msg.get(name)
        if isinstance(value, bool):
            if value:
                return True
        elif isinstance(value, str) and value.lower() in ("true", "1"):
            return True  # Python SDK 2.0-2.5 sent "True" as a string
    return False


def _number(msg: JSON, name: str, lo: float, hi: float) -> float | None:
    if name not in msg:
        return None
    value = _finite(msg[name])
    if value is None or not lo <= value <= hi:
        raise InitError(f"{name}: Input should be a number between {lo} and {hi}")
    return value


def parse_init(data: str | bytes) -> InitRequest:
    """Validate the first frame of a session the way the service did: literal sets, no nulls.

    Raises :class:`InitError` with a message shaped like the service's (pydantic style).
    """
    if isinstance(data, bytes):
        raise InitError("the first message must be a JSON text frame")
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        raise InitError("the first message must be valid JSON") from None
    if not isinstance(msg, dict):
        raise InitError("the first message must be a JSON object")
    for name, value in msg.items():
        if has_lone_surrogate(name) or (isinstance(value, str) and has_lone_surrogate(value)):
            shown = name.encode("utf-8", "backslashreplace").decode("utf-8")
            message = "Input should be a valid string without lone surrogates"
            raise InitError(f"{_short(shown)}: {message}")
    hint = msg.get("lmnt-version")
    try:
        return _validate_init(msg)
    except InitError as exc:
        exc.version = hint if hint in TYPED_VERSIONS else LEGACY_VERSION
        raise


def _validate_init(msg: JSON) -> InitRequest:
    key = msg.get("X-API-Key")
    if not isinstance(key, str) or not key:
        raise InitError("X-API-Key: Field required", "authentication_error")
    version = msg.get("lmnt-version", LEGACY_VERSION)
    if version not in VERSIONS:
        raise _literal_error("lmnt-version", VERSIONS)
    for name, value in msg.items():
        if value is None:
            raise InitError(f"{name}: Input should not be null")
    voice = msg.get("voice")
    if not isinstance(voice, str) or not voice.strip():
        raise InitError("voice: Field required")
    model = msg.get("model", "blizzard")
    if model not in MODELS:
        raise _literal_error("model", MODELS)
    language = msg.get("language", "auto")
    if language not in LANGUAGES:
        raise _literal_error("language", LANGUAGES)
    fmt = msg.get("format", "mp3")
    if fmt not in SERVER_FORMATS:
        raise _literal_error("format", SERVER_FORMATS)
    raw_rate = msg.get("sample_rate", 8000 if fmt == "ulaw" else 24000)
    try:  # Python SDK 2.0-2.5 sent the rate as a string
        rate = int(raw_rate) if not isinstance(raw_rate, bool | float) else -1
    except (TypeError, ValueError):
        rate = -1
    if rate not in SAMPLE_RATES:
        raise _literal_error("sample_rate", SAMPLE_RATES)
    seed = msg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InitError("seed: Input should be a valid integer")
    known = {
        "X-API-Key", "lmnt-version", "type", "voice", "model", "language", "format",
        "sample_rate", "return_extras", "send_extras", "return_timestamps", "seed",
        "temperature", "top_p", "speed",
    }  # fmt: skip
    return InitRequest(
        api_key=key,
        version=version,
        voice=voice,
        model=model,
        language=language,
        format=fmt,
        sample_rate=rate,
        return_extras=_bool_field(msg, "return_extras", "send_extras"),
        return_timestamps=_bool_field(msg, "return_timestamps"),
        seed=seed,
        temperature=_number(msg, "temperature", 0.0, 5.0),
        top_p=_number(msg, "top_p", 0.0, 1.0),
        speed=_number(msg, "speed", 0.25, 2.0) or 1.0,
        extra={k: v for k, v in msg.items() if k not in known},
    )


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Flush:
    nonce: int | None = None


@dataclass(frozen=True, slots=True)
class Reset:
    nonce: int


@dataclass(frozen=True, slots=True)
class Eof:
    pass


ClientCommand: TypeAlias = Text | Flush | Reset | Eof


def decode_client_message(data: str, version: str) -> ClientCommand:
    """Parse one client command after init; raises :class:`InitError` (a ValueError) if bad.

    Each generation accepts its own commands and, as a courtesy to mixed clients, the other's
    (the service's behaviour here was never confirmed; being lenient costs nothing).
    """
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        raise InitError("message must be valid JSON") from None
    if not isinstance(msg, dict):
        raise InitError("message must be a JSON object")
    kind = msg.get("type")
    if kind is not None:
        if kind == "text" and isinstance(msg.get("text"), str):
            return Text(msg["text"])
        if kind in ("flush", "reset"):
            nonce = _nonce(msg.get("nonce"))
            if nonce is None:
                raise InitError(f"{kind}: nonce: Input should be a valid integer")
            return Flush(nonce) if kind == "flush" else Reset(nonce)
        if kind in ("finish", "eof"):
            return Eof()
        raise InitError(f"type: unknown message type {_short(str(kind))!r}")
    command = msg.get("command")
    if command in ("flush", "reset"):  # interim protocol_version 2
        nonce = _nonce(msg.get("nonce"))
        if nonce is None:
            raise InitError(f"{command}: nonce: Input should be a valid integer")
        return Flush(nonce) if command == "flush" else Reset(nonce)
    if command == "eof":
        return Eof()
    if "text" in msg:
        if not isinstance(msg["text"], str):
            raise InitError("text: Input should be a valid string")
        return Text(msg["text"])
    if msg.get("flush") is True:
        return Flush()
    if msg.get("eof") is True:
        return Eof()
    raise InitError(f"unrecognised message: {_quote(msg)}")


def encode_ready(request_id: str) -> str:
    return _dumps({"type": "ready", "request_id": request_id})


def _span_json(spans: tuple[WordSpan, ...] | list[WordSpan]) -> list[JSON]:
    return [
        {"text": s.text, "start": round(s.start, 4), "duration": round(s.duration, 4)}
        for s in spans
    ]


def encode_timestamps(spans: tuple[WordSpan, ...] | list[WordSpan]) -> str:
    return _dumps({"type": "timestamps", "timestamps": _span_json(spans)})


def encode_extras(spans: tuple[WordSpan, ...] | list[WordSpan], buffer_empty: bool) -> str:
    return _dumps({"durations": _span_json(spans), "buffer_empty": buffer_empty})


def encode_flush_complete(nonce: int) -> str:
    return _dumps({"type": "flush_complete", "nonce": nonce})


def encode_reset_complete(nonce: int) -> str:
    return _dumps({"type": "reset_complete", "nonce": nonce})


def encode_interim_complete(kind: Literal["flush", "reset"], nonce: int) -> str:
    """The interim protocol's acknowledgement of ``{"command": kind, "nonce": N}``."""
    return _dumps({"complete": kind, "nonce": nonce})


ErrorType: TypeAlias = Literal[
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "payment_required_error",
    "rate_limit_error",
    "internal_server_error",
]


def encode_error(
    version: str,
    message: str,
    error_type: str = "invalid_request_error",
    request_id: str | None = None,
) -> str:
    """Legacy: a bare string; typed: the structured body with the session's request id."""
    if not is_typed(version):
        return _dumps({"error": message})
    body: JSON = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return _dumps(body)


_SENTENCE_END = re.compile("(?<=[.!?\u3002\uff01\uff1f;:])[\"')\\]]*\\s+")


def split_complete_sentences(
    buffer: str, *, keep_whitespace: bool = False
) -> tuple[list[str], str]:
    """Split off the sentences that are certainly complete (end mark followed by space).

    Servers use it to start speaking before ``flush``/``eof``; the rest stays buffered because
    text may arrive split anywhere, even mid-word.  With ``keep_whitespace`` the parts are
    exact slices (each sentence keeps the whitespace after it), so ``"".join(parts) + rest``
    is ``buffer``: what a server needs when the pauses between sentences must be spoken too.
    """
    parts: list[str] = []
    last = 0
    for m in _SENTENCE_END.finditer(buffer):
        sentence = buffer[last : m.end()]
        if not keep_whitespace:
            sentence = sentence.strip()
        if sentence:
            parts.append(sentence)
        last = m.end()
    return parts, buffer[last:]
