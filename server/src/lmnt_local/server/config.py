"""Tunables of the local server, and the one rule for cutting text into synthesis units.

Kept apart from the server so the WebSocket session and the HTTP routes share them without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmnt_local.protocol import split_complete_sentences

__all__ = ["ServerConfig", "speech_units"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Limits and framing of a :class:`~lmnt_local.server.LocalLMNTServer`.

    The defaults are generous enough for any real client and small enough that one misbehaving
    client cannot make the server hold much memory or CPU on its behalf.
    """

    #: Size of the binary audio frames sent to clients (the last frame of a sentence is shorter:
    #: a frame never waits for the next sentence's audio).
    frame_bytes: int = 4096
    #: Largest client frame answered normally.  Bigger text frames get an error and close 1009;
    #: frames beyond ``16 * max_frame_bytes`` are refused by the WebSocket reader itself (close
    #: 1009 without an error frame, as they are never read into memory).
    max_frame_bytes: int = 64 * 1024
    #: Total characters of text one WebSocket session may send (error + close 1008 beyond).
    max_text_chars: int = 100_000
    #: Client messages per second after init, over a sliding one-second window (error + 1008).
    max_messages_per_second: int = 200
    #: ``POST /v1/ai/speech/bytes`` limit, as LMNT's (422 beyond).
    max_http_text_chars: int = 5000
    #: Longest text handed to the engine in one call; longer sentences are cut at a space so a
    #: single engine call never renders minutes of audio at once.
    max_unit_chars: int = 500
    #: Seconds to wait for the init frame before closing 1008.
    init_timeout: float = 30.0
    #: Seconds a server-initiated close waits for the client's close frame.
    close_timeout: float = 1.0
    #: Upper bound of :meth:`LocalLMNTServer.stop`.
    shutdown_timeout: float = 2.0
    #: Server->client messages buffered per session before synthesis waits for the socket.
    outbox_size: int = 64
    #: ``LocalLMNTServer.sessions`` keeps the records of this many latest connections (older
    #: ones are forgotten), so a long-running server's memory does not grow with its traffic.
    max_session_records: int = 1000
    #: Characters of text one record keeps (``SessionRecord.texts_truncated`` beyond).
    max_record_chars: int = 20_000
    #: API keys whose usage, stars and voice edits are remembered (least recently used
    #: forgotten first): bounded even when any key is accepted.
    max_tracked_keys: int = 1024
    #: Seconds a WebSocket session may go without a client message while it has no work
    #: (error + close 1008).  Above the plugin's 290 s warm-spare age, so spares are not cut.
    idle_timeout: float = 300.0
    #: WebSocket ping interval; a peer that does not answer within half of it is dropped.
    heartbeat: float = 30.0
    #: Seconds a connection may take to send its request headers (slowloris: 408, closed).
    header_timeout: float = 10.0
    #: Seconds a request body may take to arrive (408).
    body_timeout: float = 30.0
    #: Seconds an idle keep-alive HTTP connection is kept.
    keepalive_timeout: float = 15.0
    #: Open TCP connections at once; beyond it a new one gets 503 and is closed.
    max_connections: int = 2048
    #: WebSocket sessions at once, all keys together (429 on the upgrade beyond it).
    max_sessions: int = 1024
    #: Upper bound of :meth:`LocalLMNTServer.drain`: in-flight turns get this long to finish.
    drain_timeout: float = 20.0
    #: Read text as meant before any engine speaks it: Markdown and SSML removed or honoured,
    #: pronunciations applied, prices, dates and numbers normalised (see ``docs/text.md``).
    #: Off, engines get the caller's text as sent.
    text_frontend: bool = True
    #: A pronunciation lexicon file (``serve --lexicon``; format in ``docs/text.md``), added to
    #: the built-in entries ("LMNT" said "lament").
    lexicon: str | Path | None = None

    def __post_init__(self) -> None:
        positive = ("frame_bytes", "max_frame_bytes", "max_text_chars", "max_messages_per_second")
        counts = ("max_http_text_chars", "max_unit_chars", "outbox_size")
        bounds = ("max_session_records", "max_record_chars", "max_tracked_keys")
        for name in (*positive, *counts, *bounds, "max_connections", "max_sessions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerConfig.{name} must be > 0")
        timeouts = ("init_timeout", "close_timeout", "shutdown_timeout", "idle_timeout")
        more = ("heartbeat", "header_timeout", "body_timeout", "keepalive_timeout", "drain_timeout")
        for name in (*timeouts, *more):
            if getattr(self, name) <= 0:
                raise ValueError(f"ServerConfig.{name} must be > 0")


def speech_units(text: str, max_chars: int) -> list[str]:
    """Cut finished text into what one engine call speaks: sentences, long ones cut at spaces.

    Sentence-sized units keep the first audio early and each engine call short; cutting after
    a space (or hard, for a space-less run) bounds the work of any single call.  Units are
    exact slices of ``text``, whitespace-only ones included (the whitespace between sentences
    is a pause; the engine decides what it sounds like: silence for the tone engine, nothing
    for espeak), so the tone engine's audio for a session lasts exactly ``duration_of`` all
    the text it received.
    """
    sentences, rest = split_complete_sentences(text, keep_whitespace=True)
    units: list[str] = []
    for sentence in (*sentences, rest):
        while len(sentence) > max_chars:
            cut = sentence.rfind(" ", 1, max_chars)
            cut = cut + 1 if cut > 0 else max_chars
            units.append(sentence[:cut])
            sentence = sentence[cut:]
        units.append(sentence)
    return [unit for unit in units if unit]
