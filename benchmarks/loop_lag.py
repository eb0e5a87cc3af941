"""The local server's event loop under many mp3 sessions: loop lag, health check, a new session.

mp3 is LMNT's default format, and LAME is the costliest thing the server does per second of
audio.  This script opens ``--sessions`` mp3 sessions that each stream ``--seconds`` of speech
as fast as the server makes it, and meanwhile measures, in the server's process (its own
process and loop, ``_common.ServerProcess``):

* the lag of its event loop (a 10 ms ticker: how late each tick woke up), p50 / p99 / max;
* ``GET /health_check`` latency, polled every 100 ms by a separate client;
* time to first audio of a new pcm session opened while the load runs.

Run from the repository root; every loop is bounded in count and time::

    python benchmarks/loop_lag.py                      # --sessions 50 --seconds 20
    python benchmarks/loop_lag.py --sessions 10 20 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

common.ensure_package()

import aiohttp

SENTENCE = "The quick brown fox jumps over the lazy dog again. "  # 51 chars = 2.55 s of tone


@dataclass(frozen=True, slots=True)
class LagResult:
    sessions: int
    lag_p50: float
    lag_p99: float
    lag_max: float
    health_p50: float
    health_max: float
    new_session_ttfa: float
    audio_bytes: int
    wall: float
    completed: int


async def _mp3_session(http: aiohttp.ClientSession, url: str, text: str) -> tuple[int, bool]:
    """One legacy mp3 session reading until the server's close; (bytes, closed 1000)."""
    init = {"X-API-Key": common.API_KEY, "voice": "ava", "format": "mp3", "sample_rate": 24000}
    got = 0
    async with http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_str(json.dumps(init))
        await ws.send_str(json.dumps({"text": text}))
        await ws.send_str(json.dumps({"eof": True}))
        for _ in range(common.MAX_CHUNKS):
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                got += len(msg.data)
            elif msg.type is not aiohttp.WSMsgType.TEXT:
                break
    return got, ws.close_code == 1000


async def _first_audio(http: aiohttp.ClientSession, url: str) -> float:
    init = {"X-API-Key": common.API_KEY, "voice": "ava", "format": "pcm_s16le"}
    t0 = time.perf_counter()
    async with http.ws_connect(url) as ws:
        await ws.send_str(json.dumps(init))
        await ws.send_str(json.dumps({"text": "Hello."}))
        await ws.send_str(json.dumps({"eof": True}))
        for _ in range(1000):
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.BINARY:
                return time.perf_counter() - t0
            if msg.type is not aiohttp.WSMsgType.TEXT:
                break
    return float("nan")


async def measure(
    sessions: int, seconds: float, timeout: float = 120.0, probe_after: float = 1.0
) -> LagResult:
    """One load run against a fresh server process; see the module docstring.

    The new session starts ``probe_after`` seconds into the load (always before the loop ends,
    so a load that finishes early cannot leave it unmeasured).
    """
    text = SENTENCE * max(1, round(seconds / 2.55))
    server = common.ServerProcess(common.ServerSpec())
    with server as info:
        http_url = info.ws_url.replace("ws://", "http://").split("/v1/", 1)[0]
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.sleep(3)  # a server is up before its load: let its workers start
            server.stats()  # forget the lags of start-up
            t0 = time.perf_counter()
            load = [
                asyncio.create_task(_mp3_session(http, info.ws_url, text)) for _ in range(sessions)
            ]
            health: list[float] = []
            ttfa = float("nan")
            idle_until = t0 + (3.0 if not load else 0.0)  # 0 sessions: the idle floor, 3 s
            async with asyncio.timeout(timeout):
                for _ in range(int(timeout * 10)):
                    probed = ttfa == ttfa  # not NaN
                    done = all(t.done() for t in load) and time.perf_counter() > idle_until
                    if done and probed:
                        break
                    h0 = time.perf_counter()
                    async with http.get(http_url + "/health_check") as resp:
                        await resp.read()
                    health.append(time.perf_counter() - h0)
                    if not probed and (done or time.perf_counter() - t0 >= probe_after):
                        ttfa = await _first_audio(http, info.ws_url)
                    await asyncio.sleep(0.1)
                results = await asyncio.gather(*load)
            wall = time.perf_counter() - t0
        _, lags = server.stats()
    return LagResult(
        sessions=sessions,
        lag_p50=common.percentile(lags, 50),
        lag_p99=common.percentile(lags, 99),
        lag_max=max(lags, default=float("nan")),
        health_p50=common.percentile(health, 50),
        health_max=max(health, default=float("nan")),
        new_session_ttfa=ttfa,
        audio_bytes=sum(b for b, _ in results),
        wall=wall,
        completed=sum(1 for _, ok in results if ok),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[50])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio per session")
    args = parser.parse_args()
    common.quiet_logs()
    rows = []
    for n in args.sessions:
        r = asyncio.run(measure(n, args.seconds))
        rows.append([
            str(r.sessions), f"{r.completed}/{r.sessions}",
            common.ms(r.lag_p50, 1), common.ms(r.lag_p99, 1), common.ms(r.lag_max, 1),
            common.ms(r.health_p50, 1), common.ms(r.health_max, 1),
            common.ms(r.new_session_ttfa, 1), f"{r.audio_bytes / 1e6:.1f}", f"{r.wall:.1f}",
        ])  # fmt: skip
    print(f"mp3 sessions, {args.seconds:g} s of tone each, server in its own process\n")
    print(
        common.table(
            ["sessions", "completed", "loop lag p50", "p99", "max", "health p50", "health max",
             "new session TTFA", "MB sent", "wall s"],
            rows,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
