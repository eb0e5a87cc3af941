"""What the listener hears: pitch and duration of the audio that leaves the real framework track,
for every format and rate the constructor accepts, through the real server over TCP."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from videosdk.agents.room.output_stream import MixingCustomAudioStreamTrack

from lmnt_local.protocol import FORMATS, SAMPLE_RATES
from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import LMNTTTS

from audio_helpers import active_span, estimate_pitch
from track_helpers import FRAME_BYTES, TRACK_RATE, Drain, FlushMarker, aiter_of, make_track, speak

TEXT = "Hello there, general listener."  # 30 chars: 1.5 s of tone with word gaps
TONE = ToneEngine()
EXPECTED = TONE.duration_of(TEXT)

# The codec's own delay and padding add silence around the tone; the tone itself must keep its
# length. Measured totals are reported in the closing note, the tone span is asserted here.
RESULTS: dict[tuple[str, int], tuple[float, float, float]] = {}


def _tts(server: LocalLMNTServer, **kw: object) -> LMNTTTS:
    return LMNTTTS(api_key="test-key", ws_url=server.ws_url, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", SAMPLE_RATES)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_pitch_and_duration_on_the_track(
    lmnt_server: LocalLMNTServer, fmt: str, rate: int
) -> None:
    tts = _tts(lmnt_server, format=fmt, sample_rate=rate)
    try:
        pcm = await speak(tts, TEXT)
    finally:
        await tts.aclose()
    assert len(pcm) % FRAME_BYTES == 0
    pitch = estimate_pitch(pcm, TRACK_RATE)
    start, end = active_span(pcm, TRACK_RATE)
    RESULTS[(fmt, rate)] = (pitch, end - start, len(pcm) / 2 / TRACK_RATE)
    assert abs(pitch - TONE.frequency) / TONE.frequency < 0.01, (fmt, rate, pitch)
    assert abs((end - start) - EXPECTED) < 0.020, (fmt, rate, end - start)
    assert lmnt_server.sessions[-1].init["sample_rate"] == rate
    assert lmnt_server.sessions[-1].init["format"] == fmt


@pytest.mark.parametrize("fmt", ["pcm_s16le", "mp3"])
async def test_track_without_set_input_format(lmnt_server: LocalLMNTServer, fmt: str) -> None:
    """``stream_synthesize`` swaps in a track with no ``set_input_format`` and no rate."""
    tts = _tts(lmnt_server, format=fmt, sample_rate=16000)
    try:
        chunks = [c async for c in tts.stream_synthesize(aiter_of([TEXT, FlushMarker()]))]
    finally:
        await tts.aclose()
    pcm = b"".join(chunks)
    assert all(len(c) % 2 == 0 for c in chunks)
    pitch = estimate_pitch(pcm, TRACK_RATE)
    start, end = active_span(pcm, TRACK_RATE)
    assert abs(pitch - 440) / 440 < 0.01
    assert abs((end - start) - EXPECTED) < 0.020


async def test_sticky_foreign_input_format_is_reset(lmnt_server: LocalLMNTServer) -> None:
    """Another provider declared 16 kHz on the shared track; our 24 kHz audio must not be
    reinterpreted through that converter."""
    track = make_track()
    track.set_input_format(16000, 1)
    tts = _tts(lmnt_server)
    try:
        pcm = await speak(tts, TEXT, track=track)
    finally:
        await tts.aclose()
    assert abs(estimate_pitch(pcm, TRACK_RATE) - 440) / 440 < 0.01


async def test_mixing_track(lmnt_server: LocalLMNTServer) -> None:
    track = make_track(MixingCustomAudioStreamTrack)
    tts = _tts(lmnt_server, sample_rate=8000)
    try:
        pcm = await speak(tts, TEXT, track=track)
    finally:
        await tts.aclose()
    assert abs(estimate_pitch(pcm, TRACK_RATE) - 440) / 440 < 0.01


@pytest.mark.parametrize("fmt", ["pcm_s16le", "pcm_f32le", "ulaw"])
async def test_odd_and_empty_frames_never_misalign(lmnt_server: LocalLMNTServer, fmt: str) -> None:
    lmnt_server.faults = Faults(odd_frames=True, empty_frames=True)
    track = make_track()
    tts = _tts(lmnt_server, format=fmt, sample_rate=16000)
    try:
        pcm = await speak(tts, TEXT, track=track)
        # A second turn on the same track: no stray byte from the first may shift it.
        pcm2 = await speak(tts, TEXT, track=track)
    finally:
        await tts.aclose()
    for out in (pcm, pcm2):
        assert abs(estimate_pitch(out, TRACK_RATE) - 440) / 440 < 0.01
        start, end = active_span(out, TRACK_RATE)
        assert abs((end - start) - EXPECTED) < 0.020
        # Misaligned s16 shows up as broadband noise at full scale.
        samples = np.frombuffer(out, dtype="<i2").astype(np.int32)
        assert np.abs(np.diff(samples)).max() < 4000
    assert len(track.audio_data_buffer) == 0


async def test_each_turn_ends_on_a_whole_frame(lmnt_server: LocalLMNTServer) -> None:
    """A turn whose audio is not a multiple of 20 ms must be padded, or the track's
    ``on_last_audio_byte`` never fires and the next turn starts shifted."""
    track = make_track()
    tts = _tts(lmnt_server, sample_rate=24000)
    tts.audio_track = track
    try:
        for text in ("a", "ab c", "x y z!"):  # 50 ms a char = 2.5 frames: never whole
            drain = Drain(track)
            await tts.synthesize(text)
            assert len(track.audio_data_buffer) == 0, text
            await drain.stop()
    finally:
        await tts.aclose()


async def test_sentences_are_joined_with_a_space(lmnt_server: LocalLMNTServer) -> None:
    tts = _tts(lmnt_server)
    try:
        await speak(tts, aiter_of(["Sure.", "Here is the answer.", "Thanks!", FlushMarker()]))
        await speak(tts, aiter_of(["Hel", "lo", " world", FlushMarker()]))
    finally:
        await tts.aclose()
    texts = [s.text for s in lmnt_server.sessions if s.text]
    # each sentence ends with its space (complete now); pieces of a word stay glued
    assert texts == ["Sure. Here is the answer. Thanks! ", "Hello world"]
    first = next(s for s in lmnt_server.sessions if s.text)
    assert first.commands[-2:] == ["flush", "eof"]


async def test_whitespace_only_input_opens_no_connection(lmnt_server: LocalLMNTServer) -> None:
    track = make_track()
    tts = _tts(lmnt_server, warm_connection=False)
    tts.audio_track = track
    try:
        await tts.synthesize("   \n ")
        assert lmnt_server.sessions == []
        # An iterator of blanks can only be known blank once read; by then the connection was
        # open (connect-before-read keeps FallbackTTS retries whole), so it is kept, unused, for
        # the next turn instead of being wasted.
        await tts.synthesize(aiter_of(["  ", FlushMarker(), " "]))
        await tts.synthesize("Hi")
        await asyncio.sleep(0.05)
    finally:
        await tts.aclose()
    assert len(lmnt_server.sessions) == 1
    assert lmnt_server.sessions[0].texts == ["Hi"]


async def test_first_audio_callback_once_per_turn(lmnt_server: LocalLMNTServer) -> None:
    calls: list[int] = []
    tts = _tts(lmnt_server)
    tts.audio_track = make_track()

    async def on_first() -> None:
        calls.append(tts.audio_track._cumulative_input_samples)

    tts.on_first_audio_byte(on_first)
    try:
        tts.reset_first_audio_tracking()
        await tts.synthesize(TEXT)
        assert len(calls) == 1
        # One synthesize() is one turn (issue 10, item 4): the callback fires once per call even
        # when the framework's reset went elsewhere (FallbackTTS resets only its active provider).
        await tts.synthesize(TEXT)
        assert len(calls) == 2
        tts.reset_first_audio_tracking()
        await tts.synthesize(TEXT)
        assert len(calls) == 3
    finally:
        await tts.aclose()
    # Fired on audio, just before its first byte reached the track (not on connect).
    assert calls[0] == 0
    assert calls[1] > 0
