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

A second server process, over TLS with ``max_connections`` = ``--tls-silent``, gets that many
TCP connections that never start their TLS handshake (issue 21 item 3: held 60 s and not
counted against the cap before the fix).

Every ``--step`` seconds for ``--watch`` seconds it prints how many of each the servers still
hold open, the first server's open file descriptors, whether a new client is still served
(``/health_check`` answered within 2 s), and whether a new HTTPS client of the TLS server is
(refused while the silent connections fill its cap: they are counted).
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
try:  # a checkout from before the split (--src) has the server under its old path
    from videosdk.plugins.lmnt.server import LocalLMNTServer, ServerConfig, ToneEngine
except ImportError:
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

LAUNCH_TLS = """
import asyncio, signal, sys
try:  # a checkout from before the split (--src) has the server under its old path
    from videosdk.plugins.lmnt.server import LocalLMNTServer, ServerConfig, ToneEngine
except ImportError:
    from lmnt_local.server import LocalLMNTServer, ServerConfig, ToneEngine
from videosdk.plugins.lmnt.testing import make_tls_contexts
async def main():
    server_ctx, _ = make_tls_contexts()
    srv = LocalLMNTServer(ToneEngine(), ssl_context=server_ctx,
                          config=ServerConfig(max_connections=int(sys.argv[1])))
    await srv.start()
    print(srv.port, flush=True)
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


async def _served_tls(port: int) -> str:
    """A new HTTPS client (certificate not checked: only whether it is served matters)."""
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(2):
                async with http.get(f"https://127.0.0.1:{port}/health_check", ssl=ctx) as resp:
                    return str(resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return type(exc).__name__


def _launch(code: str, arg: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, arg], stdout=subprocess.PIPE, text=True, env=env
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def pump() -> None:
        for x in stdout:
            lines.put(x)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines.get(timeout=60)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=ROOT / "src")
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--slowloris", type=int, default=300)
    parser.add_argument("--stalled", type=int, default=100)
    parser.add_argument("--tls-silent", type=int, default=100)
    parser.add_argument("--idle-timeout", type=float, default=20.0)
    parser.add_argument("--watch", type=float, default=40.0)
    parser.add_argument("--step", type=float, default=5.0)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    env = dict(os.environ, PYTHONPATH=str(args.src), PYTHONDONTWRITEBYTECODE="1")
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} CPUs")
    proc, line = _launch(LAUNCH, str(args.idle_timeout), env)
    tls_proc, tls_line = _launch(LAUNCH_TLS, str(max(1, args.tls_silent)), env)
    first = line.split(maxsplit=1)
    port, tls_port = int(first[0]), int(tls_line)
    print(f"server from {args.src}: port {port}, settings passed: {first[1].strip()}")
    print(f"TLS server: port {tls_port}, max_connections {args.tls_silent}")
    stop = asyncio.Event()
    idle, slow, stalled, silent = Open(), Open(), Open(), Open()
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
    tasks += [
        asyncio.ensure_future(_raw(tls_port, silent, stop, b"", False))
        for _ in range(args.tls_silent)
    ]
    print(
        f"{'t (s)':>6} {'idle WS':>8} {'slowloris':>10} {'stalled':>8} {'TLS silent':>10}"
        f" {'fds':>6}  {'new client':>10}  new TLS client"
    )
    started = time.monotonic()
    try:
        while True:
            await asyncio.sleep(args.step)
            t = time.monotonic() - started
            print(
                f"{t:6.0f} {idle.open:>8} {slow.open:>10} {stalled.open:>8} {silent.open:>10} "
                f"{_fds(proc.pid):>6}  {await _served(port):>10}  {await _served_tls(tls_port)}",
                flush=True,
            )
            if t >= args.watch:
                break
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in (proc, tls_proc):
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
