"""Pitch and duration of what leaves the framework's audio track, per wire format and rate.

Speaks a known text through ``LMNTTTS`` into the real ``CustomAudioStreamTrack`` (drained as
fast as frames are ready), against the local server's tone engine (440 Hz, 50 ms a character).
For comparison, the same bytes pushed the way 1.0.30 did (raw, undeclared) are measured too:
that is what its users heard at 8/16 kHz and for non-PCM formats.

    python benchmarks/audio_accuracy.py
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import numpy as np

# _common sits beside this script; the script may also be loaded by path (tests/test_soak.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ensure_package

ensure_package()

from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.protocol import FORMATS, SAMPLE_RATES
from lmnt_local.server import LocalLMNTServer, ToneEngine
from lmnt_local.server.encoding.encoders import make_encoder
from videosdk.plugins.lmnt import LMNTTTS

TEXT = "Hello there, general listener."
RATE = 24000


def pitch(pcm: np.ndarray) -> float:
    x = pcm.astype(np.float64)
    if x.size < 64:
        return float("nan")
    win = np.hanning(x.size)
    spec = np.abs(np.fft.rfft(x * win, n=8 * x.size))
    k = int(np.argmax(spec[1:])) + 1
    a, b, c = np.log(spec[k - 1 : k + 2] + 1e-12)
    shift = 0.5 * (a - c) / (a - 2 * b + c)
    return float((k + shift) * RATE / (8 * x.size))


def span(pcm: np.ndarray) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 0.02 * 32767)
    if loud.size == 0:
        return 0.0, 0.0
    return loud[0] / RATE, (loud[-1] + 1) / RATE


async def through_track(tts: LMNTTTS) -> np.ndarray:
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    track._start = 0.0
    track._speaking_grace_period = 0.0
    tts.audio_track = track
    await tts.synthesize(TEXT)
    frames = []
    while track.frame_buffer:
        frames.append((await track.recv()).to_ndarray().reshape(-1))
    return np.concatenate(frames) if frames else np.zeros(0, np.int16)


async def raw_push(fmt: str, rate: int) -> np.ndarray:
    """What 1.0.30 did: the server's bytes straight into the track, nothing declared."""
    pcm, _ = ToneEngine().render(TEXT, rate)
    enc = make_encoder(fmt, rate)
    data = enc.encode(pcm.tobytes()) + enc.finish()
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    track._start = 0.0
    await track.add_new_bytes(data[: len(data) - len(data) % 2])
    frames = []
    while track.frame_buffer:
        frames.append((await track.recv()).to_ndarray().reshape(-1))
    return np.concatenate(frames) if frames else np.zeros(0, np.int16)


async def main() -> None:
    logging.disable(logging.WARNING)
    expected = ToneEngine().duration_of(TEXT)
    print(f"text: {TEXT!r}: 440 Hz tone, {expected:.3f} s; track plays {RATE} Hz")
    header = (
        f"{'format':<10} {'rate':>5} | {'pitch Hz':>9} {'err %':>7} {'tone s':>7} "
        f"{'err ms':>7} {'total s':>7} | {'1.0.30 pitch':>12} {'1.0.30 tone s':>13}"
    )
    print(header)
    print("-" * len(header))
    worst_pitch = worst_dur = 0.0
    async with LocalLMNTServer(engine=ToneEngine()) as server:
        for fmt in FORMATS:
            for rate in SAMPLE_RATES:
                tts = LMNTTTS(api_key="bench", ws_url=server.ws_url, format=fmt, sample_rate=rate)
                try:
                    pcm = await through_track(tts)
                finally:
                    await tts.aclose()
                p = pitch(pcm[int(span(pcm)[0] * RATE) : int(span(pcm)[1] * RATE)])
                s0, s1 = span(pcm)
                perr = (p - 440) / 440 * 100
                derr = ((s1 - s0) - expected) * 1000
                worst_pitch = max(worst_pitch, abs(perr))
                worst_dur = max(worst_dur, abs(derr))
                old = await raw_push(fmt, rate)
                o0, o1 = span(old)
                old_p = pitch(old[int(o0 * RATE) : int(o1 * RATE)])
                print(
                    f"{fmt:<10} {rate:>5} | {p:9.2f} {perr:7.3f} {s1 - s0:7.3f} {derr:7.1f} "
                    f"{pcm.size / RATE:7.3f} | {old_p:12.1f} {o1 - o0:13.3f}"
                )
    print(f"worst pitch error {worst_pitch:.3f} %, worst tone-duration error {worst_dur:.1f} ms")
    print("total s includes codec delay/padding (mp3: 1105 samples of encoder+decoder delay)")


if __name__ == "__main__":
    asyncio.run(main())
