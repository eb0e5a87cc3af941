"""The encoding workers: errors come back as the caller's exceptions, and no worker process
outlives the server process that started it, however that process ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lmnt_local.server.encoding.pool import EncoderPool, RemoteEncoder


async def test_remote_encoder_round_trip_and_errors() -> None:
    pool = EncoderPool()
    with pytest.raises(ValueError, match="cannot be encoded at 44 Hz"):
        await pool.make("mp3", 44)
    encoder = await pool.make("mp3", 24000)
    assert isinstance(encoder, RemoteEncoder)
    head = await pool.encode(encoder, bytes(2 * 24000))  # 1 s of silence, in 0.2 s jobs
    tail, padded = await pool.drain(encoder)
    assert head[0] == 0xFF and padded > 0  # MPEG frame sync; the lookahead needed silence
    assert len(head + tail + await pool.finish(encoder)) > 1000
    light = await pool.make("pcm_s16le", 24000)
    assert not isinstance(light, RemoteEncoder)
    assert await pool.encode(light, b"\x01\x02") == b"\x01\x02"


_SERVER = textwrap.dedent(
    """
    import asyncio, json, os, sys
    import aiohttp
    from lmnt_local.server import LocalLMNTServer, ToneEngine
    from lmnt_local.server.encoding.pool import _Workers

    async def main():
        async with LocalLMNTServer(engine=ToneEngine()) as srv:
            async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
                await ws.send_str(json.dumps({"X-API-Key": "k", "voice": "ava", "format": "mp3"}))
                await ws.send_str(json.dumps({"text": "Hello."}))
                await ws.send_str(json.dumps({"eof": True}))
                async for _ in ws:
                    pass
            pids = [w.executor._proc.pid for w in _Workers.shared().workers]
            print(" ".join(map(str, pids)), flush=True)
            await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has ended, it only awaits its reaper
        return stat.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_the_server_process_is_killed() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert pids and all(_alive(p) for p in pids), line
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "a worker outlived its server"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


async def test_a_killed_worker_is_replaced() -> None:
    """An encoding worker killed (OOM killer, operator) fails its own sessions with an error;
    the next session gets a fresh worker instead of the same error forever."""
    from lmnt_local.server.encoding.pool import _ProcessExecutor, _Workers

    pool = EncoderPool()
    victim = await pool.make("mp3", 24000)
    assert isinstance(victim, RemoteEncoder)
    executor = victim.worker.executor
    if not isinstance(executor, _ProcessExecutor):
        pytest.skip("encoding runs on a thread here (daemonic process)")
    os.kill(executor._proc.pid, signal.SIGKILL)
    executor._proc.join(5)
    with pytest.raises(RuntimeError, match="worker process ended"):
        await pool.encode(victim, bytes(4800))
    fresh = await pool.make("mp3", 24000)
    assert isinstance(fresh, RemoteEncoder) and fresh.worker.executor is not executor
    assert len(await pool.encode(fresh, bytes(48000))) > 0
    assert all(not getattr(w.executor, "broken", False) for w in _Workers.shared().workers)
