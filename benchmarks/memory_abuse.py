"""Memory a server keeps after abusive connections: wrong keys with huge init frames.

Each of ``--connections`` WebSocket connections sends a ``--init-kb`` KB init frame with a
wrong key and reads until the server closes.  The server runs in this process; the script
prints its resident memory (RSS, after a full collection) before, right after, and 2 s after.
Issue 13 measured 271 MB that never came back for 300 x 900 KB before the fix::

    python benchmarks/memory_abuse.py               # --connections 300 --init-kb 900
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common

common.ensure_package()

import aiohttp

from lmnt_local.server import LocalLMNTServer, ToneEngine


def rss_mb() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(connections: int, init_kb: int) -> tuple[float, float, float]:
    init = json.dumps({"X-API-Key": "wrong", "voice": "ava", "pad": "x" * (init_kb * 1000)})
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={"right"}) as srv:
        async with aiohttp.ClientSession() as http:

            async def one() -> None:
                async with http.ws_connect(srv.ws_url, timeout=10) as ws:
                    await ws.send_str(init)
                    async for _ in ws:
                        pass

            await one()
            before = rss_mb()
            for start in range(0, connections, 50):
                await asyncio.gather(*(one() for _ in range(min(50, connections - start))))
            after = rss_mb()
            await asyncio.sleep(2)
            later = rss_mb()
    return before, after, later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--init-kb", type=int, default=900)
    args = parser.parse_args()
    common.quiet_logs()
    before, after, later = asyncio.run(run(args.connections, args.init_kb))
    print(f"{args.connections} wrong-key connections, {args.init_kb} KB init each\n")
    print(
        common.table(
            ["RSS before (MB)", "right after", "2 s later", "kept"],
            [[f"{before:.0f}", f"{after:.0f}", f"{later:.0f}", f"{later - before:+.0f}"]],
        )
    )


if __name__ == "__main__":
    main()
