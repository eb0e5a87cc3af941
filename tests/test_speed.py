"""``speed`` (issue 13.6): it takes effect on every engine and both doors, and is validated alike.

LMNT documented 0.25-2.0; the WebSocket refused values outside with an error frame, but HTTP
answered 200 to ``speed: 99`` and both doors spoke at the same pace whatever was asked.  The
tone engine makes the effect exact (every character lasts ``0.05 / speed`` s); espeak shows it
on real speech.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from lmnt_local.server import LocalLMNTServer, ToneEngine

from audio_helpers import active_span
from neural_helpers import stream

pytestmark = pytest.mark.timeout(30)

RATE = 24000
TEXT = "Speed check."


async def _post(srv: LocalLMNTServer, **body: Any) -> tuple[int, Any]:
    body = {"text": TEXT, "voice": "ava", "format": "pcm_s16le", "sample_rate": RATE, **body}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{srv.http_url}/v1/ai/speech/bytes", json=body, headers={"X-API-Key": "k"}
        ) as resp,
    ):
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.read()


@pytest.mark.parametrize("speed", [0.5, 1.0, 2.0])
async def test_tone_speed_on_both_doors(speed: float) -> None:
    expected = len(TEXT) * 0.05 / speed  # the tone engine's 50 ms per character, sped up
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        status, audio = await _post(srv, speed=speed)
        got = await stream(srv.ws_url, TEXT, speed=speed)
    assert status == 200
    assert len(audio) / 2 / RATE == pytest.approx(expected, abs=0.002)
    assert len(got.audio) / 2 / RATE == pytest.approx(expected, abs=0.002)


@pytest.mark.parametrize("speed", [99, 0.1, 0, -1, "fast", True])
async def test_out_of_range_speed_is_refused_on_both_doors(speed: Any) -> None:
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        status, body = await _post(srv, speed=speed)
        got = await stream(srv.ws_url, TEXT, speed=speed)
    assert status == 422, body
    [detail] = body["detail"]
    assert detail["loc"] == ["body", "speed"]
    assert "between 0.25 and 2.0" in detail["msg"]
    [error] = got.errors()
    assert "speed" in error["error"] and not got.audio
    assert got.close_code == 1002


async def test_form_body_speed_is_validated_too() -> None:
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{srv.http_url}/v1/ai/speech/bytes",
                data={"text": TEXT, "voice": "ava", "format": "pcm_s16le", "speed": "99"},
                headers={"X-API-Key": "k"},
            ) as resp,
        ):
            bad = resp.status
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{srv.http_url}/v1/ai/speech/bytes",
                data={"text": TEXT, "voice": "ava", "format": "pcm_s16le", "speed": "2"},
                headers={"X-API-Key": "k"},
            ) as resp,
        ):
            good = len(await resp.read())
    assert bad == 422
    assert good / 2 / RATE == pytest.approx(len(TEXT) * 0.05 / 2, abs=0.002)


async def test_espeak_speed_changes_the_pace() -> None:
    from lmnt_local.server.engines.espeak import EspeakEngine

    if not EspeakEngine.available():
        pytest.skip("espeak-ng is not installed")
    text = "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background."
    async with LocalLMNTServer(engine=EspeakEngine()) as srv:
        normal = await stream(srv.ws_url, text)
        fast = await stream(srv.ws_url, text, speed=2.0)
        status, slow = await _post(srv, text=text, speed=0.5)

    def spoken(pcm: bytes) -> float:
        start, end = active_span(pcm, RATE)
        return end - start

    assert status == 200
    assert 0.4 < spoken(bytes(fast.audio)) / spoken(bytes(normal.audio)) < 0.65
    assert 1.5 < spoken(slow) / spoken(bytes(normal.audio)) < 2.5


# -- every engine: the duration ratio is the speed ratio, every word timed (issue 19.6) ---------

SPEED_TEXT = "The birch canoe slid on the smooth planks. Glue the sheet — and the rest — to it!"


@pytest.fixture(params=["hibari", "neural", "espeak"])
def speaking_engine(request: pytest.FixtureRequest) -> Any:
    if request.param == "hibari":
        return request.getfixturevalue("hibari_engine")
    if request.param == "neural":
        return request.getfixturevalue("piper_engine")
    from lmnt_local.server.engines.espeak import EspeakEngine

    if not EspeakEngine.available():
        pytest.skip("espeak-ng is not installed")
    return EspeakEngine()


@pytest.mark.timeout(120)
async def test_duration_follows_speed_on_every_engine(speaking_engine: Any) -> None:
    """Measured: the ratios are exact to a frame per sentence (before: Piper 2.0 -> 1.65x,
    espeak 2.0 -> 2.12x and 0.25 -> 0.47x, hibari's own speed stops at 0.5)."""
    typed = {"lmnt-version": "1.2", "return_timestamps": True, "seed": 1}
    async with LocalLMNTServer(engine=speaking_engine) as srv:
        got = {
            s: await stream(srv.ws_url, SPEED_TEXT, speed=s, **typed) for s in (1.0, 0.25, 0.5, 2.0)
        }
    seconds = {s: len(g.audio) / 2 / RATE for s, g in got.items()}
    for speed in (0.25, 0.5, 2.0):
        ratio = seconds[1.0] / seconds[speed]
        assert ratio == pytest.approx(speed, rel=0.05), f"speed {speed}: {ratio:.3f}x"
    for speed, g in got.items():
        words = [w for _, m in g.messages if m.get("type") == "timestamps" for w in m["timestamps"]]
        assert [w["text"] for w in words] == SPEED_TEXT.split(), f"speed {speed}"
        end = 0.0
        for w in words:
            assert w["duration"] > 0 and w["start"] >= end - 1e-3, (speed, w)
            end = w["start"] + w["duration"]
        assert end <= seconds[speed] + 1e-3
