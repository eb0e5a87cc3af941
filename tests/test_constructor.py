"""The constructor is 1.0.30's: same keywords, same defaults, ValueError for bad config."""

from __future__ import annotations

import inspect
import logging

import pytest

from videosdk.plugins.lmnt import LMNTTTS

SECRET = "sk-test-5f2b9c7e1d"

# The 1.0.30 signature, read from its published docs (shared/reference).
UPSTREAM_DEFAULTS = {
    "api_key": None,
    "voice": "ava",
    "model": "blizzard",
    "language": "auto",
    "format": "pcm_s16le",
    "sample_rate": 24000,
    "seed": None,
    "temperature": 1.0,
    "top_p": 0.8,
}


def test_signature_matches_1_0_30() -> None:
    params = inspect.signature(LMNTTTS.__init__).parameters
    for name, default in UPSTREAM_DEFAULTS.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert params[name].default == default, name
    assert params["ws_url"].kind is inspect.Parameter.KEYWORD_ONLY
    tts = LMNTTTS(api_key=SECRET)
    assert tts.ws_url == "wss://api.lmnt.com/v1/ai/speech/stream"
    assert (tts.voice, tts.model, tts.language, tts.format) == (
        "ava",
        "blizzard",
        "auto",
        "pcm_s16le",
    )
    assert tts.output_sample_rate == 24000 and tts.sample_rate == 24000
    assert tts.num_channels == 1
    assert tts.label == "videosdk.plugins.lmnt.tts.LMNTTTS"


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMNT_API_KEY", SECRET)
    assert LMNTTTS().api_key == SECRET


def test_missing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LMNT_API_KEY", raising=False)
    with pytest.raises(ValueError, match="api_key.*LMNT_API_KEY"):
        LMNTTTS()


def test_ws_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMNT_WS_URL", "ws://127.0.0.1:9/v1/ai/speech/stream")
    assert LMNTTTS(api_key=SECRET).ws_url == "ws://127.0.0.1:9/v1/ai/speech/stream"
    # An explicit argument wins over the environment.
    assert LMNTTTS(api_key=SECRET, ws_url="wss://example.invalid/x").ws_url.startswith("wss://")


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"sample_rate": 44100}, ["sample_rate", "8000", "16000", "24000"]),
        ({"sample_rate": True}, ["sample_rate"]),
        ({"format": "wav"}, ["format", "pcm_s16le", "mp3", "webm", "ulaw"]),
        ({"temperature": -0.1}, ["temperature"]),
        ({"temperature": float("nan")}, ["temperature"]),
        ({"temperature": 6}, ["temperature"]),
        ({"top_p": 1.5}, ["top_p"]),
        ({"top_p": "0.5"}, ["top_p"]),
        ({"voice": ""}, ["voice"]),
        ({"voice": "   "}, ["voice"]),
        ({"seed": 1.5}, ["seed"]),
        ({"language": "English"}, ["language"]),
        ({"ws_url": "https://api.lmnt.com/v1/ai/speech/stream"}, ["ws_url", "ws://", "wss://"]),
        ({"ws_url": "not a url"}, ["ws_url"]),
        ({"ws_url": "ws://api.example.com/v1/ai/speech/stream"}, ["ws_url", "allow_insecure"]),
        ({"protocol_version": "2.0"}, ["protocol_version"]),
        ({"connect_timeout": 0}, ["connect_timeout"]),
        ({"max_retries": -1}, ["max_retries"]),
        ({"speed": 3}, ["speed", "0.25", "2.0"]),
        ({"speed": 0.1}, ["speed", "0.25", "2.0"]),
        ({"speed": float("nan")}, ["speed", "0.25", "2.0"]),
        ({"speed": "1.5"}, ["speed"]),
        ({"speed": True}, ["speed"]),
    ],
)
def test_bad_config_names_the_argument(kwargs: dict[str, object], names: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        LMNTTTS(api_key=SECRET, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    for name in names:
        assert name in message
    assert SECRET not in message


def test_insecure_url_allowed_when_asked_or_loopback() -> None:
    LMNTTTS(api_key=SECRET, ws_url="ws://10.1.2.3/x", allow_insecure=True)
    LMNTTTS(api_key=SECRET, ws_url="ws://localhost:1/x")
    LMNTTTS(api_key=SECRET, ws_url="ws://[::1]:1/x")


def test_key_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tts = LMNTTTS(api_key=SECRET, voice="leah")
    assert SECRET not in repr(tts)
    assert "leah" in repr(tts)
    assert SECRET not in str(vars(tts).get("_pool"))
    assert SECRET not in caplog.text


async def test_per_call_overrides_are_validated_and_do_not_stick() -> None:
    tts = LMNTTTS(api_key=SECRET)
    opts = tts._options("leah", sample_rate=16000, format="mp3")
    assert (opts.voice, opts.sample_rate, opts.format) == ("leah", 16000, "mp3")
    assert (tts.voice, tts.output_sample_rate, tts.format) == ("ava", 24000, "pcm_s16le")
    with pytest.raises(ValueError, match="sample_rate"):
        await tts.synthesize("hi", sample_rate=11025)
    assert SECRET not in repr(opts)


async def test_speed_goes_into_the_init_frame_only_when_given() -> None:
    """``speed=None`` (the default) leaves 1.0.30's init frame as it was; a speed is LMNT's
    ``speed`` field, as the server saw it, and the audio is shorter by its ratio."""
    from lmnt_local.server import LocalLMNTServer, ToneEngine

    from audio_helpers import active_span
    from track_helpers import TRACK_RATE, speak

    text = "Speed check, one two three."
    spans = []
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        for speed in (None, 1.0, 2.0):
            tts = LMNTTTS(api_key=SECRET, ws_url=srv.ws_url, speed=speed, warm_connection=False)
            try:
                start, end = active_span(await speak(tts, text), TRACK_RATE)
            finally:
                await tts.aclose()
            spans.append(end - start)
        inits = [s.init or {} for s in srv.sessions]
    assert len(inits) == 3
    assert "speed" not in inits[0]
    assert set(inits[0]) == set(inits[1]) - {"speed"}, "speed is the only field added"
    assert [i["speed"] for i in inits[1:]] == [1.0, 2.0]
    assert spans[0] == pytest.approx(spans[1], rel=0.01)
    assert spans[2] / spans[1] == pytest.approx(0.5, rel=0.02)
    opts = LMNTTTS(api_key=SECRET, speed=1.5)._options(speed=0.5)
    assert opts.speed == 0.5, "a per-call speed overrides, validated like the others"
    with pytest.raises(ValueError, match="speed"):
        LMNTTTS(api_key=SECRET)._options(speed=9)
