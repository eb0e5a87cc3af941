"""Issue 21 item 5: a ``LocalLMNTServer`` embedded in a plain script, no ``__main__`` guard.

The encoder processes of mp3/webm/aac sessions used to be started with ``multiprocessing``'s
spawn, which re-runs the parent's main script in each child: without the guard the script
started a second server there and every mp3 session hung.  The script here is run as a real
``python script.py`` with a bounded wait.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import asyncio, json
import aiohttp
from lmnt_local.server import LocalLMNTServer, ToneEngine

print("script body runs", flush=True)

async def main():
    async with LocalLMNTServer(ToneEngine()) as srv, aiohttp.ClientSession() as http:
        for fmt in ("mp3", "webm"):
            audio = 0
            async with http.ws_connect(srv.ws_url) as ws:
                await ws.send_str(json.dumps({"X-API-Key": "k", "voice": "ava", "format": fmt}))
                await ws.send_str(json.dumps({"text": "Hello there."}))
                await ws.send_str(json.dumps({"eof": True}))
                async with asyncio.timeout(60):
                    async for msg in ws:
                        if msg.type is aiohttp.WSMsgType.BINARY:
                            audio += len(msg.data)
            print(fmt, audio, ws.close_code, flush=True)
        body = {"text": "Hello there.", "voice": "ava", "format": "aac"}
        async with http.post(
            srv.http_url + "/v1/ai/speech/bytes", json=body, headers={"X-API-Key": "k"}
        ) as resp:
            print("aac", len(await resp.read()), 1000 if resp.status == 200 else resp.status)

asyncio.run(main())
"""


@pytest.mark.timeout(240)
def test_a_script_without_a_main_guard_serves_every_format(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=150,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines.count("script body runs") == 1, lines  # never re-run in a child
    results = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert set(results) == {"mp3", "webm", "aac"}, lines
    for fmt, (audio, code) in results.items():
        assert int(audio) > 1000 and code == "1000", (fmt, audio, code)
