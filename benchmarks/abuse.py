"""How long does the server keep connections nobody uses?  (issue 13, item 5)

Run from the repository root::

    python benchmarks/abuse.py                                     # this checkout
    git archive main src | tar -x -C /tmp/old
    python benchmarks/abuse.py --src /tmp/old/src                  # an older one, same way

The server (``--src`` on ``PYTHONPATH``, tone engine, its own process, default settings except
``--idle-timeout``, which the script passes only to a server that has the setting) gets at once:

* ``--idle`` idle WebSocket sessions (init frame sent, then nothing; pings are answered),
* ``--slowloris`` connections sending request headers one byte every 2 s, never finishing,
* ``--stalled`` POSTs to ``/v1/ai/speech/bytes`` announcing 1000 body bytes and sending 10.

Every ``--step`` seconds for ``--watch`` seconds it prints how many of each the server still
holds open, the server's open file descriptors, and whether a new client is still served
(``/health_check`` answered within 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

LAUNCH = """
import asyncio, dataclasses, signal, sys
from lmnt_local.server import LocalLMNTServer, ServerConfig, ToneEngine
async def main():
    names = {f.name for f in dataclasses.fields(ServerConfig)}
    wanted = {"idle_timeout": float(sys.argv[1])}
    srv = LocalLMNTServer(ToneEngine(), config=ServerConfig(
        **{k: v for k, v in wanted.items() if k in names}))
    await srv.start()
    print(srv.port, sorted(set(wanted) & names), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await srv.stop()
asyncio.run(main())
"""


class Open:
    """Counts connections of one kind that the server has not closed yet."""

    def __init__(self) -> None:
        self.open = 0


async def _idle(port: int, state: Open, stop: asyncio.Event) -> None:
    with contextlib.suppress(Exception):
        async with aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{port}/v1/ai/speech/stream"
            async with http.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=1)) as ws:
                init = {"X-API-Key": "k", "voice": "ava", "format": "pcm_s16le"}
                await ws.send_str(json.dumps(init))
                state.open += 1
                try:
                    receive = asyncio.ensure_future(ws.receive())
                    waiting = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({receive, waiting}, return_when=asyncio.FIRST_COMPLETED)
                    receive.cancel()
                    waiting.cancel()
                finally:
                    state.open -= 1


async def _raw(port: int, state: Open, stop: asyncio.Event, head: bytes, drip: bool) -> None:
    with contextlib.suppress(Exception):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        state.open += 1
        try:
            writer.write(head)
            await writer.drain()
            pieces = iter(b"X-Slow: " + b"a" * 1000)
            while not stop.is_set():
                try:
                    data = await asyncio.wait_for(reader.read(4096), 2.0)
                    if not data:
                        return  # closed by the server
                except TimeoutError:
                    if drip:
                        writer.write(bytes([next(pieces, 97)]))
                        await writer.drain()
        finally:
            state.open -= 1
            writer.close()


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def _served(port: int) -> str:
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(2):
                async with http.get(f"http://127.0.0.1:{port}/health_check") as resp:
                    return str(resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return type(exc).__name__


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--idle-timeout", type=float, default=20.0)
    parser.add_argument("--watch", type=float, default=40.0)
    parser.add_argument("--step", type=float, default=5.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = dict(os.environ, PYTHONPATH=str(args.src), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any load
        [sys.executable, "-c", LAUNCH, str(args.idle_timeout)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
    first = lines.get(timeout=60).split(maxsplit=1)
    port = int(first[0])
    print(f"server from {args.src}: port {port}, settings passed: {first[1].strip()}")
    stop = asyncio.Event()
    idle, slow, stalled = Open(), Open(), Open()
    head = b"GET /v1/ai/voice/list HTTP/1.1\r\nHost: x\r\n"
    body = (
        b"POST /v1/ai/speech/bytes HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"text": "a'
    )
    tasks = [asyncio.ensure_future(_idle(port, idle, stop)) for _ in range(args.idle)]
    tasks += [
        asyncio.ensure_future(_raw(port, slow, stop, head, True)) for _ in range(args.slowloris)
    ]
    tasks += [
        asyncio.ensure_future(_raw(port, stalled, stop, body, False)) for _ in range(args.stalled)
    ]
    print(f"{'t (s)':>6} {'idle WS':>8} {'slowloris':>10} {'stalled':>8} {'fds':>6}  new client")
    started = time.monotonic()
    try:
        while True:
            await asyncio.sleep(args.step)
            t = time.monotonic() - started
            print(
                f"{t:6.0f} {idle.open:>8} {slow.open:>10} {stalled.open:>8} "
                f"{_fds(proc.pid):>6}  {await _served(port)}",
                flush=True,
            )
            if t >= args.watch:
                break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    asyncio.run(main())
