"""What waiting for the server to accept a session costs a cold turn (issue 10, item 5).

    python benchmarks/acceptance_wait.py [--turns 20]

Before reading any text, a turn on a connection it opened itself waits for the typed API's
``ready`` or, on legacy (which never confirms an init), for twice the handshake time (20 ms at
least, 250 ms at most) in which a refused key would be reported.  This prints the time to first
audio of cold turns (``warm_connection=False``: every turn opens its own connection) against the
in-process local server on loopback, with that wait as shipped and with it switched off.  Warm
turns do not pay it (their spare has been open longer than the wait).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ensure_package

ensure_package()

from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.server import LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import LMNTTTS
from videosdk.plugins.lmnt.turn import Turn


async def cold_ttfa(version: str, turns: int, wait: bool) -> list[float]:
    saved = Turn.ACCEPT_WAIT_MIN, Turn.ACCEPT_WAIT_MAX
    if not wait:
        Turn.ACCEPT_WAIT_MIN = Turn.ACCEPT_WAIT_MAX = 0.0
    out: list[float] = []
    try:
        async with LocalLMNTServer(engine=ToneEngine(), port=0) as server:
            tts = LMNTTTS(api_key="bench-key", ws_url=server.ws_url, protocol_version=version,
                          warm_connection=False, reuse_sessions=False)  # fmt: skip
            track = CustomAudioStreamTrack(asyncio.get_running_loop())
            tts.audio_track = track
            try:
                for _ in range(turns):
                    first = asyncio.Event()

                    async def on_first(ev: asyncio.Event = first) -> None:
                        ev.set()

                    tts.on_first_audio_byte(on_first)
                    t0 = time.perf_counter()
                    task = asyncio.create_task(tts.synthesize("Hi."))
                    await asyncio.wait_for(first.wait(), 5)
                    out.append((time.perf_counter() - t0) * 1000)
                    await task
                    track.interrupt()
            finally:
                await tts.aclose()
    finally:
        Turn.ACCEPT_WAIT_MIN, Turn.ACCEPT_WAIT_MAX = saved
    return out


async def main(turns: int) -> None:
    print("| protocol | acceptance wait | cold time to first audio, median (ms) | p90 (ms) |")
    print("|---|---|---|---|")
    for version in ("1.0", "1.2"):
        for wait in (True, False):
            ms = sorted(await cold_ttfa(version, turns, wait))
            p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
            label = "as shipped" if wait else "off"
            print(f"| {version} | {label} | {statistics.median(ms):.1f} | {p90:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.turns))
