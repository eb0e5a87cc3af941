"""Soak: thousands of mixed turns in one process, watching for anything that accumulates.

Run from the repository root::

    python benchmarks/soak.py                      # 2,000 turns, report every 200
    python benchmarks/soak.py --turns 500 --every 100 --no-tracemalloc

Every turn goes through a real ``LMNTTTS`` and the framework's real audio track (drained as a
WebRTC sender would) to local LMNT-compatible servers on loopback.  The mix: plain and streamed
legacy turns, typed (1.2) turns on a reused session, turns interrupted or cancelled mid-audio,
and failing turns cycling through the server's faults (errors and drops before and after audio,
silence, malformed frames, handshake refusals, a rejected key, a refused port).  Every 25th turn
a fresh ``LMNTTTS`` is created, prewarmed, used once and closed.

After a warm-up of one round of every kind, the baseline is taken; then open file descriptors,
asyncio tasks, ``lmnt-*`` tasks, open plugin connections, traced Python memory (tracemalloc)
and RSS are printed every ``--every`` turns, and a final table compares the end with the
baseline.  Exit status 1 if anything grew beyond its tolerance or a turn missed its bound.
Bounded: each turn has a 5 s limit and the whole run ``--max-seconds`` (default 600).

``run_soak()`` is also what ``tests/test_soak.py`` runs, with 150 turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import random
import socket
import statistics
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# _common sits beside this script; the script may also be loaded by path (tests/test_soak.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ensure_package

ensure_package()

from videosdk.agents.room.output_stream import CustomAudioStreamTrack
from videosdk.agents.tts.tts import FlushMarker

from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import LMNTTTS, LMNTError

KEY = "soak-key"
TURN_LIMIT = 5.0
SHORT = "Hello there."
LONG = "This sentence is long enough to be interrupted well before it ends. " * 3

# Failing turns cycle through these, on a connection opened for the turn.
FAILURES: list[tuple[str, Faults | None]] = [
    ("error before audio", Faults(error_before_audio="model overloaded")),
    ("drop before audio", Faults(drop_before_audio=True)),
    ("malformed JSON", Faults(malformed_json=True)),
    ("error after audio", Faults(error_after_bytes=(4000, "exploded"))),
    ("drop mid-audio", Faults(drop_after_bytes=4000)),
    ("silent server", Faults(hang_after_init=True)),
    ("handshake 500", Faults(reject_handshake_status=500)),
    ("handshake 401", Faults(reject_handshake_status=401)),
    ("unknown message", Faults(unknown_message=True)),
    ("odd and empty frames", Faults(odd_frames=True, empty_frames=True)),
    ("close 1011 after audio", Faults(close_code=1011)),
    ("garbage script", Faults(script=("{x", b"\x01", b"", '{"type":"?"}'), close_code=4000)),
    ("invalid key", None),
    ("connection refused", None),
]
KINDS = [("plain", 4), ("stream", 2), ("typed", 2), ("interrupt", 1), ("cancel", 1), ("fail", 3)]


# -- measuring -------------------------------------------------------------------------------


@dataclass
class Sample:
    turn: int
    seconds: float
    fds: int
    tasks: int
    lmnt_tasks: int
    connections: int
    traced_mb: float
    rss_mb: float


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _traced_mb() -> float:
    """Python memory traced since the soak began, minus the harness's own bookkeeping (its
    per-turn timings grow by design, and are not the plugin's)."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, __file__), tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename")) / 1e6


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _lmnt_tasks() -> int:
    return sum(1 for t in asyncio.all_tasks() if t.get_name().startswith("lmnt-") and not t.done())


@dataclass
class Outcomes:
    count: int = 0
    results: dict[str, int] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)

    def add(self, result: str, seconds: float) -> None:
        self.count += 1
        self.results[result] = self.results.get(result, 0) + 1
        self.times.append(seconds)


@dataclass
class SoakResult:
    turns: int
    seconds: float
    baseline: Sample
    final: Sample
    samples: list[Sample]
    kinds: dict[str, Outcomes]
    hung: int
    idle_fds: int  # before any plugin object existed
    closed_fds: int  # after every plugin object was closed
    idle_tasks: int
    closed_tasks: int

    def peak(self, name: str) -> float:
        return max(float(getattr(s, name)) for s in self.samples)


# -- the harness -----------------------------------------------------------------------------


class _Track(CustomAudioStreamTrack):  # type: ignore[misc]
    """The framework's track, noting only whether a push was ever odd (observation only)."""

    odd_pushes = 0

    async def add_new_bytes(self, audio_data: bytes) -> None:
        if not isinstance(audio_data, bytes) or len(audio_data) % 2:
            _Track.odd_pushes += 1
        await super().add_new_bytes(audio_data)


class _Drain:
    """Pulls frames from a track as fast as they are ready (as a WebRTC sender would, minus the
    real-time pacing), discarding them, so the track never accumulates."""

    def __init__(self, track: Any) -> None:
        self.track = track
        self.stopped = False
        self.task = asyncio.get_running_loop().create_task(self._run(), name="soak-drain")

    async def _run(self) -> None:
        t = self.track
        while not self.stopped:
            if t.frame_buffer or len(t.audio_data_buffer) >= t.chunk_size:
                await t.recv()
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self.stopped = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.task, 2)


def _new_track() -> Any:
    track = _Track(asyncio.get_running_loop())
    track._start = 0.0  # a start in the past: recv() never sleeps
    track._speaking_grace_period = 0.0
    return track


async def _stream(text: str) -> AsyncIterator[Any]:
    for part in text.split(". "):
        yield part if part.endswith(".") else part + "."
        await asyncio.sleep(0)
    yield FlushMarker()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Soak:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.kinds = {name: Outcomes() for name, _ in KINDS if name != "fail"}
        self.kinds.update({f"fail: {name}": Outcomes() for name, _ in FAILURES})
        self.kinds["fresh instance"] = Outcomes()
        self.hung = 0
        self._fail_index = 0
        self.servers: list[LocalLMNTServer] = []
        self.plugins: list[LMNTTTS] = []
        self.drains: list[_Drain] = []

    async def start(self) -> None:
        self.clean = await self._server()
        self.paced = await self._server(faults=Faults(pace=3.0))
        self.faulty = await self._server()
        self.keyed = await self._server(api_keys={"the-good-key"})
        self.refused_url = f"ws://127.0.0.1:{_free_port()}/v1/ai/speech/stream"
        self.main = self._plugin(self.clean.ws_url)
        self.typed = self._plugin(self.clean.ws_url, protocol_version="1.2")
        self.live = self._plugin(self.paced.ws_url)
        self.failing = self._plugin(
            self.faulty.ws_url, warm_connection=False, max_retries=1, retry_backoff=0.0,
            receive_timeout=0.2,
        )  # fmt: skip
        self.bad_key = self._plugin(self.keyed.ws_url, warm_connection=False, api_key="bad")
        self.refused = self._plugin(self.refused_url, max_retries=1, retry_backoff=0.0)

    async def _server(self, **kw: Any) -> LocalLMNTServer:
        server = LocalLMNTServer(engine=ToneEngine(seconds_per_char=0.02), **kw)
        await server.start()
        self.servers.append(server)
        return server

    def _plugin(self, url: str, **kw: Any) -> LMNTTTS:
        kw.setdefault("api_key", KEY)
        kw.setdefault("receive_timeout", 1.0)
        tts = LMNTTTS(ws_url=url, **kw)
        tts.audio_track = _new_track()
        self.plugins.append(tts)
        self.drains.append(_Drain(tts.audio_track))
        return tts

    async def close(self) -> None:
        for tts in self.plugins:
            await tts.aclose()
        for drain in self.drains:
            await drain.stop()
        for server in self.servers:
            await server.stop()
        self.plugins.clear()
        self.drains.clear()
        self.servers.clear()

    def _prune_records(self) -> None:
        """The test servers keep a record per session; forget the finished ones."""
        for server in self.servers:
            server.sessions[:] = [s for s in server.sessions if not s.done.is_set()]

    def connections(self) -> int:
        return sum(t._pool.open_connections for t in self.plugins)

    # -- turns -----------------------------------------------------------------------------

    async def turn(self, index: int, kind: str | None = None) -> None:
        if index and index % 25 == 0:
            await self._timed("fresh instance", self._fresh())
            return
        if kind is None:
            names, weights = zip(*KINDS, strict=True)
            kind = self.rng.choices(names, weights)[0]
        if kind == "fail":
            name, faults = FAILURES[self._fail_index % len(FAILURES)]
            self._fail_index += 1
            await self._timed(f"fail: {name}", self._fail(name, faults))
        else:
            await self._timed(kind, getattr(self, "_" + kind)())
        if index % 20 == 0:
            self._prune_records()

    async def _timed(self, kind: str, work: Any) -> None:
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(TURN_LIMIT):
                result = await work
        except TimeoutError:
            result = "HUNG"
            self.hung += 1
        self.kinds[kind].add(result, time.monotonic() - t0)

    async def _say(self, tts: LMNTTTS, text: Any) -> str:
        errors: list[str] = []

        def on_error(message: str) -> None:  # the emitter needs a Python function
            errors.append(message)

        tts.on("error", on_error)
        try:
            await tts.synthesize(text)
        except LMNTError as exc:
            return f"raised {type(exc).__name__}"
        finally:
            tts.off("error", on_error)
        return "emitted error" if errors else "ok"

    async def _plain(self) -> str:
        return await self._say(self.main, SHORT)

    async def _stream(self) -> str:
        return await self._say(self.main, _stream("First part. Second part."))

    async def _typed(self) -> str:
        return await self._say(self.typed, SHORT)

    async def _live_turn(self, stop: str) -> str:
        track = self.live.audio_track
        before = track._cumulative_input_samples
        task = asyncio.create_task(self._say(self.live, LONG))
        async with asyncio.timeout(2):
            while track._cumulative_input_samples == before and not task.done():
                await asyncio.sleep(0.002)
        await asyncio.sleep(self.rng.uniform(0.0, 0.05))
        if stop == "interrupt":
            await self.live.interrupt()
            return await task
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "finished before cancel"

    async def _interrupt(self) -> str:
        return await self._live_turn("interrupt")

    async def _cancel(self) -> str:
        return await self._live_turn("cancel")

    async def _fail(self, name: str, faults: Faults | None) -> str:
        if name == "invalid key":
            return await self._say(self.bad_key, SHORT)
        if name == "connection refused":
            return await self._say(self.refused, SHORT)
        assert faults is not None
        self.faulty.faults = faults
        text = LONG if "after" in name or "mid" in name else SHORT
        return await self._say(self.failing, text)

    async def _fresh(self) -> str:
        tts = LMNTTTS(api_key=KEY, ws_url=self.clean.ws_url)
        tts.audio_track = _new_track()
        drain = _Drain(tts.audio_track)
        try:
            await tts.prewarm()
            return await self._say(tts, SHORT)
        finally:
            await tts.aclose()
            await drain.stop()


def _sample(soak: Soak, turn: int, t0: float, traced: bool) -> Sample:
    gc.collect()
    return Sample(
        turn=turn,
        seconds=time.monotonic() - t0,
        fds=_fds(),
        tasks=len(asyncio.all_tasks()),
        lmnt_tasks=_lmnt_tasks(),
        connections=soak.connections(),
        traced_mb=_traced_mb() if traced else float("nan"),
        rss_mb=_rss_mb(),
    )


async def _settle(soak: Soak) -> None:
    """Let closes started in the background finish, and the spares being opened open, before
    measuring: wait (bounded) until descriptors and tasks hold still."""
    async with asyncio.timeout(3):
        for server in soak.servers:
            for rec in list(server.sessions):
                if rec.closed_by is not None:
                    await rec.done.wait()
    soak._prune_records()
    seen: list[tuple[int, int]] = []
    for _ in range(50):
        await asyncio.sleep(0.02)
        seen.append((_fds(), len(asyncio.all_tasks())))
        if len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]:
            break


async def run_soak(
    turns: int,
    *,
    every: int = 200,
    seed: int = 1,
    traced: bool = True,
    max_seconds: float = 600.0,
    out: Any = None,
) -> SoakResult:
    """Run ``turns`` mixed turns; print samples to ``out`` (None: silent)."""

    def say(line: str) -> None:
        if out is not None:
            print(line, file=out, flush=True)

    quiet = ["videosdk", "aiohttp", "asyncio"]
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:  # failing turns log warnings; a log that grows is not a leak
        logging.getLogger(name).setLevel(logging.CRITICAL)
    started_tracing = traced and not tracemalloc.is_tracing()
    if started_tracing:
        tracemalloc.start()
    gc.collect()
    idle_fds, idle_tasks = _fds(), len(asyncio.all_tasks())
    soak = Soak(seed)
    t0 = time.monotonic()
    samples: list[Sample] = []
    try:
        await soak.start()
        # Warm-up: one round of every kind, so caches and lazy imports are in the baseline.
        for kind, _ in KINDS:
            await soak.turn(1, kind)
        for _ in FAILURES[1:]:
            await soak.turn(1, "fail")
        await _settle(soak)
        baseline = _sample(soak, 0, t0, traced)
        samples.append(baseline)
        say(_header())
        say(_row(baseline))
        done = 0
        for i in range(1, turns + 1):
            if time.monotonic() - t0 > max_seconds:
                say(f"stopping: --max-seconds {max_seconds:g} reached")
                break
            await soak.turn(i)
            done = i
            if i % every == 0 or i == turns:
                await _settle(soak)
                samples.append(_sample(soak, i, t0, traced))
                say(_row(samples[-1]))
        final = samples[-1]
    finally:
        await soak.close()
        if started_tracing:
            tracemalloc.stop()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    await asyncio.sleep(0.05)
    gc.collect()
    return SoakResult(
        turns=done,
        seconds=time.monotonic() - t0,
        baseline=baseline,
        final=final,
        samples=samples,
        kinds=soak.kinds,
        hung=soak.hung,
        idle_fds=idle_fds,
        closed_fds=_fds(),
        idle_tasks=idle_tasks,
        closed_tasks=len(asyncio.all_tasks()),
    )


# -- reporting ---------------------------------------------------------------------------------

TOLERANCE = {"fds": 2, "tasks": 2, "lmnt_tasks": 1, "connections": 1, "traced_mb": 0.5}


def _header() -> str:
    return (
        f"{'turn':>6} {'s':>7} {'fds':>5} {'tasks':>6} {'lmnt-*':>7} {'conns':>6} "
        f"{'traced MB':>10} {'RSS MB':>8}"
    )


def _row(s: Sample) -> str:
    return (
        f"{s.turn:>6} {s.seconds:>7.1f} {s.fds:>5} {s.tasks:>6} {s.lmnt_tasks:>7} "
        f"{s.connections:>6} {s.traced_mb:>10.2f} {s.rss_mb:>8.1f}"
    )


def problems(result: SoakResult) -> list[str]:
    """What grew beyond tolerance, or went wrong; empty when the soak is clean."""
    found = []
    for name, limit in TOLERANCE.items():
        grew = float(getattr(result.final, name)) - float(getattr(result.baseline, name))
        if grew > limit:
            found.append(f"{name} grew by {grew:g} (tolerance {limit:g})")
    if result.hung:
        found.append(f"{result.hung} turns missed the {TURN_LIMIT:g} s bound")
    if _Track.odd_pushes:
        found.append(f"{_Track.odd_pushes} odd-length pushes to the track")
    if result.closed_fds > result.idle_fds + TOLERANCE["fds"]:
        found.append(f"fds after closing everything: {result.closed_fds} vs {result.idle_fds}")
    if result.closed_tasks > result.idle_tasks:
        found.append(f"tasks after closing: {result.closed_tasks} vs {result.idle_tasks}")
    return found


def report(result: SoakResult) -> str:
    b, f = result.baseline, result.final
    lines = [
        "",
        f"{result.turns} turns in {result.seconds:.1f} s",
        "",
        "| measure | baseline | final | peak | change |",
        "|---|---|---|---|---|",
    ]
    for name, label in (("fds", "open file descriptors"), ("tasks", "asyncio tasks"),
                        ("lmnt_tasks", "lmnt-* tasks"), ("connections", "plugin connections"),
                        ("traced_mb", "traced memory (MB)"), ("rss_mb", "RSS (MB)")):  # fmt: skip
        base, end = float(getattr(b, name)), float(getattr(f, name))
        lines.append(
            f"| {label} | {base:g} | {end:g} | {result.peak(name):g} | {end - base:+.2f} |"
        )
    lines.append(
        f"| fds / tasks with nothing open | {result.idle_fds} / {result.idle_tasks} "
        f"| {result.closed_fds} / {result.closed_tasks} | | |"
    )
    lines += ["", "| turn kind | turns | outcomes | median ms | p95 ms |", "|---|---|---|---|---|"]
    for kind, o in result.kinds.items():
        if not o.count:
            continue
        times = sorted(o.times)
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        outcomes = ", ".join(f"{k}: {v}" for k, v in sorted(o.results.items()))
        lines.append(
            f"| {kind} | {o.count} | {outcomes} | {statistics.median(times) * 1000:.0f} "
            f"| {p95 * 1000:.0f} |"
        )
    found = problems(result)
    lines += ["", "verdict: " + ("clean" if not found else "; ".join(found))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--every", type=int, default=200, help="print a sample every N turns")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--no-tracemalloc", action="store_true", help="faster, RSS only")
    args = parser.parse_args(argv)
    result = asyncio.run(
        run_soak(
            args.turns,
            every=args.every,
            seed=args.seed,
            traced=not args.no_tracemalloc,
            max_seconds=args.max_seconds,
            out=sys.stdout,
        )
    )
    print(report(result))
    return 1 if problems(result) else 0


if __name__ == "__main__":
    sys.exit(main())
