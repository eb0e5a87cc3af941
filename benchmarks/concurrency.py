"""Many concurrent streams in one process: event-loop lag, tracks running dry, CPU.

Run from the repository root::

    python benchmarks/concurrency.py [--streams 200] [--turns 3] [--pace 2 1 none]

Each stream is an ``LMNTTTS`` instance (default options: legacy protocol with a warm spare)
with its own real ``CustomAudioStreamTrack``, played out by a task that calls ``recv()`` the
way the WebRTC sender does: one 20 ms frame at a time, paced by the track's own clock.  Streams
start at random moments in the first two seconds and speak ``--turns`` replies of about 3 s,
with a 0.5-1.5 s pause (the user's turn) between them.  The local server (tone engine, TLS)
runs in a separate process, so client and server do not share a loop; with 2 cores each gets
about one.

Server pacing (``--pace``), i.e. how fast audio arrives compared with how fast it plays:

* ``2`` (default, realistic): audio streams at twice real time, like a cloud TTS that
  generates faster than playback but not instantly; the track builds a growing cushion.
* ``1``: exactly real time, a worst case: each 4096-byte server frame (85 ms at 24 kHz) is due
  just as the previous one has played, so any jitter anywhere shows up as a dry track.
* ``none``: as fast as possible: each reply arrives in a burst at the start of its turn.

Measured while the streams run:

* loop lag: a ticker wakes every 10 ms and records how late it woke (p50/p99/max).
* late frames: how long after its due time each ``recv()`` delivered its frame (p99).
* dry frames: silent frames a track produced mid-turn, i.e. after the turn's first audio and
  before ``synthesize()`` returned (all audio pushed); episodes count runs of them, and turns
  the replies affected.
* TTFA: text ready -> first audio at the track, under this load (server processing delay 0).
* CPU: client and server process CPU over the run, in % of one core.
* GC: the client's garbage-collector pauses during the run (``gc.callbacks``).  The framework
  makes the heap large (~150k tracked objects), so one full collection stops the loop for
  ~100 ms.  By default the script calls ``gc.freeze()`` after start-up (what a production
  worker should do; the server process always does); ``--no-gc-freeze`` shows the cost of
  not doing so.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import random
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as common

TEXT = "This is a reply of about three seconds, spoken to one of many callers."  # 70 chars
SECONDS_PER_CHAR = 0.045  # ToneEngine: ~3.2 s of audio per reply
TICK = 0.01
TURN_TIMEOUT = 30.0


@dataclass
class StreamStats:
    ttfa: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    dry_frames: int = 0
    dry_episodes: int = 0
    dry_turns: int = 0
    frames: int = 0
    turns: int = 0
    errors: list[str] = field(default_factory=list)


class Stream:
    """One caller: a plugin instance, its track, the player, and per-turn state."""

    def __init__(self, tts: Any, track: Any) -> None:
        self.tts = tts
        self.track = track
        self.stats = StreamStats()
        self.first_audio: float | None = None
        self.synthesizing = False
        self.dry_this_turn = False
        self.was_dry = False
        track.stream = self

    async def speak(self, turns: int, rng: random.Random, stop_at: float) -> None:
        await asyncio.sleep(rng.uniform(0.0, 2.0))
        for _ in range(turns):
            if time.monotonic() > stop_at:
                return
            self.first_audio, self.dry_this_turn, self.was_dry = None, False, False
            ready = time.perf_counter()
            self.synthesizing = True
            try:
                await asyncio.wait_for(self.tts.synthesize(_one(TEXT)), TURN_TIMEOUT)
            except Exception as exc:
                self.stats.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                self.synthesizing = False
            if self.first_audio is not None:
                self.stats.ttfa.append(self.first_audio - ready)
            self.stats.turns += 1
            self.stats.dry_turns += self.dry_this_turn
            for _ in range(1000):  # the rest of the reply plays out (bounded: 20 s)
                if not self.track.frame_buffer:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(rng.uniform(0.5, 1.5))


async def _one(text: str) -> AsyncIterator[str]:
    yield text


def _track_class() -> type:
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack

    class PlayoutTrack(CustomAudioStreamTrack):  # type: ignore[misc]
        """The framework's track, noting first audio, lateness and dry frames."""

        stream: Stream

        async def add_new_bytes(self, audio_data: bytes) -> None:
            if self.stream.first_audio is None and audio_data:
                self.stream.first_audio = time.perf_counter()
            await super().add_new_bytes(audio_data)

        async def recv(self) -> Any:
            before = self._samples_played
            frame = await super().recv()
            s = self.stream
            s.stats.late.append(time.time() - (self._start + self._timestamp / self.sample_rate))
            if self._samples_played > before:
                s.stats.frames += 1
                s.was_dry = False
            elif s.synthesizing and s.first_audio is not None:
                s.stats.dry_frames += 1
                s.stats.dry_episodes += not s.was_dry
                s.was_dry = s.dry_this_turn = True
            return frame

    return PlayoutTrack


async def _player(track: Any) -> None:
    """The WebRTC sender's loop: ``recv()`` paces itself to one frame per 20 ms."""
    for _ in range(common.MAX_CHUNKS):
        await track.recv()


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    """Sleep 10 ms at a time and record how much later than asked each wake-up came.

    Each sleep is timed from its own start, so one long stall counts once, not once per tick
    it swallowed.
    """
    loop = asyncio.get_running_loop()
    for _ in range(10_000_000):
        if stop.is_set():
            return
        asked = loop.time()
        await asyncio.sleep(TICK)
        lags.append(loop.time() - asked - TICK)


class GcPauses:
    """Garbage-collector pauses by generation, from ``gc.callbacks``, while armed."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._start = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._start))

    def oldest(self) -> tuple[int, float]:
        """Count and longest pause of full (generation 2) collections."""
        full = [p for g, p in self.pauses if g == 2]
        return len(full), max(full, default=0.0)


@dataclass
class RunResult:
    pace: str
    streams: int
    prewarm: float
    wall: float
    client_cpu: float
    server_cpu: float
    lags: list[float]
    server_lags: list[float]
    stats: list[StreamStats]
    connections: int
    gc_full: tuple[int, float]


async def _run(args: argparse.Namespace, pace: float | None, tls: common.TlsFiles) -> RunResult:
    from videosdk.plugins.lmnt import LMNTTTS

    spec = common.ServerSpec(
        faults={"pace": pace}, engine={"seconds_per_char": SECONDS_PER_CHAR}, tls=tls
    )
    server = common.ServerProcess(spec)
    with server as info:
        loop = asyncio.get_running_loop()
        ctx = common.client_ssl_context(tls)
        track_cls = _track_class()
        streams: list[Stream] = []
        for _ in range(args.streams):
            tts = LMNTTTS(api_key=common.API_KEY, ws_url=info.ws_url, ssl=ctx,
                          protocol_version=args.protocol)  # fmt: skip
            track = track_cls(loop)
            tts.audio_track, tts.loop = track, loop
            streams.append(Stream(tts, track))
        t0 = time.perf_counter()
        await asyncio.gather(*(s.tts.prewarm() for s in streams))
        prewarm = time.perf_counter() - t0
        rng = random.Random(args.seed)
        if args.gc_freeze:
            common.freeze_heap()  # start-up objects leave the collector's view
        lags: list[float] = []
        stop = asyncio.Event()
        cpu0, srv0, wall0 = time.process_time(), server.stats()[0], time.perf_counter()
        ticker = loop.create_task(_ticker(lags, stop))
        players = [loop.create_task(_player(s.track)) for s in streams]
        stop_at = time.monotonic() + args.max_seconds
        gc_pauses = GcPauses()
        try:
            with gc_pauses:
                async with asyncio.timeout(args.max_seconds + 30):
                    await asyncio.gather(*(s.speak(args.turns, rng, stop_at) for s in streams))
        finally:
            wall = time.perf_counter() - wall0
            client_cpu = time.process_time() - cpu0
            stop.set()
            for task in (ticker, *players):
                task.cancel()
            await asyncio.gather(ticker, *players, return_exceptions=True)
            srv1, server_lags = server.stats()  # blocks on a pipe: only after the ticker stopped
            server_cpu = srv1 - srv0
            opened = sum(getattr(getattr(s.tts, "_pool", None), "opened", 0) for s in streams)
            await asyncio.gather(*(s.tts.aclose() for s in streams), return_exceptions=True)
            if args.gc_freeze:
                gc.unfreeze()
    label = "none" if pace is None else f"{pace:g}x"
    return RunResult(label, args.streams, prewarm, wall, client_cpu, server_cpu, lags, server_lags,
                     [s.stats for s in streams], opened, gc_pauses.oldest())  # fmt: skip


def _row(r: RunResult, turns: int) -> list[str]:
    lag = common.Summary.of(r.lags)
    server_lag = common.Summary.of(r.server_lags)
    late = common.Summary.of([x for s in r.stats for x in s.late])
    ttfa = common.Summary.of([x for s in r.stats for x in s.ttfa])
    done = sum(s.turns for s in r.stats)
    errors = sum(len(s.errors) for s in r.stats)
    return [
        r.pace, str(r.streams), f"{done}/{r.streams * turns}", str(errors),
        common.ms(lag.median), common.ms(lag.p99), common.ms(lag.max),
        common.ms(server_lag.p99), common.ms(server_lag.max), common.ms(late.p99),
        str(sum(s.dry_frames for s in r.stats)), str(sum(s.dry_episodes for s in r.stats)),
        str(sum(s.dry_turns for s in r.stats)),
        common.ms(ttfa.median), common.ms(ttfa.p99),
        f"{100 * r.client_cpu / r.wall:.0f}%", f"{100 * r.server_cpu / r.wall:.0f}%",
        f"{r.gc_full[0]}", common.ms(r.gc_full[1]),
        f"{r.wall:.1f}", f"{r.prewarm:.2f}", str(r.connections),
    ]  # fmt: skip


async def _main(args: argparse.Namespace) -> None:
    paces = [None if p.lower() == "none" else float(p) for p in args.pace]
    print(f"{common.cpu_count_note()}; {args.streams} streams x {args.turns} replies of "
          f"{len(TEXT) * SECONDS_PER_CHAR:.1f} s; protocol {args.protocol}; TLS; server in its "
          f"own process; gc.freeze() {'on' if args.gc_freeze else 'off'}\n")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmnt-bench-tls-") as tmp:
        tls = common.make_tls_files(Path(tmp))
        for pace in paces:
            result = await _run(args, pace, tls)
            errors = [e for s in result.stats for e in s.errors]
            print(f"pace {result.pace}: {result.wall:.1f} s"
                  + (f"; first errors: {errors[:3]}" if errors else ""))  # fmt: skip
            rows.append(_row(result, args.turns))
    print()
    print(common.table([
        "server pace", "streams", "replies", "errors", "loop lag p50", "p99", "max",
        "server lag p99", "max", "frame late p99", "dry frames", "dry episodes",
        "replies with dry", "TTFA p50", "p99",
        "client CPU", "server CPU", "full GCs", "longest GC", "wall s", "prewarm s",
        "connections",
    ], rows))  # fmt: skip
    print("\ntimes in ms unless marked; CPU in % of one core over the run")
    print(f"at the end: {common.load_note()}")
    t0 = time.perf_counter()
    gc.collect()
    print(
        f"one full gc.collect() in this process (what the framework's TTS.aclose() runs): "
        f"{(time.perf_counter() - t0) * 1e3:.0f} ms with {len(gc.get_objects()):,} objects"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--turns", type=int, default=3, help="replies per stream")
    parser.add_argument(
        "--pace",
        nargs="+",
        default=["2", "1", "none"],
        help="server pace(s), x real time, or 'none' (as fast as possible)",
    )
    parser.add_argument("--protocol", default="1.0", choices=("1.0", "1.1", "1.2"))
    parser.add_argument("--max-seconds", type=float, default=60.0, help="per pace")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="leave the import-time heap to the collector (~100 ms full passes)",
    )
    args = parser.parse_args()
    if not 1 <= args.streams <= 2000 or not 1 <= args.turns <= 100:
        parser.error("--streams must be 1..2000 and --turns 1..100")
    for p in args.pace:
        if p.lower() != "none" and not (math.isfinite(float(p)) and 0.1 <= float(p) <= 100):
            parser.error("--pace values must be 0.1..100 or 'none'")
    common.ensure_package()
    common.quiet_logs()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
