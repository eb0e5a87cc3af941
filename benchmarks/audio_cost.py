"""What the audio path costs: interrupt-to-silence, and CPU per second of audio per format/rate.

Run from the repository root::

    python benchmarks/audio_cost.py [--interrupts 20] [--seconds 10] [--skip-interrupt]

Part 1, interrupt to silence.  A long turn streams from the local server (separate process,
plain ``ws://`` on loopback, audio paced at 2x real time: faster than playback, as a cloud TTS
streams, so the track holds a backlog and the server is still sending when the barge-in
comes) into the framework's real ``CustomAudioStreamTrack``, which is drained at real time by
its own ``recv()`` pacing.  After a random 0.2-0.8 s of playback the script does what
``SpeechGeneration.interrupt()`` does (``await tts.interrupt()``, then ``track.interrupt()``)
and records every ``add_new_bytes`` and every frame that leaves the track.  The track is left
in its non-manual mode, where it keeps accepting audio after an interrupt, so a plugin that
leaks bytes is heard (the framework's manual mode would hide such a leak by dropping them).

* ``interrupt() returns``: wall time of ``await tts.interrupt()``.
* ``pushes stop``: from the start of ``interrupt()`` until the last ``add_new_bytes`` of the
  turn (or until ``interrupt()`` returned if none came later).
* ``leaked frames``: 20 ms frames that left the track after the interrupt *beyond* the
  framework's own fade-out tail.  On interrupt the track keeps up to
  ``interrupt_fade_duration`` (0.4 s = 20 frames) of the audio it already had queued and plays
  it with an exponential fade to -60 dB; that tail is the framework's design and is counted
  separately (``tail frames``, read right after the track's ``interrupt()``).
* ``synthesize() ends``: from the start of ``interrupt()`` until the turn's ``synthesize()``
  returned.

Part 2, CPU cost.  For every LMNT format at 8/16/24 kHz, 10 s of a speech-like signal is
encoded by the local server's own encoders and cut into the frames the server sends
(``AudioStream`` with ``ServerConfig.frame_bytes``), then fed frame by frame through
``AudioPipeline`` to 24 kHz s16 (the track's format), repeated until at least 0.3 CPU-seconds
were spent.  ``x real time per core`` is seconds of audio decoded per CPU-second
(``time.process_time``, all threads: the WebM demuxer has its own thread).  ``feed()`` p99
and max are wall times of single calls, i.e. how long one frame holds the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import _common as common

FORMATS = ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm")
RATES = (8000, 16000, 24000)
TRACK_RATE = 24000
LONG_TEXT = " ".join(["This reply goes on and on so that the listener can cut it short."] * 4)
OBSERVE = 0.6  # seconds watched after an interrupt: longer than the 0.4 s fade tail
PACE = 2.0


# -- part 1: interrupt to silence ------------------------------------------------------------


@dataclass
class InterruptRun:
    returns: float  # interrupt() wall time
    pushes_stop: float  # until the last add_new_bytes of the turn
    leaked_bytes: int  # bytes pushed after interrupt() returned
    frames_after: int  # frames that left the track after interrupt() began
    tail: int  # of which the framework's fade-out tail
    synth_end: float  # until synthesize() returned

    @property
    def leaked_frames(self) -> int:
        return max(0, self.frames_after - self.tail)


def _recording_track_class() -> type:
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack

    class RecordingTrack(CustomAudioStreamTrack):  # type: ignore[misc]
        """The framework's track, recording pushes, played frames and the fade tail size."""

        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            super().__init__(loop)
            self.pushes: list[tuple[float, int]] = []
            self.played: list[float] = []
            self.tail: int | None = None

        async def add_new_bytes(self, audio_data: bytes) -> None:
            self.pushes.append((time.perf_counter(), len(audio_data)))
            await super().add_new_bytes(audio_data)

        def interrupt(self) -> None:
            super().interrupt()
            if self.tail is None:
                self.tail = len(self.frame_buffer)  # what the fade-out keeps

        async def recv(self) -> Any:
            before = self._samples_played
            frame = await super().recv()
            if self._samples_played > before:
                self.played.append(time.perf_counter())
            return frame

    return RecordingTrack


async def _play(track: Any) -> None:
    """The WebRTC sender: one frame per 20 ms, paced by ``recv()`` itself."""
    for _ in range(common.MAX_CHUNKS):
        await track.recv()


async def _text() -> AsyncIterator[str]:
    yield LONG_TEXT


async def _interrupt_once(tts: Any, track: Any, rng: random.Random) -> InterruptRun | None:
    track.enable_audio_input()  # as SpeechGeneration does per turn, but without manual control
    track.pushes.clear()
    track.tail = None
    tts.reset_first_audio_tracking()
    played0 = len(track.played)
    task = asyncio.get_running_loop().create_task(tts.synthesize(_text()))
    target = rng.randint(10, 40)  # frames (0.2-0.8 s) heard before the barge-in
    for _ in range(2000):
        if len(track.played) - played0 >= target or task.done():
            break
        await asyncio.sleep(0.005)
    if task.done():
        print(f"  {type(tts).__module__}: the turn ended before the interrupt; skipped")
        return None
    t0 = time.perf_counter()
    await tts.interrupt()
    returned = time.perf_counter()
    track.interrupt()  # SpeechGeneration.interrupt() calls it again after tts.interrupt()
    synth_end = math.nan
    try:
        await asyncio.wait_for(task, 5)
        synth_end = time.perf_counter() - t0
    except TimeoutError:
        pass
    except Exception as exc:  # a plugin may raise on an interrupted turn; that is not measured
        print(f"  synthesize() raised after interrupt: {type(exc).__name__}: {exc}")
        synth_end = time.perf_counter() - t0
    await asyncio.sleep(max(0.0, t0 + OBSERVE - time.perf_counter()))
    later = [t for t, _ in track.pushes if t >= t0]
    return InterruptRun(
        returns=returned - t0,
        pushes_stop=max(returned, *later) - t0 if later else returned - t0,
        leaked_bytes=sum(n for t, n in track.pushes if t > returned),
        frames_after=sum(1 for t in track.played[played0:] if t > t0),
        tail=track.tail or 0,
        synth_end=synth_end,
    )


async def _interrupts(count: int, seed: int) -> list[list[str]]:
    from videosdk.plugins.lmnt import LMNTTTS

    upstream = common.load_upstream()
    rng = random.Random(seed)
    rows = []
    spec = common.ServerSpec(faults={"pace": PACE}, engine={"seconds_per_char": 0.05})
    with common.ServerProcess(spec) as info:
        loop = asyncio.get_running_loop()
        for name, make in (
            ("ours", lambda: LMNTTTS(api_key=common.API_KEY, ws_url=info.ws_url)),
            ("1.0.30", lambda: upstream.LMNTTTS(api_key=common.API_KEY, ws_url=info.ws_url)),
        ):
            tts = make()
            track = _recording_track_class()(loop)
            tts.audio_track, tts.loop = track, loop
            player = loop.create_task(_play(track))
            if hasattr(tts, "prewarm"):
                await tts.prewarm()
            runs: list[InterruptRun] = []
            try:
                for _ in range(count):
                    run = await _interrupt_once(tts, track, rng)
                    if run is not None:
                        runs.append(run)
            finally:
                player.cancel()
                await tts.aclose()
            ret = common.Summary.of([r.returns for r in runs])
            stop = common.Summary.of([r.pushes_stop for r in runs])
            synth = common.Summary.of([r.synth_end for r in runs if not math.isnan(r.synth_end)])
            leaked = [r.leaked_frames for r in runs]
            tails = [r.tail for r in runs] or [0]
            rows.append([
                name, str(len(runs)), common.ms(ret.median, 2), common.ms(ret.max, 2),
                common.ms(stop.median, 2), common.ms(stop.max, 2),
                str(sum(r.leaked_bytes for r in runs)),
                f"{max(leaked, default=0)}", f"{sum(leaked)}",
                f"{min(tails)}-{max(tails)}",
                common.ms(synth.median, 1), common.ms(synth.max, 1),
                f"{sum(1 for r in runs if math.isnan(r.synth_end))}",
            ])  # fmt: skip
    return rows


# -- part 2: CPU per second of audio ---------------------------------------------------------


def speechlike(rate: int, seconds: float, seed: int = 7) -> bytes:
    """A deterministic voice-like signal: a gliding 90-220 Hz harmonic series with formant-ish
    weights, a 4 Hz syllable envelope with pauses, and a little noise (codecs work on it the
    way they do on speech, unlike on a pure tone or silence)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 155 + 65 * np.sin(2 * np.pi * 0.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    wave = np.zeros(n)
    for k in range(1, 30):
        if k * 220 >= rate / 2:
            break
        weight = 1.0 / k * (1.5 if 3 <= k <= 5 else 1.0) * (1.3 if 10 <= k <= 13 else 1.0)
        wave += weight * np.sin(k * phase)
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.6
    envelope *= (np.sin(2 * np.pi * 0.25 * t) > -0.7).astype(float)  # pauses
    signal = 0.25 * wave / np.max(np.abs(wave)) * envelope + 0.003 * rng.standard_normal(n)
    return bytes(np.round(np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())


def wire_frames(fmt: str, rate: int, pcm: bytes) -> list[bytes]:
    """The binary frames the local server would send for ``pcm`` (100 ms engine chunks)."""
    from lmnt_local.server.config import ServerConfig
    from lmnt_local.server.encoding.encoders import make_encoder
    from lmnt_local.server.encoding.stream import AudioStream

    stream = AudioStream(make_encoder(fmt, rate), rate, ServerConfig().frame_bytes)
    step = rate // 10 * 2
    frames = []
    for i in range(0, len(pcm), step):
        frames += stream.feed(pcm[i : i + step], (), 0.0)
    frames += stream.end_unit()
    frames += stream.finish()
    return [f.data for f in frames if f.data]


@dataclass
class Cost:
    cpu: float = 0.0  # CPU seconds (all threads)
    wall: float = 0.0
    audio: float = 0.0  # seconds of audio decoded
    feeds: list[float] = field(default_factory=list)  # wall seconds of each feed() call
    out_seconds: list[float] = field(default_factory=list)


def decode_cost(
    fmt: str, rate: int, frames: list[bytes], seconds: float, min_cpu: float, max_reps: int
) -> Cost:
    from videosdk.plugins.lmnt.audio import AudioPipeline

    cost = Cost()
    for _ in range(max_reps):
        pipeline = AudioPipeline(fmt, rate, TRACK_RATE)
        out = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for frame in frames:
            f0 = time.perf_counter()
            out += len(pipeline.feed(frame))
            cost.feeds.append(time.perf_counter() - f0)
        out += len(pipeline.flush())
        pipeline.close()
        cost.cpu += time.process_time() - cpu0
        cost.wall += time.perf_counter() - wall0
        cost.audio += seconds
        cost.out_seconds.append(out / 2 / TRACK_RATE)
        if cost.cpu >= min_cpu:
            break
    return cost


async def track_cost(seconds: float, min_cpu: float, max_reps: int) -> Cost:
    """The framework's share, the same for every format: 24 kHz s16 into ``add_new_bytes``
    (cut into 960-byte AudioFrames), then taken off the queue as ``recv()`` would."""
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack

    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    pcm = speechlike(TRACK_RATE, seconds)
    piece = 4096
    cost = Cost()
    for _ in range(max_reps):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(0, len(pcm), piece):
            await track.add_new_bytes(pcm[i : i + piece])
            track.frame_buffer.clear()
        cost.cpu += time.process_time() - cpu0
        cost.wall += time.perf_counter() - wall0
        cost.audio += seconds
        if cost.cpu >= min_cpu:
            break
    return cost


def _cost_row(label: str, rate: str, cost: Cost, expect: float | None) -> list[str]:
    out = f"{sum(cost.out_seconds) / len(cost.out_seconds):.3f}" if cost.out_seconds else "-"
    if expect is not None and cost.out_seconds:
        out += " ok" if abs(float(out) - expect) <= 0.1 else " (!)"
    feeds = common.Summary.of(cost.feeds)
    return [
        label, rate, f"{cost.audio / cost.cpu:,.0f}", f"{cost.audio / cost.wall:,.0f}",
        f"{cost.cpu / cost.audio * 1e3:.3f}", common.ms(feeds.p99, 3), common.ms(feeds.max, 3),
        out,
    ]  # fmt: skip


async def _costs(seconds: float) -> list[list[str]]:
    rows = []
    for fmt in FORMATS:
        for rate in RATES:
            pcm = speechlike(rate, seconds)
            frames = wire_frames(fmt, rate, pcm)
            decode_cost(fmt, rate, frames, seconds, 0.0, 1)  # warm-up: load codec libraries
            cost = decode_cost(fmt, rate, frames, seconds, min_cpu=0.3, max_reps=30)
            rows.append(_cost_row(fmt, str(rate), cost, seconds))
    cost = await track_cost(seconds, min_cpu=0.3, max_reps=30)
    rows.append(_cost_row("framework track", "24000", cost, None))
    return rows


async def _main(args: argparse.Namespace) -> None:
    _recording_track_class()  # import the framework now, then freeze its import-time heap
    common.freeze_heap()
    print(f"{common.cpu_count_note()}\n")
    if not args.skip_interrupt:
        print(f"Interrupt to silence: {args.interrupts} barge-ins per client, server pace "
              f"{PACE:g}x real time, track drained at real time\n")  # fmt: skip
        rows = await _interrupts(args.interrupts, args.seed)
        print(common.table([
            "client", "runs", "interrupt() returns med", "max", "pushes stop med", "max",
            "bytes pushed after return", "leaked frames max", "leaked frames total",
            "fade tail frames", "synthesize() ends med", "max", "synthesize() still running",
        ], rows))  # fmt: skip
        print("\ntimes in ms from the start of interrupt(); target: silence within one 20 ms "
              "frame (pushes stop <= 20 ms and no leaked frame)\n")  # fmt: skip
    print(f"CPU cost of the audio path: {args.seconds:g} s of speech-like audio per format "
          f"and rate, server framing, decoded to {TRACK_RATE} Hz s16\n")  # fmt: skip
    rows = await _costs(args.seconds)
    print(common.table([
        "format", "rate", "x real time per core (CPU)", "x real time (wall)",
        "CPU ms per audio s", "feed() p99 ms", "feed() max ms", "audio out s",
    ], rows))  # fmt: skip
    print("\n'audio out s' is the decoded duration ('ok' when within 0.1 s of the input)")
    print(f"at the end: {common.load_note()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--interrupts", type=int, default=20, help="barge-ins per client")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per format and rate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-interrupt", action="store_true", help="only the CPU part")
    args = parser.parse_args()
    if not 1 <= args.interrupts <= 500 or not 1 <= args.seconds <= 120:
        parser.error("--interrupts must be 1..500 and --seconds 1..120")
    common.ensure_package()
    common.quiet_logs()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
