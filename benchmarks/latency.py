"""Time to first audio over TLS at injected round-trip times: ours cold, ours warm, and 1.0.30.

Run from the repository root::

    python benchmarks/latency.py [--turns 50] [--rtt 0 40 150] [--processing-delay 0.05]

Clients, all in one process and one run, all over TLS (a throwaway ``trustme`` CA):

* ``ours cold``: this package with ``warm_connection=False`` and no ``prewarm()``.
* ``ours fresh``: a new instance of this package for every turn, its first ``synthesize()``
  right after the track is assigned (what an agent's greeting does): the connection the
  assignment starts opening is the one the turn uses (issue 22 item 8).  Side by side with
  ``1.0.30``, which connects at every turn.
* ``ours warm``: this package after ``prewarm()``, with its warm spare (default legacy
  protocol, one connection per utterance as the legacy protocol requires).
* ``ours warm 1.1``: the same with ``protocol_version="1.1"``, whose session is kept open and
  reused from turn to turn (no new connection at all while it stays healthy).
* ``1.0.30``: the official release, imported from its wheel (fetched once into
  ``benchmarks/.cache``) and run unmodified.
* ``floor``: no plugin, no framework: a bare aiohttp WebSocket, connected and initialised
  before the clock starts, timing text -> first binary frame.  The part of every other row's
  overhead that this row also shows belongs to the test path (relay, TLS, server), not to a
  plugin.

The local LMNT server runs in a separate process behind a TCP relay that delays each direction
by RTT/2 and charges the TCP handshake (see ``_common.RttProxy``), so TCP, TLS and the
WebSocket upgrade all pay the round trips they pay on a real network; the server adds a fixed
processing delay before the first audio of each sentence.  Plugin turns go through the
framework's real ``SpeechGeneration`` and ``CustomAudioStreamTrack``.  Clients take turns
round-robin (the starting client rotates), so machine noise spreads evenly; after a turn of
``ours warm`` the script waits until its spare is ready, as a user's reply would, so that no
background handshake overlaps another client's measured turn.

Two clocks per turn, both ending at the first ``add_new_bytes`` on the track:

* ``TTFA`` (time to first audio): from the moment the text is ready.  With the default
  ``--text-delay 0`` the iterator's first sentence is available when ``synthesize`` is called
  (as with ``say()``, or a sentence the LLM already produced); with ``--text-delay D`` it
  appears D seconds later (an LLM still thinking), and the clock starts then.
* ``TTFB (fw)``: from the moment the plugin pulled the first text chunk, which is where the
  framework's ``metrics_collector`` starts its TTS timer (``fw-reported`` is the value it
  computed).  Both plugins open their connection *before* pulling text, so this metric does
  not see connection set-up at all.

The import-time heap is frozen (``gc.freeze()``) in both processes, so that an occasional
~100 ms full garbage collection does not land on a random client's turn; see concurrency.py.

"Overhead" is either clock minus the server's configured processing delay; it still contains
the tone engine's own time to its first chunk (well under 1 ms, see engine_speed.py).

TLS trust for 1.0.30: the release builds ``aiohttp.ClientSession()`` with aiohttp's default
SSL context, which aiohttp creates once, when it is imported.  This script writes the CA to a
file and sets ``SSL_CERT_FILE`` to it *before* anything imports aiohttp, so the 1.0.30 code
runs unmodified and trusts the local server.  Ours is given ``ssl=<SSLContext trusting the CA>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as common

COLD, WARM, REUSE, UPSTREAM, FLOOR = "ours cold", "ours warm", "ours warm 1.1", "1.0.30", "floor"
FRESH = "ours fresh"
CLIENTS = (COLD, FRESH, WARM, REUSE, UPSTREAM, FLOOR)
SENTENCE = "Hello, this is a short test of how soon the first audio arrives."
WARMUP_TURNS = 2
TURN_TIMEOUT = 15.0
SETTLE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured turn, in seconds."""

    ttfa: float  # text ready -> first audio at the track
    ttfb: float  # first text pulled -> first audio at the track
    ttfb_reported: float  # what the framework's metrics_collector computed (nan if none)
    spare_ready: bool | None = None  # ours: an initialised connection was waiting


class TimedText:
    """The turn's text as an async iterator.

    The first sentence becomes available ``delay`` seconds after the iterator is made (the
    turn's start), whenever the plugin asks for it, as an LLM's output would; ``ready`` is that
    moment and ``first_pulled`` the moment the plugin actually received the first chunk.
    """

    def __init__(self, chunks: list[str], delay: float) -> None:
        self._chunks = list(chunks)
        self.ready = time.perf_counter() + delay
        self.first_pulled: float | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        if not self._chunks:
            raise StopAsyncIteration
        wait = self.ready - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self._chunks.pop(0)
        if chunk and self.first_pulled is None:
            self.first_pulled = time.perf_counter()
        return chunk


def _timed_track_class() -> type:
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack

    class TimedTrack(CustomAudioStreamTrack):  # type: ignore[misc]
        """The framework's track, noting the first ``add_new_bytes`` of each turn."""

        first_push: float | None = None

        async def add_new_bytes(self, audio_data: bytes) -> None:
            if self.first_push is None and audio_data:
                self.first_push = time.perf_counter()
            await super().add_new_bytes(audio_data)

    return TimedTrack


async def _drain(track: Any) -> None:
    """Pull frames as the WebRTC sender would, but without real-time pacing (the track's start
    time is in the past), so a turn ends as soon as its audio is out."""
    for _ in range(common.MAX_CHUNKS):
        await track.recv()
        await asyncio.sleep(0 if track.frame_buffer else 0.002)


def _spare_ready(tts: Any) -> bool | None:
    """Whether ours has an initialised connection waiting (private state, only read)."""
    pool = getattr(tts, "_pool", None)
    if pool is None:
        return None
    spare = getattr(pool, "_spare", None)
    if spare is not None:
        return bool(spare.healthy)
    task = getattr(pool, "_spare_task", None)
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return False
    return task.result() is not None


@dataclass
class PluginClient:
    """A TTS plugin driven through the framework's SpeechGeneration and a real track."""

    name: str
    tts: Any
    sg: Any
    track: Any
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    reported_ttfb: float = math.nan
    drain: asyncio.Task[None] | None = None

    async def turn(self, text_delay: float) -> Sample | None:
        text = TimedText([SENTENCE], text_delay)
        self.track.first_push = None
        self.reported_ttfb = math.nan
        self.done.clear()
        spare = _spare_ready(self.tts) if self.name in (WARM, REUSE) else None
        errors = len(self.errors)
        try:
            async with asyncio.timeout(TURN_TIMEOUT):
                await self.sg.synthesize(text)
                await self.done.wait()
        except TimeoutError:
            self.errors.append("turn timed out")
            return None
        first = self.track.first_push
        if first is None or text.first_pulled is None:
            self.errors.append("no audio")
            return None
        if len(self.errors) > errors:
            return None
        return Sample(first - text.ready, first - text.first_pulled, self.reported_ttfb, spare)

    async def settle(self) -> None:
        """Wait (bounded) until the spare is ready: a user's reply gives it that time, and no
        handshake of ours then overlaps another client's measured turn."""
        if self.name not in (WARM, REUSE):
            return
        for _ in range(int(SETTLE_TIMEOUT / 0.005)):
            if _spare_ready(self.tts):
                return
            await asyncio.sleep(0.005)

    async def aclose(self) -> None:
        if self.drain is not None:
            self.drain.cancel()
        await self.tts.aclose()


class FreshClient(PluginClient):
    """A new instance of ours for every turn, assigned the track just before it speaks."""

    make: Any = None  # () -> (tts, SpeechGeneration) wired to this client

    async def turn(self, text_delay: float) -> Sample | None:
        old = self.tts
        self.tts, self.sg = self.make(self)
        await old.aclose()  # outside the measured turn
        self.sg.set_audio_track(self.track)  # sets tts.audio_track: the connection starts
        return await super().turn(text_delay)


@dataclass
class FloorClient:
    """The test path without any plugin: a bare legacy-protocol WebSocket, already connected
    and initialised when the clock starts; text, flush and eof out, first binary frame in."""

    url: str
    ssl: Any
    name: str = FLOOR
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _session: Any = None
    _ws: Any = None

    async def _open(self) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, ssl=self.ssl)
        init = {"X-API-Key": common.API_KEY, "voice": "ava", "format": "pcm_s16le"}
        await self._ws.send_str(json.dumps(init))

    async def turn(self, text_delay: float) -> Sample | None:
        import aiohttp

        try:
            async with asyncio.timeout(TURN_TIMEOUT):
                if self._ws is None:
                    await self._open()
                await asyncio.sleep(text_delay)
                ws, first = self._ws, None
                start = time.perf_counter()
                for frame in ({"text": SENTENCE}, {"flush": True}, {"eof": True}):
                    await ws.send_str(json.dumps(frame))
                for _ in range(common.MAX_CHUNKS):
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        first = first or time.perf_counter()
                    elif msg.type is not aiohttp.WSMsgType.TEXT:
                        break
                await ws.close()
                await self._open()  # the next connection, outside every measured turn
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.errors.append(f"floor: {type(exc).__name__}: {exc}")
            self._ws = None
            return None
        if first is None:
            self.errors.append("floor: no audio")
            return None
        return Sample(first - start, first - start, math.nan)

    async def settle(self) -> None:
        return None

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()


Client = PluginClient | FloorClient


def _make_clients(url: str, tls: common.TlsFiles, upstream: Any) -> list[Client]:
    from videosdk.agents.metrics import metrics_collector
    from videosdk.agents.speech_generation import SpeechGeneration

    from videosdk.plugins.lmnt import LMNTTTS

    ctx = common.client_ssl_context(tls)
    loop = asyncio.get_running_loop()
    track_cls = _timed_track_class()
    key = common.API_KEY
    made = {
        COLD: LMNTTTS(api_key=key, ws_url=url, ssl=ctx, warm_connection=False),
        FRESH: LMNTTTS(api_key=key, ws_url=url, ssl=ctx),
        WARM: LMNTTTS(api_key=key, ws_url=url, ssl=ctx),
        REUSE: LMNTTTS(api_key=key, ws_url=url, ssl=ctx, protocol_version="1.1"),
        UPSTREAM: upstream.LMNTTTS(api_key=key, ws_url=url),
    }
    clients: list[Client] = []

    def wire(client: PluginClient, tts: Any) -> Any:
        sg = SpeechGeneration(tts=tts)
        tts.loop = loop
        sg.on("last_audio_byte", lambda _=None, c=client: c.done.set())

        def reported(_: Any = None, c: PluginClient = client) -> None:
            try:
                c.reported_ttfb = metrics_collector.current_turn.tts_metrics[-1].ttfb / 1e3
            except (AttributeError, IndexError, TypeError):
                c.reported_ttfb = math.nan

        sg.on("first_audio_byte", reported)
        tts.on("error", lambda msg, c=client: c.errors.append(str(msg)))
        return sg

    for name, tts in made.items():
        track = track_cls(loop)
        track._start = 0.0  # a start in the past: recv() never sleeps
        track._speaking_grace_period = 0.0
        client = (FreshClient if name == FRESH else PluginClient)(name, tts, None, track)
        client.sg = wire(client, tts)
        if isinstance(client, FreshClient):

            def make(c: PluginClient) -> tuple[Any, Any]:
                fresh = LMNTTTS(api_key=key, ws_url=url, ssl=ctx)
                return fresh, wire(c, fresh)

            client.make = make
        else:
            client.sg.set_audio_track(track)
        client.drain = loop.create_task(_drain(track))
        clients.append(client)
    clients.append(FloorClient(url, ctx))
    return clients


def _select(clients: list[Client], names: list[str]) -> list[Client]:
    return [c for c in clients if c.name in names]


async def _measure_rtt(
    url: str, tls: common.TlsFiles, upstream: Any, args: argparse.Namespace, deadline: float
) -> tuple[dict[str, Client], bool]:
    made = _make_clients(url, tls, upstream)
    clients = _select(made, args.clients)
    for client in made:
        if client not in clients:
            await client.aclose()
    complete = True
    try:
        for client in clients:
            if isinstance(client, PluginClient) and client.name in (WARM, REUSE):
                await client.tts.prewarm()
                await client.settle()
        for _ in range(WARMUP_TURNS):
            for client in clients:
                await client.turn(args.text_delay)
                await client.settle()
                await asyncio.sleep(args.gap)
        for client in clients:
            if not client.errors:
                continue
            hint = ""
            if client.name == UPSTREAM and any("certif" in e.lower() for e in client.errors):
                hint = " (was aiohttp imported before SSL_CERT_FILE was set?)"
            raise SystemExit(f"{client.name}: warm-up failed: {client.errors[-1]}{hint}")
        for i in range(args.turns):
            if time.monotonic() > deadline:
                complete = False
                break
            shift = i % len(clients)  # rotate who goes first: no position bias
            for client in clients[shift:] + clients[:shift]:
                sample = await client.turn(args.text_delay)
                if sample is not None:
                    client.samples.append(sample)
                await client.settle()
                await asyncio.sleep(args.gap)
    finally:
        for client in clients:
            await client.aclose()
    return {c.name: c for c in clients}, complete


def _plot(results: dict[float, dict[str, Client]], delay: float, path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: plot skipped (pip install matplotlib)"
    rtts = sorted(results)
    x = [r * 1e3 for r in rtts]
    names = [n for n in CLIENTS if all(n in results[r] for r in rtts)]
    colors = {COLD: "tab:orange", WARM: "tab:green", REUSE: "tab:blue", UPSTREAM: "tab:red",
              FLOOR: "tab:gray"}  # fmt: skip
    markers = {COLD: "s", WARM: "o", REUSE: "D", UPSTREAM: "^", FLOOR: "x"}

    def summary(name: str, rtt: float, attr: str) -> common.Summary:
        return common.Summary.of([getattr(s, attr) for s in results[rtt][name].samples])

    fig, (ax_a, ax_x, ax_f) = plt.subplots(1, 3, figsize=(16, 4.8))
    for ax, attr, title in (
        (ax_a, "ttfa", "Text ready → first audio at the track\n(what the user hears)"),
        (ax_f, "ttfb", "Framework TTFB: first text pulled → first audio\n"
                       "(both plugins connect before pulling: blind to set-up)"),
    ):  # fmt: skip
        for name in names:
            med = [summary(name, r, attr).median * 1e3 for r in rtts]
            p95 = [summary(name, r, attr).p95 * 1e3 for r in rtts]
            ax.plot(x, med, marker=markers[name], color=colors[name], label=f"{name}")
            ax.plot(x, p95, linestyle=":", color=colors[name], linewidth=1)
        ax.plot(x, [(delay + r) * 1e3 for r in rtts], "k--", linewidth=1,
                label="processing delay + 1 RTT")  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("injected round-trip time (ms)")
        ax.set_ylabel("ms (solid: median, dotted: p95)")
        ax.set_xticks(x)
        ax.grid(alpha=0.3)
    ax_a.legend(fontsize=8)
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        excess = [max(0.1, (summary(name, r, "ttfa").median - delay - r) * 1e3) for r in rtts]
        pos = [k + (i - (len(names) - 1) / 2) * width for k in range(len(rtts))]
        ax_x.bar(pos, excess, width, color=colors[name], label=name)
    ax_x.axhline(5, color="k", linestyle="--", linewidth=1, label="target: 5 ms")
    ax_x.set_yscale("log")
    ax_x.set_xticks(range(len(rtts)), [f"{v:.0f}" for v in x])
    ax_x.set_xlabel("injected round-trip time (ms)")
    ax_x.set_ylabel("ms, log scale (median)")
    ax_x.set_title("Excess over processing delay + 1 RTT\n(TTFA median - delay - RTT)", fontsize=9)
    ax_x.grid(alpha=0.3, axis="y")
    ax_x.legend(fontsize=7)
    fig.suptitle(f"LMNT TTS over TLS; local server with {delay * 1e3:.0f} ms processing delay",
                 fontsize=11)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot saved to {path}"


def _ratio(old: list[float], new: list[float]) -> float:
    """Median of ``old`` over median of ``new`` (inf when ``new`` is not positive)."""
    a, b = common.Summary.of(old).median, common.Summary.of(new).median
    return math.inf if b <= 0 else a / b


def _report(results: dict[float, dict[str, Client]], delay: float, turns: int) -> str:
    rows = []
    for rtt in sorted(results):
        for name in CLIENTS:
            if name not in results[rtt]:
                continue
            samples = results[rtt][name].samples
            ttfa = common.Summary.of([s.ttfa for s in samples])
            ttfb = common.Summary.of([s.ttfb for s in samples])
            fw = common.Summary.of([s.ttfb_reported for s in samples
                                    if not math.isnan(s.ttfb_reported)])  # fmt: skip
            pool = getattr(getattr(results[rtt][name], "tts", None), "_pool", None)
            opened = str(getattr(pool, "opened", "-"))
            rows.append([
                f"{rtt * 1e3:.0f}", name, f"{ttfa.n}/{turns}", opened,
                common.ms(ttfa.median), common.ms(ttfa.p95), common.ms(ttfa.max),
                common.ms(ttfa.median - delay), common.ms(ttfa.p95 - delay),
                common.ms(ttfb.median), common.ms(ttfb.p95), common.ms(ttfb.median - delay),
                common.ms(fw.median),
            ])  # fmt: skip
    headers = [
        "RTT", "client", "turns", "conns", "TTFA med", "TTFA p95", "TTFA max",
        "overhead med", "overhead p95",
        "TTFB(fw) med", "TTFB(fw) p95", "fw overhead med", "fw-reported med",
    ]  # fmt: skip
    lines = [common.table(headers, rows), ""]
    for rtt in sorted(results):
        limit = rtt + 0.005
        for name in (WARM, REUSE):
            samples = results[rtt][name].samples if name in results[rtt] else []
            if not samples:
                continue
            over = common.Summary.of([s.ttfa - delay for s in samples])
            spares = [s.spare_ready for s in samples if s.spare_ready is not None]
            lines.append(
                f"{name} overhead at {rtt * 1e3:.0f} ms RTT: median {common.ms(over.median)}, "
                f"p95 {common.ms(over.p95)} ms; target ≤ 1 RTT + 5 ms = {common.ms(limit)} ms: "
                f"median {'met' if over.median <= limit else 'MISSED'}, "
                f"p95 {'met' if over.p95 <= limit else 'missed'}; "
                f"connection ready at turn start {sum(spares)}/{len(spares)}"
            )
    for rtt in sorted(results):
        if abs(rtt - 0.040) > 1e-9:
            continue
        for attr, label in (("ttfa", "TTFA"), ("ttfb", "TTFB(fw)")):
            got = results[rtt]
            old = (
                [getattr(s, attr) - delay for s in got[UPSTREAM].samples] if UPSTREAM in got else []
            )
            fresh = [getattr(s, attr) - delay for s in got[FRESH].samples] if FRESH in got else []
            if old and fresh and attr == "ttfa":
                ratio = _ratio(fresh, old)
                lines.append(
                    f"{FRESH} / 1.0.30 TTFA overhead at 40 ms RTT (medians): {ratio:.2f}x; "
                    f"target ≤ 1x (a cold turn no slower): {'met' if ratio <= 1.0 else 'MISSED'}"
                )
            for name in (WARM, REUSE):
                new = [getattr(s, attr) - delay for s in got[name].samples] if name in got else []
                if old and new:
                    ratio = _ratio(old, new)
                    lines.append(
                        f"1.0.30 / {name} overhead at 40 ms RTT ({label}, medians): "
                        f"{ratio:.1f}x; target ≥ 3x: {'met' if ratio >= 3 else 'MISSED'}"
                    )
    return "\n".join(lines)


async def _main(args: argparse.Namespace, tls: common.TlsFiles) -> None:
    upstream = common.load_upstream()
    _timed_track_class()  # import the framework now, then freeze its import-time heap
    common.freeze_heap()
    rtts = tuple(r / 1e3 for r in args.rtt)
    spec = common.ServerSpec(
        faults={"processing_delay": args.processing_delay},
        engine={"seconds_per_char": 0.02},  # ~1.3 s of audio per turn
        tls=tls,
        rtts=rtts,
    )
    deadline = time.monotonic() + args.max_seconds
    results: dict[float, dict[str, Client]] = {}
    partial = False
    print(f"{common.cpu_count_note()}; {args.turns} turns per client and RTT after "
          f"{WARMUP_TURNS} warm-up turns; server processing delay "
          f"{args.processing_delay * 1e3:.0f} ms; text delay {args.text_delay * 1e3:.0f} ms; "
          "TLS 1.3 with a throwaway CA\n")  # fmt: skip
    with common.ServerProcess(spec) as info:
        for rtt in rtts:
            t0 = time.monotonic()
            by_name, complete = await _measure_rtt(info.proxy_urls[rtt], tls, upstream, args,
                                                   deadline)  # fmt: skip
            results[rtt] = by_name
            partial |= not complete
            errors = {n: c.errors[:3] for n, c in by_name.items() if c.errors}
            print(f"RTT {rtt * 1e3:.0f} ms done in {time.monotonic() - t0:.0f} s"
                  + (f"; errors: {errors}" if errors else ""))  # fmt: skip
            if not complete:
                print(f"time limit (--max-seconds {args.max_seconds:g}) reached: stopping early")
                break
    print("\ntimes in ms; overhead = time - server processing delay\n")
    print(_report(results, args.processing_delay, args.turns))
    if partial:
        print("NOTE: the run hit its time limit; some cells have fewer turns")
    print(f"at the end: {common.load_note()}")
    if args.plot:
        print(_plot(results, args.processing_delay, Path(args.plot)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=50, help="measured turns per client and RTT")
    parser.add_argument("--rtt", type=float, nargs="+", default=[0, 40, 150], help="RTTs in ms")
    parser.add_argument("--processing-delay", type=float, default=0.05, help="server, seconds")
    parser.add_argument("--text-delay", type=float, default=0.0,
                        help="seconds until the first sentence is ready (LLM time)")  # fmt: skip
    parser.add_argument("--gap", type=float, default=0.05, help="pause between turns, seconds")
    parser.add_argument("--clients", nargs="+", default=list(CLIENTS), choices=CLIENTS,
                        metavar="NAME", help=f"subset of: {', '.join(CLIENTS)}")  # fmt: skip
    parser.add_argument("--max-seconds", type=float, default=420, help="time limit of the run")
    parser.add_argument("--plot", default=str(common.REPO / "docs" / "latency.png"),
                        help="where to save the plot; '' to skip it")  # fmt: skip
    args = parser.parse_args()
    if not 1 <= args.turns <= 10_000 or any(not 0 <= r <= 2000 for r in args.rtt):
        parser.error("--turns must be 1..10000 and each --rtt 0..2000 ms")
    if not 0 <= args.text_delay <= 5 or not 0 <= args.processing_delay <= 5:
        parser.error("--text-delay and --processing-delay must be 0..5 s")
    if "aiohttp" in sys.modules:  # cannot happen when run as a script; guards reuse
        raise SystemExit("aiohttp was imported before SSL_CERT_FILE could be set")
    with tempfile.TemporaryDirectory(prefix="lmnt-bench-tls-") as tmp:
        tls = common.make_tls_files(Path(tmp))
        os.environ["SSL_CERT_FILE"] = tls.ca  # aiohttp's default context (1.0.30's) trusts it
        common.ensure_package()
        common.quiet_logs()
        asyncio.run(_main(args, tls))


if __name__ == "__main__":
    main()
