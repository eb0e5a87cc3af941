"""How ``lmnt-local say`` speaks: text through ``LMNTTTS`` into the framework's real
``CustomAudioStreamTrack``, drained as the WebRTC sender would, then made a WAV file.

Kept apart from :mod:`.say` (the command: its options, output file and error messages)
because this is the part that is evidence the plugin is right: the same path an agent's audio
takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import IO, Any

__all__ = ["Speech", "speak", "wav_bytes"]

TRACK_RATE = 24000  # what the framework's CustomAudioStreamTrack plays, so what the WAV holds
#: Text is streamed in pieces of at most this many characters, as an agent's sentence chunker
#: would stream it (and so no single message hits a server's frame limit).
CHUNK_CHARS = 1000
#: Longer texts are spoken in several turns (the local server caps a session at 100 000).
TURN_CHARS = 50_000

log = logging.getLogger("lmnt_local.cli")  # the CLI's one logger


class _Progress:
    """Seconds of audio received so far, on stderr, so a long text does not look hung.

    On a terminal one line is rewritten in place; otherwise (a log, a CI job, a pipe) a line is
    written when audio starts and then at most once a second, so logs stay readable.
    """

    def __init__(self, stream: IO[str], *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self.started = time.monotonic()
        self._last = self.started
        self._shown = False

    def start(self, text: str, where: str) -> None:
        words = len(text.split())
        noun = "word" if words == 1 else "words"
        self._line(f"speaking {len(text):,} characters ({words:,} {noun}) via {where}")

    def first_audio(self, seconds: float) -> None:
        if not self.interactive:
            self._line(f"first audio after {seconds:.2f} s")

    def update(self, audio_seconds: float) -> None:
        now = time.monotonic()
        if now - self._last < (0.1 if self.interactive else 1.0):
            return
        self._last = now
        message = f"{audio_seconds:7.1f} s of audio after {now - self.started:5.1f} s"
        if self.interactive:
            print(f"\rlmnt-local: {message}", end="", file=self.stream, flush=True)
            self._shown = True
        else:
            self._line(message)

    def done(self) -> None:
        if self._shown:
            print(file=self.stream, flush=True)  # end the line rewritten in place
            self._shown = False

    def _line(self, message: str) -> None:
        self.done()
        print(f"lmnt-local: {message}", file=self.stream, flush=True)


@dataclass(frozen=True, slots=True)
class Speech:
    """What ``speak`` heard: the PCM the track played and how long it took.

    ``failure`` is why the server stopped early when it failed after audio started: ``pcm`` is
    then what arrived before, kept because a user who waited minutes for a long text would
    rather have most of it than nothing (``say`` marks it partial and exits 1).
    """

    pcm: bytes  # mono s16le at ``rate``
    rate: int
    first_audio: float | None  # seconds from the start to the first audio frame
    wall: float  # seconds from the start to the last frame played
    failure: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


def _turns(text: str) -> list[list[str]]:
    """The text as turns of at most ``TURN_CHARS``, each a list of ``CHUNK_CHARS`` pieces."""
    turns: list[list[str]] = [[]]
    size = 0
    # Sentences, long ones cut after a space: how an agent's chunker streams text, and the same
    # cut the local server makes.
    from lmnt_local.server.config import speech_units

    for piece in speech_units(text, CHUNK_CHARS):
        if size + len(piece) > TURN_CHARS and turns[-1]:
            turns.append([])
            size = 0
        turns[-1].append(piece)
        size += len(piece)
    return turns


async def speak(
    text: str,
    *,
    ws_url: str,
    api_key: str,
    progress: _Progress | None = None,
    drain_timeout: float = 10.0,
    **options: Any,
) -> Speech:
    """Speak ``text`` through ``LMNTTTS`` into the framework's track; return what it played.

    The track is drained the way the WebRTC sender pulls it, only as fast as frames are ready
    instead of in real time, and the end is the track's own "last audio byte" callback after
    ``mark_synthesis_complete()``: the audio is complete when the framework says everything
    queued was played, not when ``synthesize()`` returns.  A failure after audio started is
    only an ``"error"`` event for the plugin (the agent keeps what was heard); here it ends the
    speaking, and what was played is returned with ``failure`` saying why (never a silently
    truncated WAV: ``say`` says it is partial).
    """
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack
    from videosdk.agents.tts.tts import FlushMarker

    from videosdk.plugins.lmnt.errors import LMNTError
    from videosdk.plugins.lmnt.tts import LMNTTTS

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    track = CustomAudioStreamTrack(loop)
    track._start = 0.0  # a start in the past: recv() never waits for real time
    track._speaking_grace_period = 0.0
    # One utterance: a warm spare connection would only be opened to be closed again.
    options.setdefault("warm_connection", False)
    tts = LMNTTTS(api_key=api_key, ws_url=ws_url, **options)
    tts.audio_track = track
    tts.loop = loop
    errors: list[str] = []
    tts.on("error", lambda message: errors.append(str(message)))
    first_audio: list[float] = []
    played_all = asyncio.Event()

    async def on_first_audio() -> None:
        if not first_audio:
            first_audio.append(time.monotonic() - started)
            if progress is not None:
                progress.first_audio(first_audio[0])

    async def on_last_audio() -> None:
        played_all.set()

    tts.on_first_audio_byte(on_first_audio)
    track.on_last_audio_byte(on_last_audio)
    frames: list[bytes] = []
    frame_seconds = track.samples / track.sample_rate

    async def drain() -> None:
        while True:
            before = track._samples_played
            frame = await track.recv()
            # The track counts a frame as played only when it carried queued audio.
            if track._samples_played > before and frame is not None:
                frames.append(_frame_bytes(frame))
                if progress is not None:
                    progress.update(len(frames) * frame_seconds)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.002)

    async def text_of(pieces: list[str]) -> AsyncIterator[Any]:
        for piece in pieces:
            yield piece
        yield FlushMarker()  # as the framework's SpeechGeneration ends every turn

    drainer = loop.create_task(drain(), name="lmnt-local-drain")
    failure: str | None = None
    try:
        for pieces in _turns(text):
            tts.reset_first_audio_tracking()
            track.mark_synthesis_start()
            try:
                await tts.synthesize(text_of(pieces))
            except LMNTError as exc:
                if not track._cumulative_input_samples:
                    raise
                errors.append(str(exc))  # a later turn failed before its audio: keep the rest
            if errors:
                failure = errors[0]
                break
        track.mark_synthesis_complete()
        try:
            await asyncio.wait_for(played_all.wait(), drain_timeout)
        except TimeoutError:
            # Only a partial frame can be stuck (the plugin pads turns to whole frames).
            log.warning("the track did not report its last audio; taking what it holds")
            frames.extend(_frame_bytes(f) for f in track.frame_buffer)
            frames.append(bytes(track.audio_data_buffer))
    finally:
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
        await tts.aclose()
        if progress is not None:
            progress.done()
    return Speech(
        pcm=b"".join(frames),
        rate=int(track.sample_rate),
        first_audio=first_audio[0] if first_audio else None,
        wall=time.monotonic() - started,
        failure=failure,
    )


def _frame_bytes(frame: Any) -> bytes:
    return bytes(frame.to_ndarray().reshape(-1).astype("<i2").tobytes())


def wav_bytes(pcm: bytes, rate: int = TRACK_RATE) -> bytes:
    """A complete mono s16 WAV file, built in memory so it can go to a pipe (no seeking)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()
