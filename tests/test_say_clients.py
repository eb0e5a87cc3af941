"""``lmnt-local say`` through either client (issue 18 item 3), against a real server over TCP.

``say`` speaks through the plugin (``LMNTTTS`` into the framework's track) when it is
installed, else through the bare protocol client of a server-only install
(``lmnt_local.cli.client``).  This environment has the plugin, so ``LMNT_LOCAL_SAY_CLIENT``
picks the path and every behaviour is checked on both: the same WAV, the same one-line errors,
partial audio kept when the server fails mid-stream, and ``--speed`` on the wire.  The
server-only install itself is ``tests/test_server_distribution.py``.
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from lmnt_local.cli.app import main
from lmnt_local.cli.client import CLIENT_ENV, to_track_pcm, use_plugin
from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine

from audio_helpers import active_span, estimate_pitch, s16_array
from env_helpers import clear_lmnt_env

pytestmark = pytest.mark.timeout(60)

RATE = 24000
CLIENTS = ("plugin", "bare")
TEXT = "Partial audio is still audio, and the user waited for it."  # 58 chars: 2.9 s of tone


@pytest.fixture(autouse=True)
def _no_lmnt_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_lmnt_env(monkeypatch)


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    monkeypatch.setenv(CLIENT_ENV, name)
    return name


def _read_wav(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        return bytes(w.readframes(w.getnframes()))


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _say(*args: str) -> int:
    return await asyncio.to_thread(main, ["say", *args])


# -- which client ------------------------------------------------------------------------------


def test_the_plugin_is_used_when_installed_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert use_plugin(), "the plugin is installed here: auto picks it"
    monkeypatch.setenv(CLIENT_ENV, "bare")
    assert not use_plugin()
    monkeypatch.setenv(CLIENT_ENV, "plugin")
    assert use_plugin()
    monkeypatch.setenv(CLIENT_ENV, "videosdk")
    assert main(["say", "hi", "--engine", "tone", "-o", str(tmp_path / "x.wav")]) == 2
    assert f"{CLIENT_ENV} must be auto, plugin or bare" in capsys.readouterr().err
    assert _names(tmp_path) == []


def test_the_bare_client_imports_no_videosdk(tmp_path: Path) -> None:
    """A server-only install has no ``videosdk``: the bare path must not import it (here it
    is made unimportable, as the server-only venv test has it truly absent)."""
    import subprocess
    import sys

    from env_helpers import subprocess_env

    out = tmp_path / "x.wav"
    code = (
        "import sys; sys.modules['videosdk'] = None\n"
        "from lmnt_local.cli.app import main\n"
        f"rc = main(['say', 'Hello there.', '--engine', 'tone', '-o', {str(out)!r}])\n"
        "assert not [m for m in sys.modules if m.startswith('videosdk.')], 'videosdk imported'\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert estimate_pitch(_read_wav(tmp_path / "x.wav"), RATE) == pytest.approx(440, rel=0.01)


# -- the same audio ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "rate"),
    [("pcm_s16le", 24000), ("pcm_f32le", 16000), ("ulaw", 8000), ("mp3", 24000), ("webm", 24000)],
)
async def test_every_format_becomes_the_same_24khz_wav(
    client: str, tmp_path: Path, fmt: str, rate: int
) -> None:
    out = tmp_path / "x.wav"
    text = "Format check."
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        args = [text, "--ws-url", srv.ws_url, "--format", fmt, "--sample-rate", str(rate)]
        assert await _say(*args, "-o", str(out), "-q") == 0
        [session] = srv.sessions
    assert session.init is not None and session.init["format"] == fmt
    pcm = _read_wav(out)
    assert estimate_pitch(pcm, RATE) == pytest.approx(440.0, rel=0.01)
    start, end = active_span(pcm, RATE)
    assert end - start == pytest.approx(ToneEngine().duration_of(text), abs=0.03)


def test_pcm_is_resampled_not_repeated() -> None:
    """8 kHz s16 becomes 24 kHz with the same tone and duration (soxr, not sample repeats)."""
    t = np.arange(8000) / 8000
    tone = (np.sin(2 * np.pi * 440 * t) * 16000).astype("<i2").tobytes()
    out = to_track_pcm(tone, "pcm_s16le", 8000)
    assert abs(len(out) // 2 - RATE) <= 2
    assert estimate_pitch(out, RATE) == pytest.approx(440.0, rel=0.01)
    # Repeating samples would leave every third difference at zero; a resampler does not.
    diffs = np.diff(s16_array(out).astype(np.int32))
    assert np.count_nonzero(diffs == 0) < diffs.size // 10


# -- the same errors ---------------------------------------------------------------------------


async def test_both_clients_fail_with_the_same_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Wrong key, nobody listening, clear text to a public host: one identical line each."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"ws://127.0.0.1:{s.getsockname()[1]}/v1/ai/speech/stream"
    lines: dict[str, list[str]] = {}
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={"the-right-key"}) as srv:
        for name in CLIENTS:
            monkeypatch.setenv(CLIENT_ENV, name)
            out = str(tmp_path / "x.wav")
            codes = [
                await _say("hi", "--ws-url", srv.ws_url, "--api-key", "wrong-key-5150", "-o", out),
                await _say("hi", "--ws-url", closed, "-o", out),
                await _say(
                    "hi",
                    "--ws-url",
                    "ws://192.0.2.1:8765/v1/ai/speech/stream",
                    "--api-key",
                    "real-key-8086",
                    "-o",
                    out,
                ),
            ]
            assert codes == [1, 1, 2]
            lines[name] = capsys.readouterr().err.splitlines()
    assert lines["plugin"] == lines["bare"]
    auth, unreachable, insecure = lines["bare"]
    assert "refused the API key" in auth and "check --api-key" in auth
    assert unreachable.startswith("lmnt-local: could not connect to LMNT at ws://127.0.0.1:")
    assert "--allow-insecure" in insecure
    for line in lines["bare"]:
        assert "wrong-key-5150" not in line and "real-key-8086" not in line
    assert _names(tmp_path) == []


# -- partial audio -----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["pcm_s16le", "mp3"])
async def test_a_failure_mid_stream_keeps_the_audio_received(
    client: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """The server errors after ~1 s of audio: the WAV holds that second (the tone, up to where
    it stopped), stderr says it is partial and why, and the exit code is 1."""
    out = tmp_path / "x.wav"
    cut = 48_000 if fmt == "pcm_s16le" else 6_000  # bytes: 1 s of s16 at 24 kHz / of 48 kbit/s mp3
    faults = Faults(error_after_bytes=(cut, "engine exploded"))
    async with LocalLMNTServer(engine=ToneEngine(), faults=faults) as srv:
        args = [TEXT, "--ws-url", srv.ws_url, "--format", fmt, "-o", str(out), "-q"]
        assert await _say(*args) == 1
        # The session whose audio was kept: the last one.  When the error overtakes the audio
        # (it is sent once the bytes are out, and may be read before any of them is played),
        # the plugin counts it a failure before audio and retries the turn on a new connection.
        session = [s for s in srv.sessions if s.texts][-1]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    [line] = lines
    assert line.startswith("lmnt-local: the server failed after ")
    assert "engine exploded" in line and f"wrote the partial audio received to {out}" in line
    pcm = _read_wav(out)
    assert estimate_pitch(pcm, RATE) == pytest.approx(440.0, rel=0.01)
    full = ToneEngine().duration_of(TEXT)
    got = len(pcm) / 2 / RATE
    assert 0.3 < got < full * 0.75, f"{got:.2f} s of {full:.2f} s: partial, but not nothing"
    if fmt == "pcm_s16le":
        sent = session.audio_bytes_sent // 2
        assert sent <= len(pcm) // 2 < sent + RATE // 50, "all that was sent, padded to a frame"
    assert _names(tmp_path) == ["x.wav"], "no temporary file left"


async def test_a_later_turn_failing_keeps_the_earlier_turns(
    client: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long text is several turns (connections); when the second fails before any of its
    audio, the first turn's audio is still kept and marked partial."""
    from lmnt_local.cli import speak as cli_speak

    monkeypatch.setattr(cli_speak, "TURN_CHARS", 40)
    monkeypatch.setattr(cli_speak, "CHUNK_CHARS", 15)
    text = "One two three. Four five six seven. Eight nine ten eleven. Twelve thirteen."
    out = tmp_path / "x.wav"
    # The first connection's audio is held back a little, time enough to arm the failure for
    # every later connection (faults are read when a connection arrives).
    async with LocalLMNTServer(engine=ToneEngine(), faults=Faults(processing_delay=0.3)) as srv:
        say = asyncio.create_task(_say(text, "--ws-url", srv.ws_url, "-o", str(out), "-q"))
        async with asyncio.timeout(10):
            while not srv.sessions:
                await asyncio.sleep(0.005)
        srv.faults = Faults(error_before_audio="engine exploded")
        assert await say == 1
        first = srv.sessions[0]
    [line] = capsys.readouterr().err.splitlines()
    assert "engine exploded" in line and "partial audio" in line
    start, end = active_span(_read_wav(out), RATE)
    assert end - start == pytest.approx(ToneEngine().duration_of(first.text.strip()), abs=0.03)


async def test_a_failure_before_audio_writes_nothing(
    client: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = Faults(error_before_audio="engine exploded")
    async with LocalLMNTServer(engine=ToneEngine(), faults=faults) as srv:
        assert await _say(TEXT, "--ws-url", srv.ws_url, "-o", str(tmp_path / "x.wav")) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "engine exploded" in line and "partial" not in line
    assert _names(tmp_path) == []


# -- speed -------------------------------------------------------------------------------------


async def test_speed_reaches_the_init_frame_and_halves_the_audio(
    client: str, tmp_path: Path
) -> None:
    spans = {}
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        for speed in (None, "1.0", "2.0"):
            out = tmp_path / f"{speed}.wav"
            extra = ["--speed", speed] if speed else []
            assert await _say(TEXT, "--ws-url", srv.ws_url, *extra, "-o", str(out), "-q") == 0
            start, end = active_span(_read_wav(out), RATE)
            spans[speed] = end - start
        inits = [s.init for s in srv.sessions]
    assert all(i is not None for i in inits)
    assert "speed" not in inits[0], "no --speed: the field is not sent (the server's default)"  # type: ignore[operator]
    assert [i["speed"] for i in inits[1:]] == [1.0, 2.0]  # type: ignore[index]
    assert spans[None] == pytest.approx(spans["1.0"], rel=0.01)
    assert spans["2.0"] / spans["1.0"] == pytest.approx(0.5, rel=0.02)


async def test_speed_slows_real_speech(tmp_path: Path) -> None:
    """espeak-ng at 0.5 and 2.0: the ratio of speech durations follows the pace."""
    from lmnt_local.server.engines.espeak import EspeakEngine

    spans = {}
    async with LocalLMNTServer(engine=EspeakEngine()) as srv:
        for speed in ("0.5", "2.0"):
            out = tmp_path / f"{speed}.wav"
            assert (
                await _say(TEXT, "--ws-url", srv.ws_url, "--speed", speed, "-o", str(out), "-q")
                == 0
            )
            start, end = active_span(_read_wav(out), RATE)
            spans[speed] = end - start
    assert spans["0.5"] / spans["2.0"] > 2.5  # 4x the pace; espeak's pauses scale less


@pytest.mark.parametrize("value", ["3", "0.1", "nan", "fast"])
def test_speed_out_of_range_is_a_usage_error(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["say", "hi", "--engine", "tone", "--speed", value, "-o", str(tmp_path / "x.wav")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "between 0.25 and 2.0" in err or "not a number" in err
    assert _names(tmp_path) == []


async def test_the_bare_client_reports_what_a_server_said_before_closing_mid_send() -> None:
    """A server that says why it refuses and drops the connection while the bare client is
    still sending (a failing server process does this): the client reports the server's
    message, never its own write error ("Cannot write to closing transport" crashed ``say``
    with a traceback; found by CI, 100 of 100 attempts against this server before the fix)."""
    from aiohttp import web

    from lmnt_local.cli.client import ClientFailure, speak_bare

    async def refuse(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str('{"error": "voice not found"}')
        assert request.transport is not None
        request.transport.abort()  # gone at once
        return ws

    app = web.Application()
    app.router.add_get("/v1/ai/speech/stream", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ai/speech/stream"
    try:
        for _ in range(5):
            with pytest.raises(ClientFailure) as failed:
                async with asyncio.timeout(20):
                    await speak_bare("Hello there. " * 50, ws_url=url, api_key="k")
            assert "voice not found" in str(failed.value)
    finally:
        await runner.cleanup()
