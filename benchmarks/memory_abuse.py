"""Memory a server holds for abusive or heavy requests, before and after they end.

The server runs in this process (tone engine, default settings, ``api_keys={"right"}``); the
script prints its resident memory (RSS, after a full collection) before, while the load is
held (or right after it, for loads that end by themselves), and 2 s after the load ended.

* ``init``: ``--connections`` WebSocket connections, each a ``--init-kb`` KB init frame with a
  wrong key (issue 13: 271 MB that never came back for 300 x 900 KB before its fix).
* ``partial``: ``--connections`` WebSocket connections that start a 900 KB frame before any
  init, send ``--partial-kb`` KB of it and stall (issue 21 item 3: +113 MB for 200).
* ``body``: ``--connections`` POSTs with a wrong key announcing a 1 MB body, sending
  ``--partial-kb`` KB of it and stalling (issue 21 item 3: +242 MB for 200).
* ``detailed``: ``--detailed`` concurrent ``POST /v1/ai/speech`` of 5,000 characters, mp3
  (issue 21 item 6: +135 MB each with the neural engine, 685 MB for six).

Run from the repository root; ``--src`` measures another checkout the same way::

    python benchmarks/memory_abuse.py
    git worktree add /tmp/old-main 10882af      # before the split: its src/ holds the server
    python benchmarks/memory_abuse.py --src /tmp/old-main/src
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "--src" in sys.argv:  # before anything imports videosdk: that checkout's code is measured
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--src") + 1]).resolve()))
import _common as common

common.ensure_package()

import aiohttp

if (
    "--src" in sys.argv
    and not (Path(sys.argv[sys.argv.index("--src") + 1]) / "lmnt_local").is_dir()
):
    # A checkout from before the split (one distribution): its server, by its old path.
    from videosdk.plugins.lmnt.server import LocalLMNTServer, ToneEngine  # type: ignore[no-redef]
else:
    from lmnt_local.server import LocalLMNTServer, ToneEngine

TEXT = "word " * 1000  # 5,000 characters


def rss_mb() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _ws_upgrade(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    import base64

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /v1/ai/speech/stream HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def _send(writer: asyncio.StreamWriter, size: int) -> None:
    for _ in range(size // 65536):
        writer.write(b"x" * 65536)
        with contextlib.suppress(ConnectionError):
            await writer.drain()


async def partial_frames(port: int, count: int, kb: int) -> list[asyncio.StreamWriter]:
    async def one() -> asyncio.StreamWriter:
        _, writer = await _ws_upgrade(port)
        writer.write(b"\x81\xff" + struct.pack(">Q", 900_000) + b"\x00\x00\x00\x00")
        await _send(writer, kb * 1000)
        return writer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def slow_bodies(port: int, count: int, kb: int) -> list[asyncio.StreamWriter]:
    async def one() -> asyncio.StreamWriter:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/ai/speech/bytes HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n"
        )
        await _send(writer, kb * 1000)
        return writer

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def run(mode: str, args: argparse.Namespace) -> tuple[float, float, float]:
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={"right"}) as srv:
        async with aiohttp.ClientSession() as http:
            held: list[asyncio.StreamWriter] = []

            async def init_frames() -> None:
                init = json.dumps(
                    {"X-API-Key": "wrong", "voice": "ava", "pad": "x" * (args.init_kb * 1000)}
                )

                async def one() -> None:
                    async with http.ws_connect(
                        srv.ws_url, timeout=aiohttp.ClientWSTimeout(ws_close=10)
                    ) as ws:
                        await ws.send_str(init)
                        async for _ in ws:
                            pass

                for start in range(0, args.connections, 50):
                    n = min(50, args.connections - start)
                    await asyncio.gather(*(one() for _ in range(n)))

            async def detailed() -> None:
                async def one() -> None:
                    body = {"text": TEXT, "voice": "ava", "format": "mp3"}
                    url = srv.http_url + "/v1/ai/speech"
                    async with http.post(url, json=body, headers={"X-API-Key": "right"}) as r:
                        async for _ in r.content.iter_chunked(65536):
                            pass

                await asyncio.gather(*(one() for _ in range(args.detailed)))

            async def partial() -> None:
                held.extend(await partial_frames(srv.port, args.connections, args.partial_kb))

            async def body() -> None:
                held.extend(await slow_bodies(srv.port, args.connections, args.partial_kb))

            loads: dict[str, Callable[[], Awaitable[None]]] = {
                "init": init_frames,
                "partial": partial,
                "body": body,
                "detailed": detailed,
            }
            if mode == "detailed":  # the first request pays for imports and the encoders
                args_detailed, args.detailed = args.detailed, 1
                await detailed()
                args.detailed = args_detailed
            before = rss_mb()
            await loads[mode]()
            await asyncio.sleep(0.5)
            during = rss_mb()
            for writer in held:
                writer.close()
            await asyncio.sleep(2)
            later = rss_mb()
    return before, during, later


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=None, help="checkout to measure")
    parser.add_argument(
        "--modes", default="init,partial,body,detailed", help="comma-separated loads"
    )
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--init-kb", type=int, default=900)
    parser.add_argument("--partial-kb", type=int, default=600)
    parser.add_argument("--detailed", type=int, default=6)
    args = parser.parse_args()
    common.quiet_logs()
    with contextlib.suppress(OSError):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        print(f"CPU {cpu} x {os.cpu_count()}, {platform.python_version()}")
    print(f"server code: {Path(sys.modules[LocalLMNTServer.__module__].__file__ or '?').parent}")
    print(f"load average at start: {os.getloadavg()}\n")
    rows = []
    for mode in args.modes.split(","):
        before, during, later = asyncio.run(run(mode, args))
        what = {
            "init": f"{args.connections} wrong-key inits of {args.init_kb} KB",
            "partial": f"{args.connections} pre-init frames, {args.partial_kb} KB sent",
            "body": f"{args.connections} wrong-key bodies, {args.partial_kb} KB sent",
            "detailed": f"{args.detailed} x /v1/ai/speech 5,000 chars mp3",
        }[mode]
        rows.append(
            [
                what,
                f"{before:.0f}",
                f"{during:.0f}",
                f"{during - before:+.0f}",
                f"{later:.0f}",
                f"{later - before:+.0f}",
            ]
        )
    print(
        common.table(["load", "RSS before (MB)", "held/after", "grown", "2 s later", "kept"], rows)
    )
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
