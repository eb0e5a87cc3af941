"""``livekit-plugins-lmnt`` 1.8.9, unmodified, against the local server over loopback.

The plugin posts to a hard-coded ``https://api.lmnt.com/v1/ai/speech/bytes`` and takes no base
URL, but it accepts the aiohttp session to use.  The session given here resolves
``api.lmnt.com`` to 127.0.0.1 (nothing else is resolved, so no packet can leave the machine)
and trusts a test CA whose certificate for ``api.lmnt.com`` the local server presents: the
plugin's own code path, TLS included, runs exactly as it did against LMNT.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import trustme
from aiohttp.abc import AbstractResolver, ResolveResult

from lmnt_local.server import LocalLMNTServer, ToneEngine

lk_lmnt = pytest.importorskip("livekit.plugins.lmnt")
lk_agents = pytest.importorskip("livekit.agents")

pytestmark = pytest.mark.asyncio

TONE = ToneEngine()
KEY = "sesame-livekit"
TEXT = "Hello there."


class _LoopbackResolver(AbstractResolver):
    """Resolves LMNT's host name, and only it, to the local server's port on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self._port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host != "api.lmnt.com":
            raise OSError(f"this test resolves only api.lmnt.com, not {host!r}")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self._port,
                family=socket.AF_INET,
                proto=0,
                flags=0,
            )
        ]

    async def close(self) -> None:
        pass


@pytest_asyncio.fixture
async def lmnt_http() -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session for which ``https://api.lmnt.com`` is the local server."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("api.lmnt.com").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}, ssl_context=server_ctx) as srv:
        connector = aiohttp.TCPConnector(resolver=_LoopbackResolver(srv.port), ssl=client_ctx)
        async with aiohttp.ClientSession(connector=connector) as http:
            yield http


async def _speak(http: aiohttp.ClientSession, **options: Any) -> tuple[np.ndarray, int]:
    tts = lk_lmnt.TTS(voice="leah", api_key=KEY, http_session=http, **options)
    conn = lk_agents.APIConnectOptions(max_retry=0, timeout=10)
    frames = [ev.frame async for ev in tts.synthesize(TEXT, conn_options=conn)]
    assert frames, options
    pcm = np.concatenate([np.frombuffer(bytes(f.data), np.int16) for f in frames])
    return pcm, frames[0].sample_rate


def _peak_hz(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(pcm))


@pytest.mark.parametrize("fmt", ["mp3", "wav", "aac", "raw"])
async def test_every_format_lmnt_accepted(lmnt_http: aiohttp.ClientSession, fmt: str) -> None:
    """Decoded by LiveKit's own decoder: the tone's length and pitch survive each format."""
    async with asyncio.timeout(20):
        pcm, rate = await _speak(lmnt_http, format=fmt, sample_rate=16000)
    assert rate == 16000
    expected = TONE.duration_of(TEXT)
    # codecs add their priming/padding (mp3 ~0.05 s, aac ~0.06 s); never lose audio
    assert expected - 1e-6 <= len(pcm) / rate < expected + 0.1, fmt
    assert abs(_peak_hz(pcm, rate) - TONE.frequency) < 10, fmt


async def test_mulaw_is_refused_as_lmnt_did(lmnt_http: aiohttp.ClientSession) -> None:
    """The plugin offers ``mulaw``, which LMNT's format list never had: a 422, no retry."""
    with pytest.raises(lk_agents.APIStatusError) as info:
        async with asyncio.timeout(10):
            await _speak(lmnt_http, format="mulaw")
    assert info.value.status_code == 422


async def test_wrong_key_is_a_403(lmnt_http: aiohttp.ClientSession) -> None:
    tts = lk_lmnt.TTS(voice="leah", api_key="wrong", http_session=lmnt_http)
    conn = lk_agents.APIConnectOptions(max_retry=0, timeout=10)
    with pytest.raises(lk_agents.APIStatusError) as info:
        async with asyncio.timeout(10):
            async for _ in tts.synthesize(TEXT, conn_options=conn):
                pass
    assert info.value.status_code == 403
