"""How many concurrent sessions the local LMNT server sustains before audio falls behind real time.

Run from the repository root (needs only the package's own dependencies)::

    python benchmarks/server_capacity.py                     # hibari, neural, espeak, N = 1..64
    python benchmarks/server_capacity.py --stagger 3 --sessions 25,50,100,150 --rounds 1 \
        --burst 32 --budget 900                              # issue 19's capacity figures
    python benchmarks/server_capacity.py --engines espeak --sessions 1,8,64,128 --rounds 1
    python benchmarks/server_capacity.py --engines neural --sessions 8,16,24 --stagger 2

Setup.  The server is ``lmnt-local serve --port 0 --engine E`` in its own process, exactly what a
user runs.  The clients are plain aiohttp WebSocket clients in this process speaking the legacy
protocol (1.0): init (``pcm_s16le``, 24 kHz, voice ava), the whole paragraph as one text
message, ``eof``, then read every frame until the server closes.  They do not decode or resample
(the seconds of audio are bytes / 48000), so one client process costs far less than N
``LMNTTTS`` instances with their framework tracks and stays out of the way of the server on a
small machine; on 2 cores, client and server still share the CPU, which is why both CPU loads
are printed.

For each N, N sessions start at once (a burst: the worst case for the first audio), ``--rounds``
times; ``--stagger S`` spreads their starts evenly over S seconds instead, as sessions of real
users arrive (the neural engine renders each first piece in ~0.1 s of one core, so a burst of
N queues N first pieces on the cores at once).  Per session:

* time to first audio (TTFA): from sending the text to the first binary frame;
* real-time ratio (RTF): seconds of audio received / wall seconds from the first frame to the
  last; below 1.0 the audio arrives slower than it plays;
* lateness: played at real time from its first frame, frame k is needed at
  ``first + audio_before_k``; ``late`` is the share of frames that arrived after that, ``stall``
  the longest a player without a jitter buffer would have waited in the session (its total
  underrun).

``--burst N`` adds, after each engine's sweep, one burst of N simultaneous starts (its
first-audio p95 is the figure to read).  ``RSS`` is the server process's resident memory
(workers included) at its peak during the level, sampled every 0.2 s; the engine's memory
after loading is printed with the warm-up line.  The CPU model and the 1-minute load average
are printed too: on a shared machine the numbers are only as quiet as it was.

A level **falls behind** when any session's RTF is below 1.0 or the p95 frame lateness over
all its sessions is above zero.  The sweep stops after the first level that falls behind, and
when the time budget (default 170 s) would not cover the next level.  The ToneEngine is run as
a floor: it does no linguistic work, so the gap to it is what speaking costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import queue
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cpu_model, rss_mb

ROOT = Path(__file__).resolve().parent.parent
BYTES_PER_SECOND = 2 * 24000  # pcm_s16le at 24 kHz: no decoding needed to count seconds
DEFAULT_SESSIONS = (1, 2, 4, 8, 16, 32, 64)
MAX_SESSIONS = 512
SESSION_TIMEOUT = 90.0

PARAGRAPH = (
    "Local speech synthesis lets a voice agent run its whole pipeline on one machine. "
    "Nothing leaves the network, and tests do not depend on a paid service being up. "
    "The engine splits long text into sentences and speaks them one after another. "
    "While the second sentence is being made, the first is already on its way out. "
    "Each chunk carries the words that start inside it, with their times in seconds."
)


@dataclass
class SessionResult:
    """Timings of one client session (seconds on this process's monotonic clock)."""

    text_sent: float = 0.0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, audio bytes)
    error: str | None = None

    @property
    def audio_seconds(self) -> float:
        return sum(n for _, n in self.arrivals) / BYTES_PER_SECOND

    @property
    def ttfa(self) -> float:
        return self.arrivals[0][0] - self.text_sent

    @property
    def rtf(self) -> float:
        span = self.arrivals[-1][0] - self.arrivals[0][0]
        return math.inf if span <= 0 else self.audio_seconds / span

    def lateness(self) -> list[float]:
        """Per frame: arrival minus when a real-time player started at the first frame needs it."""
        first = self.arrivals[0][0]
        before = 0
        out = []
        for t, n in self.arrivals:
            out.append(t - (first + before / BYTES_PER_SECOND))
            before += n
        return out

    def stall(self) -> float:
        """Total underrun of a real-time player that waits whenever it runs dry."""
        return max(0.0, *self.lateness())


async def _session(
    http: aiohttp.ClientSession, url: str, text: str, delay: float = 0.0
) -> SessionResult:
    result = SessionResult()
    await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(SESSION_TIMEOUT):
            async with http.ws_connect(url, max_msg_size=0, autoping=True) as ws:
                init = {
                    "X-API-Key": "bench",
                    "voice": "ava",
                    "format": "pcm_s16le",
                    "sample_rate": 24000,
                }
                await ws.send_str(json.dumps(init))
                await ws.send_str(json.dumps({"text": text}))
                await ws.send_str(json.dumps({"eof": True}))
                result.text_sent = time.monotonic()
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        if msg.data:
                            result.arrivals.append((time.monotonic(), len(msg.data)))
                    elif msg.type is aiohttp.WSMsgType.TEXT and '"error"' in msg.data:
                        result.error = msg.data[:200]
                if ws.close_code not in (1000, None) and result.error is None:
                    result.error = f"closed {ws.close_code}"
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if not result.arrivals and result.error is None:
        result.error = "no audio"
    return result


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process and its live children (workers) from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _cpu_seconds(int(child)) or 0.0
    return total


class Server:
    """``lmnt-local serve --port 0`` in a subprocess; ``url`` is what it printed."""

    def __init__(self, engine: str, workers: int = 1) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lmnt_local.cli.app",
                "serve",
                "--port",
                "0",
                "--engine",
                engine,
                "--workers",
                str(workers),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            self.stop()
            raise SystemExit("the server printed no URL within 30 s") from None
        self.url = first.split()[-1]

    def cpu(self) -> float | None:
        return _cpu_seconds(self.proc.pid)

    def rss(self) -> float | None:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Level:
    engine: str
    sessions: int
    results: list[SessionResult]
    wall: float
    server_cpu: float | None
    client_cpu: float
    rss: float | None = None  # peak MB during the level
    #: The machine's 1-minute load average after the level: the numbers are only as quiet as it.
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def ok_results(self) -> list[SessionResult]:
        return [r for r in self.results if r.error is None]

    @property
    def behind(self) -> bool:
        ok = self.ok_results
        if len(ok) < len(self.results):
            return True
        late = [x for r in ok for x in r.lateness()]
        return min(r.rtf for r in ok) < 1.0 or _percentile(late, 0.95) > 0.0

    def row(self) -> str:
        ok = self.ok_results
        errors = len(self.results) - len(ok)
        if not ok:
            return f"{self.engine:<7}{self.sessions:>5}  all {errors} sessions failed"
        ttfa = [r.ttfa * 1e3 for r in ok]
        rtf = [r.rtf for r in ok]
        late = [x for r in ok for x in r.lateness()]
        late_share = sum(x > 0 for x in late) / len(late)
        stall = max(r.stall() for r in ok)
        server = "n/a" if self.server_cpu is None else f"{100 * self.server_cpu / self.wall:.0f}%"
        client = f"{100 * self.client_cpu / self.wall:.0f}%"
        verdict = "BEHIND" if self.behind else "real time"
        if errors:
            verdict += f" ({errors} failed: {self.results[0].error or ''})"[:60]
        return (
            f"{self.engine:<7}{self.sessions:>5}{statistics.median(ttfa):>9.0f}"
            f"{_percentile(ttfa, 0.95):>9.0f}{max(ttfa):>9.0f}{min(rtf):>9.1f}"
            f"{statistics.median(rtf):>9.1f}{100 * late_share:>7.1f}%{stall:>8.2f}"
            f"{server:>8}{client:>8}{self.wall:>7.1f}{self.load:>6.1f}"
            f"{'n/a' if self.rss is None else f'{self.rss:.0f}':>6}  {verdict}"
        )


HEADER = (
    f"{'engine':<7}{'N':>5}{'TTFA p50':>9}{'p95':>9}{'max':>9}{'RTF min':>9}{'p50':>9}"
    f"{'late':>8}{'stall':>8}{'srv CPU':>8}{'cli CPU':>8}{'wall':>7}{'load':>6}{'RSS':>6}"
    "  verdict"
)
UNITS = f"{'':<12}{'ms':>9}{'ms':>9}{'ms':>9}{'x':>9}{'x':>9}{'frames':>8}{'s':>8}" + (
    f"{'1 core':>8}{'1 core':>8}{'s':>7}{'1 min':>6}{'MB':>6}"
)


async def _level(
    server: Server, engine: str, n: int, rounds: int, text: str, stagger: float = 0.0
) -> Level:
    results: list[SessionResult] = []
    cpu0, client0, wall0 = server.cpu(), time.process_time(), time.monotonic()
    peak: list[float] = []

    async def sample_rss() -> None:
        for _ in range(int(SESSION_TIMEOUT * 10 * 10)):  # bounded: ten rounds' worth
            value = server.rss()
            if value is not None:
                peak.append(value)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_rss())
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            for _ in range(rounds):
                results += await asyncio.gather(
                    *(_session(http, server.url, text, stagger * i / n) for i in range(n))
                )
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    wall = time.monotonic() - wall0
    cpu1 = server.cpu()
    server_cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    level = Level(engine, n, results, wall, server_cpu, time.process_time() - client0)
    level.rss = max(peak) if peak else None
    return level


async def _sweep(
    engine: str, sessions: list[int], args: argparse.Namespace, deadline: float
) -> None:
    server = Server(engine, args.workers)
    try:
        warm = await _level(server, engine, 1, 1, PARAGRAPH)  # imports, engine init, caches
        if warm.ok_results:
            audio = warm.ok_results[0].audio_seconds
            rss = server.rss()
            memory = "" if rss is None else f", server RSS after load {rss:.0f} MB"
            print(f"{engine}: {server.url}, paragraph = {audio:.1f} s of audio{memory}", flush=True)
        else:
            print(f"{engine}: warm-up failed: {warm.results[0].error}", flush=True)
            return
        previous_wall = warm.wall
        previous_n = 1
        for n in sessions:
            estimate = previous_wall * n / previous_n * 1.5
            if time.monotonic() + estimate > deadline:
                print(f"{engine:<7}{n:>5}  skipped: the time budget would not cover it", flush=True)
                break
            level = await _level(server, engine, n, args.rounds, PARAGRAPH, args.stagger)
            print(level.row(), flush=True)
            previous_wall, previous_n = level.wall, n
            if level.behind and not args.keep_going:
                break
        if args.burst:
            level = await _level(server, "burst", args.burst, 1, PARAGRAPH)
            print(level.row(), flush=True)
    finally:
        server.stop()


def _sessions(value: str) -> list[int]:
    counts = [int(x) for x in value.split(",") if x.strip()]
    if not counts or any(not 1 <= c <= MAX_SESSIONS for c in counts):
        raise argparse.ArgumentTypeError(f"session counts must be 1-{MAX_SESSIONS}")
    return counts


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--engines",
        default="hibari,neural,espeak",
        help="comma list (hibari,neural,espeak,tone)",
    )
    parser.add_argument(
        "--burst", type=int, default=0, help="after each sweep, one burst of N simultaneous starts"
    )
    parser.add_argument(
        "--stagger", type=float, default=0.0, help="spread each burst's starts over S seconds"
    )
    parser.add_argument("--sessions", type=_sessions, default=list(DEFAULT_SESSIONS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        choices=range(1, 11),
        metavar="1-10",
        help="bursts per level (default 3)",
    )
    parser.add_argument("--budget", type=float, default=170.0, help="seconds for everything")
    parser.add_argument(
        "--workers", type=int, default=1, help="serve --workers: server processes (default 1)"
    )
    parser.add_argument("--keep-going", action="store_true", help="do not stop when behind")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget
    print(
        f"{cpu_model()}, load average {os.getloadavg()[0]:.2f}, "
        f"{args.workers} server worker(s); "
        f"{len(PARAGRAPH.split())}-word paragraph per session; legacy "
        f"protocol, pcm_s16le 24 kHz; {args.rounds} burst(s) of N sessions per level"
        + (f", starts spread over {args.stagger:g} s" if args.stagger else "")
    )
    print(
        "TTFA: text sent -> first audio frame.  RTF: audio s / wall s from first to last "
        "frame.  late: frames after their real-time deadline.  stall: worst total underrun.\n"
    )
    print(HEADER)
    print(UNITS)
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        with contextlib.suppress(KeyboardInterrupt):
            await _sweep(engine, args.sessions, args, deadline)
        print()


if __name__ == "__main__":
    asyncio.run(main())
