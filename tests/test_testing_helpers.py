"""The supported helpers of ``videosdk.plugins.lmnt.testing`` (issue 10 item 17, issue 11 item 5).

``drain_track`` replaces the docs' old advice (``track._start = 0.0`` and a ``recv()`` loop),
which span at ~96 % CPU once the audio ran out and could hang a test: it must drain fast or in
real time, return exactly the audio that played, stay idle when there is nothing to play, and
end every wait within its bound.  And the module must import where pytest-asyncio is not
installed: its helpers are documented for use outside fixtures.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.server import LocalLMNTServer
from videosdk.plugins.lmnt import LMNTTTS, testing

pytestmark = pytest.mark.timeout(60)

TEXT = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April."


def _tts(server: LocalLMNTServer, track: CustomAudioStreamTrack) -> LMNTTTS:
    tts = LMNTTTS(api_key="test-key-123456", ws_url=server.ws_url, warm_connection=False)
    tts.audio_track = track
    return tts


async def test_fast_drain_returns_all_played_audio_quickly(lmnt_server: LocalLMNTServer) -> None:
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    tts = _tts(lmnt_server, track)
    try:
        t0 = time.monotonic()
        drain = asyncio.create_task(testing.drain_track(track, idle=0.3))
        await tts.synthesize(TEXT)
        pcm = await asyncio.wait_for(drain, 20)
        wall = time.monotonic() - t0
    finally:
        await tts.aclose()
    seconds = len(pcm) / 2 / track.sample_rate
    assert seconds > 1.0, seconds  # the tone engine speaks this text for a few seconds
    assert len(pcm) // 2 == track._cumulative_input_samples  # every pushed sample, once
    assert not track.frame_buffer  # nothing left behind
    assert wall < seconds * 0.6, (wall, seconds)  # faster than real time


async def test_realtime_drain_takes_as_long_as_the_audio(lmnt_server: LocalLMNTServer) -> None:
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    tts = _tts(lmnt_server, track)
    try:
        await tts.synthesize("Hello there.")  # all queued before draining starts
        queued = len(track.frame_buffer) * 0.02
        t0 = time.monotonic()
        pcm = await testing.drain_track(track, realtime=True, idle=0.2)
        wall = time.monotonic() - t0
    finally:
        await tts.aclose()
    seconds = len(pcm) / 2 / track.sample_rate
    assert seconds == pytest.approx(queued, abs=0.001)
    assert wall >= seconds * 0.9, (wall, seconds)


async def test_an_idle_track_costs_no_cpu_and_the_wait_is_bounded() -> None:
    """The old advice span at ~96 % CPU here; the helper sleeps, and returns b"" in time."""
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(1000):
            await asyncio.sleep(0.01)
            ticks += 1

    tick = asyncio.create_task(ticker())
    cpu0, t0 = time.process_time(), time.monotonic()
    pcm = await testing.drain_track(track, first_audio_timeout=1.0)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    tick.cancel()
    assert pcm == b""
    assert 0.9 <= wall < 3.0, wall
    assert cpu < 0.35 * wall, (cpu, wall)  # a spin burns ~1 s of CPU per second
    assert ticks >= 0.5 * wall / 0.01, ticks  # the loop stayed free for others


async def test_a_producer_that_never_stops_fails_within_the_limit() -> None:
    track = CustomAudioStreamTrack(asyncio.get_running_loop())

    async def endless() -> None:
        for _ in range(10_000):
            await track.add_new_bytes(bytes(track.chunk_size))
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(endless())
    t0 = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match="still playing"):
            await testing.drain_track(track, limit=0.5)
    finally:
        producer.cancel()
    assert time.monotonic() - t0 < 2.0


async def test_stop_event_ends_the_drain_once_the_track_is_empty() -> None:
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    await track.add_new_bytes(bytes(track.chunk_size * 10))
    stop = asyncio.Event()
    stop.set()
    pcm = await asyncio.wait_for(testing.drain_track(track, stop=stop, idle=30), 5)
    assert len(pcm) == track.chunk_size * 10


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="idle"):
        asyncio.run(testing.drain_track(object(), idle=0))


def test_importable_and_usable_without_pytest_asyncio(tmp_path: Path) -> None:
    """In a process where pytest-asyncio (and pytest) cannot be imported, the helpers work."""
    script = textwrap.dedent(
        """
        import asyncio, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pytest_asyncio", "pytest", "_pytest"):
                    raise ImportError(f"blocked {name}")
                return None

        sys.meta_path.insert(0, Block())
        from videosdk.agents.room.output_stream import CustomAudioStreamTrack
        from videosdk.plugins.lmnt import LMNTTTS
        from videosdk.plugins.lmnt.testing import drain_track, start_local_server

        async def main():
            server = await start_local_server()
            track = CustomAudioStreamTrack(asyncio.get_running_loop())
            tts = LMNTTTS(api_key="k-12345678", ws_url=server.ws_url, warm_connection=False)
            tts.audio_track = track
            try:
                task = asyncio.create_task(drain_track(track, idle=0.3))
                await tts.synthesize("Outside of pytest.")
                pcm = await task
            finally:
                await tts.aclose()
                await server.stop()
            print("OK", len(pcm))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "VIDEOSDK_AUTH_TOKEN": ""}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OK ") and int(proc.stdout.split()[1]) > 0, proc.stdout
