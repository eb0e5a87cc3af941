"""Word timestamps: from the server's per-protocol timing to the moment the track plays a word.

Servers time words three different ways: legacy ``durations`` extras restart at 0 for every audio
chunk and come *before* it; API 1.1 ``timestamps`` restart for every chunk and come *after* it;
API 1.2 ``timestamps`` are cumulative and restart after each flush/reset.  ``WordTimeline`` puts
them all on one axis, seconds of this turn's audio, so the adapter can announce each word when
the listener hears it, not when its text arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from lmnt_local.protocol import WordSpan

__all__ = ["TimedWord", "WordAnnouncer", "WordTimeline"]


@dataclass(frozen=True, slots=True)
class TimedWord:
    text: str
    start: float  # seconds from the first audio of the turn
    duration: float


class WordTimeline:
    """Feed it audio lengths and timing messages in arrival order; it yields absolute words."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.audio_seconds = 0.0  # audio of this turn received so far
        self._last_chunk_start = 0.0
        self._segment_start = 0.0  # 1.2: where the current flush segment's audio began
        self._pending_segment_reset = False
        self._last_emitted_end = -1.0
        #: Seconds the listener hears before stream time 0 (the codec's delay): every word
        #: is heard that much later than the server's timing says.
        self.delay = 0.0

    def audio(self, seconds: float) -> None:
        self.audio_span(self.audio_seconds, self.audio_seconds + seconds)

    def audio_span(self, start: float, end: float) -> None:
        """A chunk of audio covering stream seconds ``start`` to ``end`` (from the bytes
        received, where the format tells: decoding lags behind them)."""
        if self._pending_segment_reset:
            self._segment_start = start
            self._pending_segment_reset = False
        self._last_chunk_start = start
        self.audio_seconds = end

    def segment_boundary(self) -> None:
        """A flush or reset completed: 1.2 timings of the next audio restart from 0."""
        self._pending_segment_reset = True

    def _place(self, spans: list[WordSpan], offset: float) -> list[TimedWord]:
        out: list[TimedWord] = []
        for span in spans:
            text = span.text.strip()
            if not text or not any(ch.isalnum() for ch in text):
                continue  # silences, spaces and bare punctuation are not words
            out.append(TimedWord(text, self.delay + offset + span.start, span.duration))
        return out

    def extras(self, spans: list[WordSpan]) -> list[TimedWord]:
        """Legacy: the extras describe the audio frame that follows them."""
        return self._place(spans, self.audio_seconds)

    def timestamps(self, spans: list[WordSpan]) -> list[TimedWord]:
        """Typed API: the timestamps describe audio already received."""
        if self.version == "1.1":
            return self._place(spans, self._last_chunk_start)
        return self._place(spans, self._segment_start)


class WordAnnouncer:
    """Announces words when the track plays them.

    ``played`` reports how many seconds of this turn's audio have left the track; tracks that do
    not expose playback (``stream_synthesize``'s queue) get the wall clock since the first audio,
    which is what a real-time consumer would hear.  Polling every 10 ms keeps each announcement
    within about one 20 ms frame of its audio.
    """

    POLL = 0.01
    # Words still owed when playback has not moved for this long will never be heard (their
    # audio was cleared from the track without an interrupt() reaching us): give up on them
    # rather than poll forever.  Longer than any pause of the track for false-interrupt checks.
    MAX_STALL = 10.0

    def __init__(
        self,
        emit: Callable[[str, str], None],
        played: Callable[[], float] | None,
    ) -> None:
        self._emit = emit
        self._played = played
        self._queue: list[TimedWord] = []
        self._spoken: list[str] = []
        self._t0: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def spoken_text(self) -> str:
        return " ".join(self._spoken)

    @property
    def idle(self) -> bool:
        """Nothing left to announce and nothing announcing."""
        return not self._queue and (self._task is None or self._task.done())

    def audio_started(self) -> None:
        if self._t0 is None:
            self._t0 = time.monotonic()

    def add(self, words: list[TimedWord]) -> None:
        self._queue.extend(words)
        self._queue.sort(key=lambda w: w.start)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="lmnt-words")

    def _position(self) -> float:
        if self._played is not None:
            return self._played()
        return 0.0 if self._t0 is None else time.monotonic() - self._t0

    async def _run(self) -> None:
        last, moved_at = self._position(), time.monotonic()
        while self._queue:
            now = self._position()
            if now != last:
                last, moved_at = now, time.monotonic()
            elif time.monotonic() - moved_at > self.MAX_STALL:
                self._queue.clear()
                break
            # Strictly after: a word is heard once a sample of it has left the track, and a
            # turn interrupted before playing must announce nothing.
            while self._queue and self._queue[0].start < now:
                word = self._queue.pop(0)
                self._spoken.append(word.text)
                self._emit(word.text, self.spoken_text)
            if self._queue:
                await asyncio.sleep(self.POLL)

    def keep_within(self, seconds: float) -> None:
        """Keep only words that start within ``seconds`` of audio from where playback is now:
        the rest of this turn's audio is no longer on the track, so they will not be heard."""
        limit = self._position() + seconds
        self._queue = [w for w in self._queue if w.start < limit]

    def stop(self) -> None:
        """Drop words not yet heard (interrupt): the transcript keeps only what was played."""
        self._queue.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
