"""Does ``lmnt-local serve`` stop on SIGTERM while it is busy?  (issue 13, item 3)

Run from the repository root::

    python benchmarks/sigterm_under_load.py                        # this checkout, 6 runs
    git archive main src | tar -x -C /tmp/old                      # an older checkout ...
    python benchmarks/sigterm_under_load.py --src /tmp/old/src     # ... measured the same way

Each run starts ``lmnt-local serve --port 0 --engine espeak`` (``--src`` on ``PYTHONPATH``,
plus ``--serve-args``), opens ``--sessions`` WebSocket sessions asking for mp3 (LMNT's
default format, encoded by the server) with a long text each, lets them stream for
``--load-seconds``, sends SIGTERM and waits up to ``--kill-after`` seconds for the process to
exit before it is killed.  Printed per run: seconds from SIGTERM to exit (or "SIGKILL"), the
exit status, how the sessions ended (close codes; 1000 = finished, 1001 = server going away,
1006 = dropped), and whether the server printed "Exception ignored" (signal wakeup fd full).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
TEXT = (
    "Local speech synthesis lets a voice agent run its whole pipeline on one machine. "
    "Nothing leaves the network, and tests do not depend on a paid service being up. "
) * 12


async def _session(http: aiohttp.ClientSession, url: str, codes: list[int | None]) -> None:
    try:
        async with asyncio.timeout(120):
            async with http.ws_connect(url, max_msg_size=0) as ws:
                init = {"X-API-Key": "k", "voice": "ava", "format": "mp3", "sample_rate": 24000}
                await ws.send_str(json.dumps(init))
                await ws.send_str(json.dumps({"text": TEXT}))
                await ws.send_str(json.dumps({"eof": True}))
                async for _ in ws:
                    pass
                codes.append(ws.close_code)
    except (aiohttp.ClientError, OSError, TimeoutError):
        codes.append(None)


async def _run(args: argparse.Namespace, index: int) -> str:
    env = dict(os.environ, PYTHONPATH=str(args.src), PYTHONDONTWRITEBYTECODE="1")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started before the load
            [
                sys.executable,
                "-m",
                "lmnt_local.cli.app",
                "serve",
                "--port",
                "0",
                "--engine",
                "espeak",
                *args.serve_args.split(),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
        )
        lines: queue.Queue[str] = queue.Queue()
        stdout = proc.stdout
        assert stdout is not None
        threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True).start()
        try:
            url = lines.get(timeout=60).split()[-1]
        except queue.Empty:
            proc.kill()
            return f"run {index}: the server printed no URL"
        codes: list[int | None] = []
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            clients = [
                asyncio.create_task(_session(http, url, codes)) for _ in range(args.sessions)
            ]
            await asyncio.sleep(args.load_seconds)
            proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            outcome = "SIGKILL"
            while time.monotonic() - signalled < args.kill_after:
                if proc.poll() is not None:
                    outcome = f"{time.monotonic() - signalled:5.2f} s"
                    break
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            status = proc.wait(10)
            for task in clients:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*clients, return_exceptions=True)
        err.seek(0)
        ignored = "Exception ignored" in err.read()
    ended = Counter("open" if c is None else str(c) for c in codes)
    ended["never ended"] = args.sessions - len(codes)
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(ended.items()) if v)
    return (
        f"run {index}: stopped after {outcome:>8}  exit {status:>4}  "
        f"'Exception ignored': {'yes' if ignored else 'no '}  sessions {summary}"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="package source to run")
    parser.add_argument("--serve-args", default="", help="extra `serve` options, quoted")
    parser.add_argument("--runs", type=int, default=6, choices=range(1, 21), metavar="1-20")
    parser.add_argument("--sessions", type=int, default=50, choices=range(1, 501), metavar="N")
    parser.add_argument("--load-seconds", type=float, default=3.0)
    parser.add_argument("--kill-after", type=float, default=30.0)
    args = parser.parse_args()
    print(
        f"{args.sessions} busy mp3 sessions, SIGTERM after {args.load_seconds:g} s, "
        f"SIGKILL after {args.kill_after:g} s more; server from {args.src} {args.serve_args}"
    )
    for i in range(1, args.runs + 1):
        print(await _run(args, i), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
