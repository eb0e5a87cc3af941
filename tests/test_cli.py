"""``lmnt-local``: what a user types, what they hear, and how it fails.

Most tests call ``main([...])`` in-process (in a plain test, or through ``asyncio.to_thread``
when the test's own loop runs a server, since ``main`` calls ``asyncio.run``); a few run the
console path as a subprocess (``python -m lmnt_local.cli.app`` with ``src`` on
``PYTHONPATH``), because exit codes, signals and stdout/stderr are what scripts see.  Audio is
judged by measurement, not by trusting the CLI's own report: speech must last as long as its
words take at espeak's pace, be loud, and have a spectrum no tone has; the tone engine must come
out bit-exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import signal
import socket
import subprocess
import sys
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import numpy.typing as npt
import pytest

from lmnt_local.cli.app import main
from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine

from audio_helpers import active_span, estimate_pitch, s16_array
from env_helpers import clear_lmnt_env, subprocess_env

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
RATE = 24000  # the WAV is what the framework's track plays
FRAME = RATE // 50  # the track's 20 ms frame: every turn ends on one

PARAGRAPH = (
    "Local speech synthesis lets a voice agent run its whole pipeline on one machine. "
    "Nothing leaves the network, and tests do not depend on a paid service being up. "
    "The engine splits long text into sentences and speaks them one after another, "
    "so the first sentence is already on its way while the next one is being made."
)
LONG_TEXT = "\n\n".join(
    [
        PARAGRAPH,
        "Each chunk of audio carries the words that start inside it, with their times in "
        "seconds, so a caption track can follow the speech without guessing where the words "
        "fall. Concurrent sessions take turns sentence by sentence on a single worker thread, "
        "which keeps a library that is not re-entrant from crashing the whole process.",
        "Robotic as it sounds, the voice is intelligible and its timing is real. That is "
        "enough to exercise interruptions, flushing, captions and pacing from end to end. "
        "A neural engine could sit behind the same interface whenever quality matters more, "
        "and nothing in the plugin or in the agent would have to change for it.",
    ]
)


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_lmnt_env(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_lmnt_env(monkeypatch)


_env = subprocess_env


def _cli(
    *args: str, stdin: str | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """The console path: a fresh interpreter, real exit code, real stdout/stderr."""
    return subprocess.run(
        [sys.executable, "-m", "lmnt_local.cli.app", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=timeout,
        check=False,
    )


def _read_wav(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        return w.readframes(w.getnframes())


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _closed_port() -> int:
    """A loopback port nothing listens on (bound then released: refused, not filtered)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _spectral_flatness(pcm: bytes) -> float:
    """Median Wiener entropy of the loud 1024-sample windows: ~0 for a tone, far above for a
    voice (harmonics, formants and fricative noise spread the power)."""
    x = s16_array(pcm).astype(np.float64)
    n = 1024
    window = np.hanning(n)
    values = []
    for i in range(0, x.size - n, n):
        seg = x[i : i + n]
        if np.sqrt(np.mean(seg**2)) < 0.01 * 32768:
            continue
        power = np.abs(np.fft.rfft(seg * window)) ** 2 + 1e-9
        values.append(np.exp(np.mean(np.log(power))) / np.mean(power))
    assert values, "no loud windows"
    return float(np.median(values))


def _dominant_frequencies(pcm: bytes, seconds: float = 0.05) -> npt.NDArray[np.float64]:
    """The dominant frequency of every loud 50 ms window: constant for a tone, all over the
    place for speech (pitch moves, vowels and consonants put the peak elsewhere)."""
    x = s16_array(pcm)
    n = round(seconds * RATE)
    out = []
    for i in range(0, x.size - n, n):
        seg = x[i : i + n]
        if np.sqrt(np.mean(seg.astype(np.float64) ** 2)) > 0.05 * 32768:
            out.append(estimate_pitch(seg.tobytes(), RATE))
    return np.array(out)


def _assert_speech(pcm: bytes, words: int) -> None:
    """Speech of ``words`` words at a talker's pace (espeak's 175 wpm, Piper joe's ~180), loud,
    and nothing like a tone."""
    start, end = active_span(pcm, RATE)
    wpm = words / (end - start) * 60
    assert 150 <= wpm <= 215, f"{words} words in {end - start:.2f} s = {wpm:.0f} wpm"
    x = s16_array(pcm)[round(start * RATE) : round(end * RATE)].astype(np.float64)
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(x**2)) / 32768)
    assert rms_dbfs > -30, f"RMS {rms_dbfs:.1f} dBFS: too quiet to be the voice"
    assert _spectral_flatness(pcm) > 1e-4
    peaks = _dominant_frequencies(pcm)
    assert peaks.size > 10
    assert np.std(peaks) / np.mean(peaks) > 0.1, "the spectrum peak hardly moves: a tone?"
    assert len(np.unique(np.round(peaks / 25))) > 5


# -- say: what comes out -----------------------------------------------------------------------


def test_say_writes_speech_from_the_embedded_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default engine: the best installed, hibari's heart voice with the [test] extra (it
    speaks at a natural pace, so the same pace bounds as espeak's hold)."""
    out = tmp_path / "hello.wav"
    assert main(["say", PARAGRAPH, "-o", str(out)]) == 0
    pcm = _read_wav(out)
    _assert_speech(pcm, len(PARAGRAPH.split()))
    assert len(pcm) // 2 % FRAME == 0
    err = capsys.readouterr().err
    # The auto engine names every engine and what speaks LMNT's names.
    assert "speech engine: auto: " in err and "Piper (en_US-joe-medium" in err
    assert f"wrote {out}" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == [out], "no temporary file left behind"


def test_tone_engine_is_440_hz_and_50_ms_per_character(tmp_path: Path) -> None:
    text = "Hi. How are you today? Fine!"  # 28 characters: 1.4 s, not a whole 20 ms frames
    out = tmp_path / "tone.wav"
    assert main(["say", text, "--engine", "tone", "-o", str(out), "-q"]) == 0
    pcm = _read_wav(out)
    expected, _ = ToneEngine().render(text, RATE)
    assert len(expected) == round(len(text) * 0.05 * RATE)
    got = s16_array(pcm)
    # Exactly the engine's samples (pcm_s16le at the track's rate is an identity path), then
    # silence up to the next whole frame.
    assert got.size == -(-expected.size // FRAME) * FRAME
    assert np.array_equal(got[: expected.size], expected)
    assert not got[expected.size :].any()
    assert estimate_pitch(pcm, RATE) == pytest.approx(440.0, rel=0.01)
    start, end = active_span(pcm, RATE)
    assert end - start == pytest.approx(len(text) * 0.05, abs=0.001)


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 16000), ("ulaw", 8000), ("pcm_f32le", 24000)])
async def test_format_and_rate_reach_the_server_and_decode(
    tmp_path: Path, fmt: str, rate: int
) -> None:
    out = tmp_path / "tone.wav"
    text = "Format check."
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        args = ["say", text, "--ws-url", srv.ws_url, "--format", fmt, "--sample-rate", str(rate)]
        assert await asyncio.to_thread(main, [*args, "-o", str(out), "-q"]) == 0
        [session] = srv.sessions  # one utterance, one connection: no warm spare for a CLI
    assert session.init is not None
    assert (session.init["format"], session.init["sample_rate"]) == (fmt, rate)
    assert session.init["X-API-Key"] == "***"
    pcm = _read_wav(out)
    assert estimate_pitch(pcm, RATE) == pytest.approx(440.0, rel=0.01)
    start, end = active_span(pcm, RATE)
    assert end - start == pytest.approx(ToneEngine().duration_of(text), abs=0.03)


async def test_wav_holds_all_the_audio_the_server_sent(tmp_path: Path) -> None:
    """No truncation: a few paragraphs of espeak speech, sample for sample what was sent."""
    from lmnt_local.server.engines.espeak import EspeakEngine

    out = tmp_path / "long.wav"
    async with LocalLMNTServer(engine=EspeakEngine()) as srv:
        args = ["say", LONG_TEXT, "--ws-url", srv.ws_url, "-o", str(out), "-q"]
        assert await asyncio.to_thread(main, args) == 0
        [session] = srv.sessions
    assert session.text == LONG_TEXT, "the text reached the server whole and in order"
    assert session.close_code == 1000
    sent = session.audio_bytes_sent // 2
    played = len(_read_wav(out)) // 2
    assert sent > 40 * RATE  # about 168 words at ~180 wpm
    assert sent <= played < sent + FRAME, "the WAV is what the server sent, padded to a frame"


def test_long_text_from_stdin_shows_progress_and_speaks(tmp_path: Path) -> None:
    out = tmp_path / "long.wav"
    # espeak: ~1 minute of speech in well under a second (the neural default would take
    # seconds of CPU; test_say_writes_speech_from_the_embedded_server covers the default).
    result = _cli("say", "-o", str(out), "--engine", "espeak", stdin=LONG_TEXT + "\n")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    words = len(LONG_TEXT.split())
    assert lines[0] == "lmnt-local: speech engine: espeak"  # the engine is named first
    assert lines[1] == (
        f"lmnt-local: speaking {len(LONG_TEXT):,} characters ({words:,} words) "
        "via the embedded local server"
    )
    assert any("first audio after" in line for line in lines)
    assert lines[-1].startswith(f"lmnt-local: wrote {out}: ")
    assert "\r" not in result.stderr, "not a terminal: whole lines, no carriage returns"
    _assert_speech(_read_wav(out), len(LONG_TEXT.split()))


async def test_text_beyond_one_turn_is_spoken_in_several(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A book chapter must not hit a server's per-session text limit: it becomes several turns
    of sentence-sized messages, and nothing is lost or reordered between them."""
    from lmnt_local.cli import speak as cli_speak

    monkeypatch.setattr(cli_speak, "TURN_CHARS", 40)
    monkeypatch.setattr(cli_speak, "CHUNK_CHARS", 15)
    text = "One two three. Four five six seven. Eight nine ten eleven. Twelve thirteen."
    out = tmp_path / "turns.wav"
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        args = ["say", text, "--ws-url", srv.ws_url, "-o", str(out), "-q"]
        assert await asyncio.to_thread(main, args) == 0
        sessions = srv.sessions
    assert len(sessions) == 2
    # Within a turn the plugin coalesces the pieces (see sending.py): the turn is the bound.
    assert all(len(s.text) <= 40 for s in sessions)
    assert "".join(s.text for s in sessions) == text
    start, end = active_span(_read_wav(out), RATE)
    # Each turn ends on a whole 20 ms frame, so a turn boundary may add up to one frame.
    assert len(text) * 0.05 - 0.001 <= end - start < len(text) * 0.05 + 0.02


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_sigterm_during_say_leaves_no_partial_file(tmp_path: Path) -> None:
    """Killed mid-speech (the server paces audio at real time here), say exits 143 after
    closing its connection and removing its temporary file."""
    out = tmp_path / "x.wav"
    async with LocalLMNTServer(engine=ToneEngine(), faults=Faults(pace=1.0)) as srv:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lmnt_local.cli.app", "say", "x" * 300,
            "--ws-url", srv.ws_url, "-o", str(out),
            stderr=subprocess.PIPE, env=_env(),
        )  # fmt: skip
        assert proc.stderr is not None
        async with asyncio.timeout(15):
            while b"first audio" not in await proc.stderr.readline():
                pass
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 143
            await srv.sessions[0].done.wait()
    assert srv.sessions[0].closed_by == "client"
    assert _names(tmp_path) == []


def test_say_writes_a_wav_to_stdout() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lmnt_local.cli.app", "say", "abcd", "--engine", "tone",
         "-o", "-", "-q"],
        capture_output=True, env=_env(), timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout[:4] == b"RIFF" and result.stdout[8:12] == b"WAVE"
    assert len(result.stdout) == 44 + 2 * round(4 * 0.05 * RATE)


# -- say: how it fails -------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_text_is_a_usage_error(
    tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    out = tmp_path / "x.wav"
    assert main(["say", "-o", str(out)]) == 2
    assert main(["say", text or "-", "-o", str(out)]) == 2
    assert "no text to speak" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample-rate", "44100"], "invalid choice: 44100"),
        (["--sample-rate", "fast"], "invalid int value"),
        (["--format", "wav"], "invalid choice: 'wav'"),
        (["--ws-url", "http://127.0.0.1:1/x"], "ws:// or wss://"),
        (["--engine", "tone", "--ws-url", "ws://127.0.0.1:1/x"], "cannot be combined"),
    ],
)
def test_bad_options_exit_2(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["say", "hello", "-o", str(tmp_path / "x.wav"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_console_exit_codes_and_one_line_errors(tmp_path: Path) -> None:
    bad_rate = _cli("say", "hello", "--sample-rate", "44100", "-o", str(tmp_path / "a.wav"))
    assert bad_rate.returncode == 2
    assert "invalid choice: 44100" in bad_rate.stderr
    url = f"ws://127.0.0.1:{_closed_port()}/v1/ai/speech/stream"
    unreachable = _cli("say", "hello", "--ws-url", url, "-o", str(tmp_path / "b.wav"))
    assert unreachable.returncode == 1
    [line] = unreachable.stderr.splitlines()
    assert line.startswith("lmnt-local: could not connect to LMNT at ws://127.0.0.1:")
    assert _names(tmp_path) == []


async def test_unwritable_output_fails_before_speaking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        for target in (tmp_path / "missing" / "x.wav", tmp_path / "file" / "x.wav", tmp_path):
            args = ["say", "hello", "--ws-url", srv.ws_url, "-o", str(target)]
            assert await asyncio.to_thread(main, args) == 1
        assert srv.sessions == [], "nothing was synthesized for a file that cannot be written"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert all(line.startswith("lmnt-local: cannot write ") for line in err)
    assert _names(tmp_path) == ["file"]


async def test_wrong_key_is_named_but_not_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.wav"
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={"the-right-key"}) as srv:
        wrong = ["say", "hello", "--ws-url", srv.ws_url, "--api-key", "wrong-key-5150"]
        assert await asyncio.to_thread(main, [*wrong, "-o", str(out)]) == 1
        [line] = capsys.readouterr().err.splitlines()
        assert "refused the API key" in line and "--api-key" in line
        assert "wrong-key-5150" not in line and "the-right-key" not in line
        # None given to a loopback server: a placeholder is tried and the hint says so.
        keyless = ["say", "hello", "--ws-url", srv.ws_url, "-o", str(out)]
        assert await asyncio.to_thread(main, keyless) == 1
        assert "no API key was given" in capsys.readouterr().err
        right = ["say", "hello", "--ws-url", srv.ws_url, "--api-key", "the-right-key"]
        assert await asyncio.to_thread(main, [*right, "-o", str(out), "-q"]) == 0
    assert out.exists()


def test_remote_server_without_key_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.wav"
    assert main(["say", "hello", "--ws-url", "wss://tts.example.com/v1/ai/speech/stream",
                 "-o", str(out)]) == 2  # fmt: skip
    assert "API key is needed" in capsys.readouterr().err
    assert not out.exists()


def test_no_key_in_clear_text_to_a_remote_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LMNT_API_KEY", "real-key-8086")
    say = ["say", "hi", "--ws-url", "ws://192.0.2.1:8765/v1/ai/speech/stream", "-o"]
    assert main([*say, str(tmp_path / "x.wav")]) == 2
    assert "--allow-insecure" in capsys.readouterr().err
    assert main(["voices", "--url", "http://192.0.2.1:8765"]) == 2
    err = capsys.readouterr().err
    assert "--allow-insecure" in err and "real-key-8086" not in err
    assert _names(tmp_path) == []


async def test_failure_mid_stream_keeps_the_audio_and_says_it_is_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plugin only emits "error" once audio flowed (an agent keeps what was heard); say
    keeps it too, but never silently: the exit code is 1 and the line says it is partial (both
    clients: tests/test_say_clients.py)."""
    out = tmp_path / "x.wav"
    faults = Faults(error_after_bytes=(20_000, "engine exploded"))
    async with LocalLMNTServer(engine=ToneEngine(), faults=faults) as srv:
        args = ["say", PARAGRAPH, "--ws-url", srv.ws_url, "-o", str(out), "-q"]
        assert await asyncio.to_thread(main, args) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("lmnt-local: the server failed after ")
    assert "engine exploded" in line and "partial audio" in line
    assert _names(tmp_path) == ["x.wav"]
    assert 10_000 <= len(_read_wav(out)) // 2 < ToneEngine().duration_of(PARAGRAPH) * RATE / 2


# -- voices ------------------------------------------------------------------------------------


def test_voices_of_the_embedded_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["voices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The auto engine routes each name to a voice of its gender ([test] installs hibari's
    # female heart and Piper's male joe), and the list says which voice speaks it.
    assert lines[0].split()[:3] == ["ava", "female", "en"] and "hibari voice heart" in lines[0]
    morgan = next(line for line in lines if line.startswith("morgan "))
    assert morgan.split()[:3] == ["morgan", "male", "en"] and "en_US-joe-medium" in morgan
    assert {line.split()[0] for line in lines} >= {"ava", "morgan", "heart", "en_US-joe-medium"}


def test_voices_of_the_espeak_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["voices", "--engine", "espeak"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["ava", "female"]
    assert {line.split()[0] for line in lines} >= {"ava", "morgan"}


async def test_voices_of_a_server_by_url_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    async with LocalLMNTServer(engine=ToneEngine()) as srv:
        assert await asyncio.to_thread(main, ["voices", "--url", srv.ws_url, "--json"]) == 0
    voices = json.loads(capsys.readouterr().out)
    assert "ava" in [v["id"] for v in voices]
    url = f"http://127.0.0.1:{_closed_port()}"
    assert await asyncio.to_thread(main, ["voices", "--url", url]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("lmnt-local: cannot list voices at ")


async def test_voices_with_a_wrong_key_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    async with LocalLMNTServer(engine=ToneEngine(), api_keys={"the-right-key"}) as srv:
        args = ["voices", "--url", srv.http_url, "--api-key", "wrong-key-5150"]
        assert await asyncio.to_thread(main, args) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert "refused the API key" in line and "wrong-key-5150" not in line


# -- serve -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "70000"], "port must be 0-65535"),
        (["--port", "http"], "not a port number"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--api-key", " "], "cannot be empty"),
        (["--engine", "kokoro"], "invalid choice: 'kokoro'"),
    ],
)
def test_serve_bad_options_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_serve_unloadable_tls_files_fail_with_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing.pem")
    assert main(["serve", "--port", "0", "--tls-cert", missing, "--tls-key", missing]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("lmnt-local: cannot load --tls-cert/--tls-key: ")


@contextlib.contextmanager
def _serve(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``lmnt-local serve --port 0 ...`` in a subprocess; yields it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmnt_local.cli.app", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
    try:
        try:
            first = lines.get(timeout=15)
        except queue.Empty:
            pytest.fail("serve printed no URL within 15 s")
        assert first.startswith("LMNT-compatible server on "), first
        yield proc, first.split()[-1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _stops_within(proc: subprocess.Popen[str], sig: signal.Signals, seconds: float) -> None:
    proc.send_signal(sig)
    try:
        assert proc.wait(seconds) == 0
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve did not stop within {seconds} s of {sig.name}")
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "stopping" in err and "Traceback" not in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_serve_port_0_prints_the_real_port_serves_say_and_stops_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with _serve("--engine", "tone", "--api-key", "key-one", "--api-key", "key-two") as (proc, url):
        parts = urlsplit(url)
        assert (parts.scheme, parts.hostname, parts.path) == (
            "ws", "127.0.0.1", "/v1/ai/speech/stream",
        )  # fmt: skip
        assert parts.port not in (None, 0)
        with socket.create_connection(("127.0.0.1", parts.port), timeout=2):
            pass  # the printed port is the one listening
        out = tmp_path / "served.wav"
        text = "Served."
        # Any of the repeated keys is accepted; a wrong one is refused.
        assert main(["say", text, "--ws-url", url, "--api-key", "key-two", "-o", str(out)]) == 0
        bad = ["say", text, "--ws-url", url, "--api-key", "key-three", "-o", str(out)]
        assert main(bad) == 1
        assert "refused the API key" in capsys.readouterr().err
        _stops_within(proc, signal.SIGTERM, 2.0)
    start, end = active_span(_read_wav(out), RATE)
    assert end - start == pytest.approx(len(text) * 0.05, abs=0.001)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_serve_over_tls_and_stop_on_sigint(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_pem, ca_pem = tmp_path / "server.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    tls = ("--tls-cert", str(server_pem), "--tls-key", str(server_pem), "--engine", "tone")
    with _serve(*tls) as (proc, url):
        assert url.startswith("wss://127.0.0.1:")
        out = tmp_path / "tls.wav"
        args = ["say", "Secure.", "--ws-url", url, "--ca-file", str(ca_pem), "-o", str(out)]
        assert main([*args, "-q"]) == 0
        assert estimate_pitch(_read_wav(out), RATE) == pytest.approx(440.0, rel=0.01)
        https = "https" + url.removeprefix("wss")
        assert main(["voices", "--url", https, "--ca-file", str(ca_pem)]) == 0
        # Without the CA the certificate cannot be verified: a failure, not a traceback.
        assert main(["say", "Secure.", "--ws-url", url, "-o", str(out), "-q"]) == 1
        _stops_within(proc, signal.SIGINT, 2.0)


def test_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--engine", "tone"]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line == f"lmnt-local: cannot listen on 127.0.0.1:{port}: Address already in use"
