"""``LMNTTTS``: the VideoSDK Agents adapter.

A drop-in for ``videosdk-plugins-lmnt`` 1.0.30 (same constructor, keywords, defaults and
``ValueError``s for bad config) that fixes its defects: audio is decoded and resampled to the
rate the track really plays, every turn ends on a whole frame, failures before audio raise so
``FallbackTTS`` can retry the same turn, interrupts are immediate, and a warm connection is kept
so a turn does not pay a TCP+TLS+WebSocket handshake.  The work is done by ``protocol``,
``audio``, ``connection`` and ``turn`` (the track side in ``sink``, the checks in ``options``);
this module holds the instance's configuration and talks to the framework.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import ssl as ssl_module
import sys
from collections.abc import AsyncIterator
from typing import Any

from videosdk.agents import TTS

from lmnt_local.protocol import (
    DEFAULT_WS_URL,
    LEGACY_VERSION,
    TYPED_VERSIONS,
    SessionOptions,
)

from .callers import _caller_of, _end_first_audio_wait, text_shape
from .connection import ConnectionPool, ConnectionSettings
from .errors import LMNTError, redact, redact_url
from .feed import FeedRelease, TextFeed, has_word
from .options import (
    _OVERRIDABLE,
    DEFAULT_FORMAT,
    LMNT_SAMPLE_RATE,
    _check_connection_options,
    _check_url,
    _FormatType,
    _LanguageCode,
    _SampleRate,
    _validate,
)
from .sink import TRACK_DEFAULT_RATE as TRACK_DEFAULT_RATE  # re-exported: tts.py was its home
from .sink import claim_input_format, track_sink
from .turn import REUSABLE_FORMATS, RetryPolicy, Turn, _AfterAudio
from .words import WordAnnouncer

__all__ = ["DEFAULT_MODEL", "DEFAULT_VOICE", "LMNTTTS", "LMNT_VERSION", "LMNT_WSS_URL"]

logger = logging.getLogger("videosdk.plugins.lmnt")

DEFAULT_VOICE = "ava"
DEFAULT_MODEL = "blizzard"
DEFAULT_LANGUAGE = "auto"
LMNT_CHANNELS = 1
# 1.0.30's module constants, same names and values, for code that imported them: the default
# endpoint, and the ``lmnt-version`` it sent (the legacy protocol, still this plugin's default).
LMNT_WSS_URL: str = DEFAULT_WS_URL
LMNT_VERSION: str = LEGACY_VERSION


class LMNTTTS(TTS):  # type: ignore[misc]
    """LMNT text-to-speech over the streaming WebSocket API.

    The first ten keywords are those of ``videosdk-plugins-lmnt`` 1.0.30, with the same defaults.
    The rest are additions, all optional:

    * ``protocol_version``: ``"1.0"`` (legacy, as 1.0.30 spoke) or ``"1.1"``/``"1.2"`` (typed).
    * ``word_timestamps``: emit ``word_spoken`` as each word is played.
    * ``connect_timeout``: seconds to connect, upgrade and send init (default 10).
    * ``receive_timeout``: seconds of server silence tolerated while audio is owed (default 5).
    * ``max_retries``/``retry_backoff``: retries of transient failures before any audio.
    * ``warm_connection``: keep one initialised connection ready for the next turn.
    * ``reuse_sessions``: with the typed API and a PCM/µ-law format, end each turn with a flush
      and keep the session for the next turn instead of reconnecting.
    * ``ssl``: an ``ssl.SSLContext`` (custom CA, client certs) and ``ca_file``: a CA bundle path.
    * ``allow_insecure``: allow sending the key over plain ``ws://`` to a public host (also
      ``LMNT_ALLOW_INSECURE=1``); private and cluster hosts need neither.
    * ``speed``: LMNT's ``speed`` init field, 0.25 (slow) to 2.0 (twice as fast).  ``None``
      (the default) leaves the field out, so the init frame is 1.0.30's and the server's own
      default pace (1.0) applies.
    """

    PREWARM_WAIT = 2.0  # seconds prewarm() may hold up the session start

    def __init__(
        self,
        *,
        api_key: str | None = None,
        voice: str = DEFAULT_VOICE,
        model: str = DEFAULT_MODEL,
        language: _LanguageCode = DEFAULT_LANGUAGE,
        format: _FormatType = DEFAULT_FORMAT,
        sample_rate: _SampleRate = LMNT_SAMPLE_RATE,
        seed: int | None = None,
        temperature: float = 1.0,
        top_p: float = 0.8,
        ws_url: str | None = None,
        protocol_version: str = LEGACY_VERSION,
        word_timestamps: bool = False,
        connect_timeout: float = 10.0,
        receive_timeout: float = 5.0,
        close_timeout: float = 1.0,
        max_retries: int = 2,
        retry_backoff: float = 0.2,
        warm_connection: bool = True,
        reuse_sessions: bool = True,
        ssl: ssl_module.SSLContext | None = None,
        ca_file: str | None = None,
        allow_insecure: bool = False,
        speed: float | None = None,
    ) -> None:
        key = api_key or os.getenv("LMNT_API_KEY")
        if not key:
            raise ValueError(
                "LMNT API key must be provided either through api_key parameter "
                "or LMNT_API_KEY environment variable"
            )
        if not isinstance(key, str):
            raise ValueError("api_key must be a string")
        _validate(
            {
                "voice": voice, "model": model, "language": language, "format": format,
                "sample_rate": sample_rate, "seed": seed, "temperature": temperature,
                "top_p": top_p, "speed": speed,
            }
        )  # fmt: skip
        url = _check_url(ws_url or os.getenv("LMNT_WS_URL") or DEFAULT_WS_URL, allow_insecure)
        ssl = _check_connection_options(
            protocol_version=protocol_version, connect_timeout=connect_timeout,
            receive_timeout=receive_timeout, close_timeout=close_timeout,
            max_retries=max_retries, retry_backoff=retry_backoff, ssl=ssl, ca_file=ca_file,
        )  # fmt: skip

        super().__init__(
            sample_rate=sample_rate, num_channels=LMNT_CHANNELS, word_timestamps=word_timestamps
        )
        self._api_key = key
        self.voice = voice
        self.model = model
        self.language = language
        self.format = format
        self.output_sample_rate = sample_rate
        self.seed = seed
        self.temperature = temperature
        self.top_p = top_p
        self.speed = speed
        self._allow_insecure = allow_insecure
        self.protocol_version = protocol_version
        self.receive_timeout = receive_timeout
        self.retry = RetryPolicy(max_retries=max_retries, backoff=retry_backoff)
        self.warm_connection = warm_connection
        self.reuse_sessions = reuse_sessions
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the framework; unused here
        self._first_chunk_sent = False
        self._turns: dict[Turn, Any] = {}  # running turns and the track each plays into
        # One per turn whose words are still to be heard: a turn's audio keeps playing after
        # synthesize() returns, so a new turn must not end the previous one's announcements;
        # only interrupt() and aclose() do.
        self._announcers: set[WordAnnouncer] = set()
        # Per track (by id): [foreign rate, foreign channels, our turns using it] while our
        # turns have overridden another producer's input-format declaration.
        self._format_claims: dict[int, list[Any]] = {}
        self._closed = False
        self._ws_url = url
        self._pool = ConnectionPool(
            ConnectionSettings(
                url=url,
                connect_timeout=connect_timeout,
                close_timeout=close_timeout,
                ssl=ssl if ssl is not None else True,
            )
        )

    @property
    def api_key(self) -> str:
        """The key, for code written against 1.0.30's public attribute; never in repr or logs.

        Assigning a new key (rotation) takes effect at the next turn; a warm connection opened
        with the old key is not used.
        """
        return self._api_key

    @api_key.setter
    def api_key(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError("api_key must be a non-empty string")
        self._api_key = value

    @property
    def ws_url(self) -> str:
        return self._ws_url

    @ws_url.setter
    def ws_url(self, value: str) -> None:
        """1.0.30 read ``ws_url`` at every turn, so assigning it must redirect the next turn."""
        url = _check_url(value, self._allow_insecure)
        self._ws_url = url
        self._pool.settings = dataclasses.replace(self._pool.settings, url=url)

    @property
    def audio_track(self) -> Any:
        return self.__dict__.get("_audio_track")

    @audio_track.setter
    def audio_track(self, track: Any) -> None:
        """The framework assigns the track when the room is ready (``FallbackTTS`` propagates
        it to every provider): the moment to open a warm connection, since ``FallbackTTS``
        never calls ``prewarm()`` and a cold first turn would read its text before the server
        accepted the key."""
        self.__dict__["_audio_track"] = track
        if track is None or not getattr(self, "warm_connection", False) or self._closed:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # assigned outside the event loop: prewarm() or the first turn connects
        try:
            self._pool.prepare_spare(self._options())
        except Exception as exc:  # never let an assignment fail
            logger.debug("LMNT: could not start warming a connection: %s", exc)

    def __repr__(self) -> str:
        return (
            f"LMNTTTS(voice={self.voice!r}, model={self.model!r}, format={self.format!r}, "
            f"sample_rate={self.output_sample_rate}, ws_url={redact_url(self.ws_url)!r})"
        )

    # -- options ---------------------------------------------------------------------------

    def _options(self, voice_id: str | None = None, **overrides: Any) -> SessionOptions:
        unknown = set(overrides) - set(_OVERRIDABLE)
        if unknown:
            logger.debug("LMNT: ignoring unknown synthesize() options %s", sorted(unknown))
        values: dict[str, Any] = {
            "voice": voice_id or self.voice,
            "model": self.model,
            "language": self.language,
            "format": self.format,
            "sample_rate": self.output_sample_rate,
            "seed": self.seed,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "speed": self.speed,
        }
        values.update({k: v for k, v in overrides.items() if k in _OVERRIDABLE})
        _validate(values)
        return SessionOptions(
            api_key=self._api_key,
            version=self.protocol_version,
            return_extras=self.supports_word_timestamps,
            return_timestamps=self.supports_word_timestamps,
            **values,
        )

    # -- framework hooks -------------------------------------------------------------------

    def reset_first_audio_tracking(self) -> None:
        """Called by the framework before every turn: re-arm the first-audio callback.

        Word announcements of a turn still playing go on (each turn has its own)."""
        self._first_chunk_sent = False

    async def prewarm(self) -> None:
        """Open and initialise a connection now, so the first turn skips the handshake.

        Idempotent, never raises and never blocks the session for long (at most
        ``PREWARM_WAIT`` seconds; a slower handshake finishes in the background): a failure here
        only costs the first turn a cold start.
        """
        self._reopen()
        try:
            await self._pool.warm(self._options(), self.PREWARM_WAIT)
        except Exception as exc:
            logger.warning("LMNT prewarm failed (the first turn will connect): %s", exc)

    def _emit_word(self, word: str, cumulative: str) -> None:
        self.emit("word_spoken", {"word": word, "cumulative_text": cumulative})

    async def synthesize(
        self,
        text: AsyncIterator[Any] | str,
        voice_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Speak ``text`` into ``self.audio_track``.

        A failure is reported once, in the way the caller can act on (``_caller_of``): under a
        ``FallbackTTS`` that has another provider, a failure before audio raises (and
        ``FallbackTTS`` reports it); inside the agent without such a fallback it is emitted as
        ``"error"`` and the turn returns, so the agent goes back to IDLE; called from other code
        it is emitted and raised.  After audio started, a failure is emitted and the turn
        returns.  Each call is its own turn: a call into another track (the framework's
        ``stream_synthesize``/``TTSAudioCache``) does not cut a running one; a second call into
        the same track supersedes the first (their audio would interleave).
        """
        if not isinstance(text, str) and not hasattr(text, "__aiter__"):
            # A list, a sync generator, bytes or None would otherwise be read as nothing at
            # all and the call would return in silence.
            raise TypeError(
                "LMNTTTS.synthesize() takes a str or an async iterator of str (the "
                f"framework's text stream), not {type(text).__name__}"
            )
        caller, speech = _caller_of(self, sys._getframe(1))
        current = asyncio.current_task()
        cancels = current.cancelling() if current is not None else 0
        try:
            options = self._options(voice_id, **kwargs)
        except ValueError as exc:
            self.emit("error", f"LMNT: {exc}")  # every failure is reported, not only raised
            raise
        if isinstance(text, str) and not has_word(text):
            return  # "", "...", "?!": nothing to say, on every engine
        track = self.audio_track
        if track is None:
            message = "LMNT: no audio track is set; the framework sets one before synthesis"
            self.emit("error", message)
            raise LMNTError(message)
        self._reopen()
        turn = Turn(
            options=options,
            # Inside the agent each item is a sentence (or a cut at a word boundary) from the
            # framework's chunker, and the feed ends each with the space it stripped; or, with
            # ``text_chunking=False``, an LLM delta sent as it is.
            feed=TextFeed(text, shape=text_shape(speech, text)),
            sink=track_sink(self, track),
            pool=self._pool,
            retry=self.retry,
            receive_timeout=self.receive_timeout,
            warm=self.warm_connection,
            reuse_session=(
                self.reuse_sessions
                and options.version in TYPED_VERSIONS
                and options.format in REUSABLE_FORMATS
            ),
        )
        for other, other_track in list(self._turns.items()):
            if other_track is track:
                other.interrupt()  # two turns into one track would interleave: the new one wins
        # Inside the agent nobody reads the framework's stream after this turn gives up on it.
        drain: FeedRelease = "drain" if speech is not None else "detach"
        turn.release_on_error = drain if caller == "agent" else "release"
        turn.release_after_audio = drain
        # Only a FallbackTTS with another provider can use text this turn did not read.
        turn.await_acceptance = caller == "fallback"
        self._turns[turn] = track
        restore_format = claim_input_format(self._format_claims, track)
        try:
            await turn.run()
        except _AfterAudio as exc:
            logger.warning("LMNT: turn ended early after audio started: %s", exc.error)
            self.emit("error", redact(str(exc.error), self._api_key))
            await turn._pad()
        except LMNTError as exc:
            logger.warning("LMNT: synthesis failed: %s", exc)
            if caller == "fallback" and not turn.feed.ended:
                raise  # FallbackTTS reports it and hands the same turn to its next provider
            # (Under FallbackTTS with the caller's stream read to its end, the next provider
            # would get nothing to say and the framework would wait 10 s for its audio: report
            # it instead, FallbackTTS switches for the next turn.)
            self.emit("error", redact(str(exc), self._api_key))
            if caller == "direct":
                raise
            if turn.feed.received and not turn.audio_started:
                _end_first_audio_wait(speech, self._first_audio_callback)
        finally:
            restore_format()
            # A turn that got no word timings (it failed, or said nothing) has nothing to announce.
            self._announcers = {a for a in self._announcers if not a.idle}
            self._turns.pop(turn, None)
        if current is not None and current.cancelling() > cancels:
            raise asyncio.CancelledError  # cancelled while cleaning up: the caller must know

    def _stop_announcers(self) -> None:
        for announcer in list(self._announcers):
            announcer.stop()
        self._announcers.clear()

    def _reopen(self) -> None:
        """After ``aclose()`` the instance works again, as 1.0.30's did: the framework closes
        every component in ``change_pipeline()`` and may hand the same instance back."""
        if self._closed:
            self._closed = False
            self._pool.reopen()

    async def interrupt(self) -> None:
        """Stop what is playing now; idempotent, and the next turn is unaffected.

        Turns that play into a real track stop; a ``stream_synthesize`` capture (its queue
        track plays nothing) is left to finish, so a barge-in does not cut what a
        ``TTSAudioCache`` stores.
        """
        for turn, track in list(self._turns.items()):
            if track is self.audio_track or hasattr(track, "recv"):
                turn.interrupt()
        self._stop_announcers()  # what was not heard is not announced
        if self.audio_track is not None:
            self.audio_track.interrupt()

    async def aclose(self) -> None:
        """Stop any turn and close every connection; idempotent.  A later ``synthesize()`` or
        ``prewarm()`` opens connections again (the framework's ``change_pipeline()`` closes
        every component, then may re-attach the same instance)."""
        for turn in list(self._turns):
            turn.interrupt()
        self._stop_announcers()
        if not self._closed:
            self._closed = True
            await self._pool.aclose()
        await super().aclose()
