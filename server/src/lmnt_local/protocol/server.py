"""Server side of the LMNT protocol codec: init frames and commands in, typed frames out.

A local server validates a session's first frame the way the service did (:func:`parse_init`),
decodes each later command of either generation (:func:`decode_client_message`) and builds the
frames it answers with.  Sans-IO like the client side; ``protocol`` re-exports every name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from lmnt_local.protocol.wire import (
    JSON,
    LANGUAGES,
    LEGACY_VERSION,
    MODELS,
    SAMPLE_RATES,
    SERVER_FORMATS,
    TYPED_VERSIONS,
    VERSIONS,
    WordSpan,
    _dumps,
    _finite,
    _nonce,
    _quote,
    _short,
    has_lone_surrogate,
    is_typed,
)


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


#: Words after which a period does not end a sentence ("Dr. Smith"); single letters (initials,
#: "J. Smith") neither.  Not "no": "I said no. Then..." ends a sentence far more often than
#: "No. 5" continues one.  The engines' sentence splitter uses the same list.
ABBREVIATIONS = frozenset("mr mrs ms dr prof st jr sr vs etc e.g i.e fig mt approx dept".split())
#: End marks of scripts written without a space after them (Devanagari danda and double
#: danda, Arabic question mark, Urdu full stop, CJK full stop and full-width ! ?): the mark
#: alone ends the sentence, wherever it stands.
UNSPACED_END_MARKS = "\u0964\u0965\u061f\u06d4\u3002\uff01\uff1f"
_CLOSERS = "\"')\\]\u00bb\u2019\u201d\u300d\u300f"
_END_MARK = re.compile(
    f"(?P<mark>[{UNSPACED_END_MARKS}]+|[.!?\u2026;:]+)[{_CLOSERS}]*(?P<space>\\s*)"
)
_LAST_WORD = re.compile(r"(\S+)$")
_MARKUP_PAIRS = ("**", "__", "`")


def _open_token(sentence: str) -> bool:
    """Whether ``sentence`` ends inside a markup token a later piece will close: a tag opened
    and not closed (``<brea``), or bold/code markers left open (``**Note.`` + ``**``)."""
    if sentence.rfind("<") > sentence.rfind(">"):
        return True
    return any(sentence.count(pair) % 2 for pair in _MARKUP_PAIRS)


def _after_abbreviation(head: str) -> bool:
    last = _LAST_WORD.search(head)
    word = last.group(1).lower().lstrip("(\"'\u201c\u2018*_") if last else ""
    return word in ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def _sentence_end(buffer: str, start: int, m: re.Match[str]) -> bool:
    """Whether the end mark ``m`` closes the sentence that began at ``start``.

    A space after the mark, or a mark of a script written without spaces, ends a sentence
    (unless it is an abbreviation's period, or inside a tag).  A Latin mark at the very end
    of the buffer ends it too, so "Sure." is spoken before the next piece arrives, except
    where the tail may be the start of a longer token: a period after a digit ("$5." may go
    on "50"), an abbreviation ("Dr."), open markup.  Those wait for the next piece or a
    flush, which is all a streaming client can be asked for.  Elsewhere (``3.5``,
    ``example.com``) a Latin mark followed by a letter is not an end.
    """
    mark = m.group("mark")
    sentence = buffer[start : m.start("space")]
    period = mark == "." and buffer[start : m.start()].strip() != ""
    if mark[0] in UNSPACED_END_MARKS:
        return not _open_token(sentence)
    if m.group("space"):
        if period and _after_abbreviation(buffer[start : m.start()]):
            return False
        return buffer.rfind("<", start, m.start()) <= buffer.rfind(">", start, m.start())
    if m.end() != len(buffer) or mark[0] in ";:":
        return False
    if period and (
        buffer[m.start() - 1].isdigit() or _after_abbreviation(buffer[start : m.start()])
    ):
        return False
    return not _open_token(sentence)


def split_complete_sentences(
    buffer: str, *, keep_whitespace: bool = False
) -> tuple[list[str], str]:
    """Split off the sentences that are certainly complete (see :func:`_sentence_end`).

    Servers use it to start speaking before ``flush``/``eof``; the rest stays buffered because
    text may arrive split anywhere, even mid-word.  With ``keep_whitespace`` the parts are
    exact slices (each sentence keeps the whitespace after it), so ``"".join(parts) + rest``
    is ``buffer``: what a server needs when the pauses between sentences must be spoken too.
    """
    parts: list[str] = []
    last = 0
    for m in _END_MARK.finditer(buffer):
        if not _sentence_end(buffer, last, m):
            continue
        sentence = buffer[last : m.end()]
        if not keep_whitespace:
            sentence = sentence.strip()
        if sentence:
            parts.append(sentence)
        last = m.end()
    return parts, buffer[last:]
