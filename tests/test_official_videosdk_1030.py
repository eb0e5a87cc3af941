"""The release we replace, ``videosdk-plugins-lmnt`` 1.0.30, unmodified, against the local server.

It cannot be installed next to this package (same distribution name), so its ``tts.py`` is
loaded from the wheel under a module name of its own, as the benchmarks do
(``benchmarks/_common.py::load_upstream``; the wheel is fetched once with ``pip download``).
Its calls: ``synthesize`` with a string and with a token stream holding ``FlushMarker`` s,
``interrupt``, ``aclose``, and the ``error`` event, all pushing into the framework's real track.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine

from track_helpers import FlushMarker, aiter_of, make_track

pytestmark = pytest.mark.asyncio

TONE = ToneEngine()
KEY = "sesame-1030"
_COMMON = Path(__file__).resolve().parent.parent / "benchmarks" / "_common.py"


def _load_upstream() -> ModuleType:
    name = "lmnt_benchmarks_common"
    common = sys.modules.get(name)
    if common is None:
        spec = importlib.util.spec_from_file_location(name, _COMMON)
        assert spec is not None and spec.loader is not None
        common = importlib.util.module_from_spec(spec)
        sys.modules[name] = common
        spec.loader.exec_module(common)
    try:
        module: ModuleType = common.load_upstream()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as exc:
        pytest.skip(f"videosdk-plugins-lmnt 1.0.30 wheel not available from PyPI: {exc}")
    return module


class _Recording(CustomAudioStreamTrack):  # type: ignore[misc]
    """The framework's track, counting the bytes the plugin pushes into it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.pushed = 0

    async def add_new_bytes(self, audio_data: bytes) -> None:
        self.pushed += len(audio_data)
        await super().add_new_bytes(audio_data)


def pcm_len(text: str, rate: int = 24000) -> int:
    return round(TONE.seconds_per_char * rate) * len(text) * 2


async def _plugin(server: LocalLMNTServer, **options: Any) -> tuple[Any, _Recording, list[str]]:
    upstream = _load_upstream()
    tts = upstream.LMNTTTS(api_key=KEY, ws_url=server.ws_url, **options)
    track = make_track(_Recording)
    tts.audio_track, tts.loop = track, asyncio.get_running_loop()
    errors: list[str] = []
    tts.on("error", lambda message: errors.append(message))
    return tts, track, errors


async def test_synthesize_text_and_token_stream() -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}) as srv:
        tts, track, errors = await _plugin(srv)
        try:
            async with asyncio.timeout(10):
                await tts.synthesize("Hello there.")
                assert track.pushed == pcm_len("Hello there.")
                tokens = ["Hi ", "you", FlushMarker(), " and ", "bye."]
                await tts.synthesize(aiter_of(tokens))
        finally:
            await tts.aclose()
        assert errors == []
        assert track.pushed == pcm_len("Hello there.") + pcm_len("Hi you and bye.")
        assert [r.commands for r in srv.sessions] == [
            ["text", "eof"],
            ["text", "text", "flush", "text", "text", "eof"],
        ]
        assert all(r.close_code == 1000 for r in srv.sessions)


async def test_interrupt_stops_the_session() -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}, faults=Faults(pace=5.0)) as srv:
        tts, track, errors = await _plugin(srv)
        try:
            async with asyncio.timeout(10):
                speaking = asyncio.create_task(tts.synthesize("x" * 100 + "."))
                while track.pushed == 0:
                    await asyncio.sleep(0.01)
                await tts.interrupt()
                await speaking
                await asyncio.wait_for(srv.sessions[-1].done.wait(), 3)
        finally:
            await tts.aclose()
        assert errors == []
        assert 0 < track.pushed < pcm_len("x" * 101)
        assert srv.sessions[-1].closed_by == "client"


async def test_unknown_voice_and_wrong_key_are_error_events() -> None:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}) as srv:
        tts, track, errors = await _plugin(srv, voice="nobody")
        try:
            async with asyncio.timeout(10):
                await tts.synthesize("Hello.")
        finally:
            await tts.aclose()
        assert track.pushed == 0
        assert len(errors) == 1 and "unknown voice 'nobody'" in errors[0]
        upstream = _load_upstream()
        tts = upstream.LMNTTTS(api_key="wrong", ws_url=srv.ws_url)
        tts.audio_track, tts.loop = make_track(_Recording), asyncio.get_running_loop()
        errors.clear()
        tts.on("error", lambda message: errors.append(message))
        try:
            async with asyncio.timeout(10):
                await tts.synthesize("Hello.")
        finally:
            await tts.aclose()
        assert errors == ["LMNT server error: Invalid API key"]
