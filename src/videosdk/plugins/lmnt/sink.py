"""How a turn writes into the framework's audio track: its ``TurnSink``, and the format claim.

The track is the framework's and may be shared (a second TTS, a realtime model, a
``stream_synthesize`` capture), so what our turns push into it and declare on it is kept in one
place, apart from the adapter's options and lifecycle; ``track`` holds what is only read from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .playout import TurnSink
from .track import _playback_clock, _queued_samples
from .words import WordAnnouncer

if TYPE_CHECKING:
    from .tts import LMNTTTS

TRACK_DEFAULT_RATE = 24000  # what the framework's CustomAudioStreamTrack plays


def track_sink(tts: LMNTTTS, track: Any) -> TurnSink:
    """A turn's ``TurnSink`` on ``track``, with this call's first-audio callback and words."""
    rate = getattr(track, "sample_rate", None)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 4000 <= rate <= 192000:
        rate = TRACK_DEFAULT_RATE  # e.g. stream_synthesize's QueueTrack, which has none
    chunk = getattr(track, "chunk_size", None)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk <= 0 or chunk % 2:
        chunk = rate // 50 * 2

    def pending() -> int | None:
        buf = getattr(track, "audio_data_buffer", None)
        return len(buf) if isinstance(buf, bytes | bytearray) else None

    async def push(pcm: bytes) -> None:
        await track.add_new_bytes(pcm)

    def queued_seconds() -> float | None:
        samples = _queued_samples(track)
        return None if samples is None else samples / rate

    announcer: WordAnnouncer | None = None
    if tts.supports_word_timestamps:
        # Finished ones go; one still announcing a turn that is playing stays, but only
        # for words whose audio is still on the track: what was cleared from it (or never
        # pushed, the superseded turn) will never be heard.
        tts._announcers = {a for a in tts._announcers if not a.idle}
        queued = _queued_samples(track)
        if queued is not None and isinstance(track.sample_rate, int):
            for old in tts._announcers:
                old.keep_within(queued / track.sample_rate)
        announcer = WordAnnouncer(tts._emit_word, _playback_clock(track))
        tts._announcers.add(announcer)

    first_sent = False  # per call: one synthesize() is one turn (not per instance)

    async def first_audio() -> None:
        nonlocal first_sent
        if announcer is not None:
            announcer.audio_started()
        if not first_sent:
            first_sent = tts._first_chunk_sent = True
            if tts._first_audio_callback is not None:
                await tts._first_audio_callback()

    return TurnSink(
        push=push,
        on_first_audio=first_audio,
        out_rate=rate,
        frame_bytes=chunk,
        pending_bytes=pending,
        queued_seconds=queued_seconds,
        on_words=announcer.add if announcer is not None else None,
    )


def claim_input_format(claims: dict[int, list[Any]], track: Any) -> Callable[[], None]:
    """Make the shared track take our PCM as it is, for our turns only; returns the undo.

    Our audio is always at the track's own rate, so with no declaration (or a matching one)
    the track's converter is an identity and nothing is declared.  Another producer (a
    second TTS, a realtime model) may have declared its own rate and go on pushing audio
    without declaring again: its declaration is put back when our last overlapping turn
    ends (a turn superseded by the next must not restore it under that next turn).
    """
    declare = getattr(track, "set_input_format", None)
    rate, channels = getattr(track, "sample_rate", None), getattr(track, "channels", 1)
    if not callable(declare) or not isinstance(rate, int):
        return lambda: None

    def current() -> tuple[Any, Any]:
        return getattr(track, "_input_sample_rate", None), getattr(track, "_input_channels", 1)

    claim = claims.get(id(track))
    if claim is None:
        previous, previous_channels = current()
        if previous is None or (previous, previous_channels or 1) == (rate, channels):
            return lambda: None
        claim = claims[id(track)] = [previous, previous_channels or 1, 0]
    if current() != (rate, channels):
        declare(rate, channels)
    claim[2] += 1

    def restore() -> None:
        claim[2] -= 1
        if claim[2] > 0:
            return
        claims.pop(id(track), None)
        if current() == (rate, channels):  # unless someone declared meanwhile
            declare(claim[0], claim[1])

    return restore
