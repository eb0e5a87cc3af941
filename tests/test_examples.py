"""The examples work as their docstrings say.

``offline_conversation.py`` runs the framework's real Agent + AgentSession + Pipeline with no
room, no key and no network: checked in-process (with a guard that refuses any non-loopback
connection) and as a command, and the WAV it writes is checked for format, length and sound.
``agent.py`` needs real VideoSDK credentials, so it is only imported and its wiring checked.
"""

from __future__ import annotations

import ast
import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import wave
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from lmnt_local.server import ToneEngine
from lmnt_local.server.text.frontend import Spoken, TextFrontEnd
from videosdk.plugins.lmnt import LMNTTTS

from audio_helpers import active_span, estimate_pitch
from env_helpers import SOURCES, refuse_non_loopback

pytestmark = pytest.mark.timeout(30)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RATE = 24000


def load(name: str) -> ModuleType:
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
        return w.readframes(w.getnframes())


def loud_fraction(pcm: bytes, threshold: float = 0.02) -> float:
    """Share of 20 ms frames whose peak is above ``threshold`` of full scale."""
    x = np.frombuffer(pcm, dtype="<i2")
    frames = x[: len(x) // 480 * 480].reshape(-1, 480)
    return float((np.abs(frames.astype(np.int32)).max(axis=1) > threshold * 32768).mean())


@pytest.fixture
def offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VideoSDK or LMNT credentials and no endpoint override: the example must not need any."""
    for name in ("VIDEOSDK_AUTH_TOKEN", "VIDEOSDK_API_KEY", "VIDEOSDK_SECRET_KEY",
                 "LMNT_API_KEY", "LMNT_WS_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record) every DNS lookup or connection that is not to a loopback address."""
    return refuse_non_loopback(monkeypatch)


# -- offline_conversation.py ---------------------------------------------------------------


async def test_offline_conversation_with_the_tone_engine(
    tmp_path: Path, offline_env: None, loopback_only: list[Any]
) -> None:
    """The tone engine makes the expected audio exact: 50 ms per character the server got."""
    example = load("offline_conversation")
    out = tmp_path / "conversation.wav"
    result = await example.run(str(out), engine="tone", time_limit=10)
    assert loopback_only == []
    assert result.elapsed < 5

    # The conversation: greeting, then two user turns, each answered from the script.
    agent_lines = [u.text for u in result.utterances if u.speaker == "agent"]
    user_lines = [u.text for u in result.utterances if u.speaker == "user"]
    assert agent_lines == [example.GREETING, *(reply for _, reply in example.SCRIPT)]
    assert user_lines == [user for user, _ in example.SCRIPT]
    # Every word reached the local server, sentences joined with a space.
    assert [" ".join(t.split()) for t in result.server_texts] == agent_lines

    pcm = read_wav(out)
    assert len(pcm) / 2 / RATE == pytest.approx(result.seconds, abs=1e-6)
    tone = ToneEngine()
    front = TextFrontEnd(tone)  # what the server's text front-end hands the engine
    spoken = [u for u in result.utterances if u.speaker == "agent"]
    for utterance, sent in zip(spoken, result.server_texts, strict=True):
        said = "".join(p.text for p in front.prepare(sent) if isinstance(p, Spoken))
        assert "LMNT" not in said or "LMNT" not in sent  # "LMNT" is said "lament"
        # Each turn is the tone of what the engine was given, padded to a whole 20 ms frame.
        assert -1e-6 < utterance.seconds - tone.duration_of(said) < 0.02 + 1e-6, utterance
    pauses = example.PAUSE * len(example.SCRIPT)
    assert result.seconds == pytest.approx(sum(u.seconds for u in spoken) + pauses, abs=1e-3)
    assert abs(estimate_pitch(pcm, RATE) - 440) < 4.4
    assert 0.5 < loud_fraction(pcm) < 0.95  # tone between word gaps and pauses
    start, _ = active_span(pcm, RATE)
    assert start < 0.01  # the greeting starts the file


async def test_offline_conversation_speaks_with_espeak(
    tmp_path: Path, offline_env: None, loopback_only: list[Any]
) -> None:
    from lmnt_local.server.engines.espeak import EspeakEngine

    if not EspeakEngine.available():
        pytest.skip("espeak-ng is not installed (the 'local' extra)")
    example = load("offline_conversation")
    out = tmp_path / "speech.wav"
    # Pinned: "auto" is now the neural engine where installed (its own tests cover it).
    result = await example.run(str(out), engine="espeak", time_limit=10)
    assert result.engine == "espeak" and loopback_only == []
    pcm = read_wav(out)
    words = sum(len(u.text.split()) for u in result.utterances if u.speaker == "agent")
    speech = result.seconds - example.PAUSE * len(example.SCRIPT)
    # Plausible speech: espeak talks at ~175 words a minute, i.e. ~0.35 s a word.
    assert 0.15 * words < speech < 0.8 * words, (speech, words)
    assert all(u.seconds > 0.5 for u in result.utterances if u.speaker == "agent")
    assert loud_fraction(pcm) > 0.4  # speech, not silence or clicks
    rms = float(np.sqrt(np.mean(np.frombuffer(pcm, dtype="<i2").astype(np.float64) ** 2)))
    assert rms > 300


def test_docstrings_name_the_engine_that_really_speaks() -> None:
    """Each example's docstring names the engine ``auto`` picks (``serve``'s default and the
    offline example's) before the fallbacks, checked against the selection itself, and never
    claims espeak-ng speaks by default where a neural engine is installed (issue 18 item 3)."""
    from lmnt_local.server.engines import make_engine
    from lmnt_local.server.engines.select import best_engine

    chosen = best_engine()
    offline = load("offline_conversation")
    assert offline.pick_engine("auto").name == chosen.name == make_engine("auto").name
    route = getattr(chosen, "route", None)
    if callable(route):  # auto is a router: what speaks the default voice (ava) is the engine
        speaks = route("ava", "auto")
        picked, voice = speaks.engine, speaks.voice
    else:
        picked = chosen
        voice = next(v.id for v in picked.voices() if "alias" not in v.tags)
    if picked.name in ("espeak", "tone"):
        pytest.skip("no neural engine is installed (the 'local' extra)")
    for name in ("agent", "offline_conversation"):
        doc = " ".join(
            (ast.get_docstring(ast.parse((EXAMPLES / f"{name}.py").read_text())) or "").split()
        )
        # The engine auto picks is named first, with its voice.
        assert picked.name in doc and voice in doc, name
        assert doc.index(picked.name) < doc.index("espeak-ng"), name
        assert "espeak-ng speech when" not in doc and "speech by espeak-ng" not in doc, name
    serve = subprocess.run(
        [sys.executable, "-m", "lmnt_local.cli.app", "serve", "--help"],
        capture_output=True, text=True, timeout=30, check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(SOURCES)},
    )  # fmt: skip
    assert "(default auto: the best one installed" in " ".join(serve.stdout.split())


def test_offline_conversation_command(tmp_path: Path) -> None:
    """As a user runs it: a fresh interpreter, exit status 0, the WAV where ``-o`` said."""
    out = tmp_path / "cli.wav"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDEOSDK_", "LMNT_"))}
    env["PYTHONPATH"] = os.pathsep.join([*SOURCES, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "offline_conversation.py"), "-o", str(out),
         "--engine", "tone", "--timeout", "20"],
        capture_output=True, text=True, timeout=25, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {out}" in proc.stdout
    assert proc.stdout.count("agent: ") == 3 and proc.stdout.count("user:  ") == 2
    pcm = read_wav(out)
    assert 5 < len(pcm) / 2 / RATE < 20
    assert loud_fraction(pcm) > 0.5


def test_offline_conversation_main_writes_conversation_wav_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline_env: None
) -> None:
    example = load("offline_conversation")
    monkeypatch.chdir(tmp_path)
    assert example.main(["--engine", "tone", "--timeout", "10"]) == 0
    assert len(read_wav(tmp_path / "conversation.wav")) > RATE * 2 * 5
    assert "VIDEOSDK_AUTH_TOKEN" not in os.environ


# -- agent.py ------------------------------------------------------------------------------


def test_agent_example_compiles_and_wires_lmnt(monkeypatch: pytest.MonkeyPatch) -> None:
    source = (EXAMPLES / "agent.py").read_text()
    ast.parse(source)  # valid syntax for this Python
    for name in ("VIDEOSDK_AUTH_TOKEN", "LMNT_API_KEY", "LMNT_WS_URL"):
        assert name in source.split('"""', 2)[1], f"{name} is documented at the top"

    agent = load("agent")  # importing must not start a worker or need credentials
    assert asyncio.iscoroutinefunction(agent.entrypoint)
    assert {"WorkerJob", "JobContext", "RoomOptions", "Pipeline", "AgentSession"} <= set(
        vars(agent)
    )

    for name in ("VIDEOSDK_AUTH_TOKEN", "VIDEOSDK_API_KEY", "VIDEOSDK_SECRET_KEY",
                 "LMNT_API_KEY", "LMNT_WS_URL"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert len(agent.check_environment()) == 2
    assert agent.main() == 2  # says what is missing instead of starting

    monkeypatch.setenv("LMNT_API_KEY", "local")
    monkeypatch.setenv("LMNT_WS_URL", "ws://127.0.0.1:8765/v1/ai/speech/stream")
    tts = agent.make_tts()
    assert isinstance(tts, LMNTTTS)
    assert tts.ws_url == "ws://127.0.0.1:8765/v1/ai/speech/stream"
    assert tts.supports_word_timestamps and tts.protocol_version == "1.2"
    monkeypatch.setenv("VIDEOSDK_AUTH_TOKEN", "not-a-real-token")
    assert agent.check_environment() == []


async def test_agent_example_context_uses_the_room_id(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = load("agent")  # JobContext wants an event loop, as under WorkerJob
    monkeypatch.setenv("VIDEOSDK_AUTH_TOKEN", "not-a-real-token")
    monkeypatch.setenv("VIDEOSDK_ROOM_ID", "abcd-efgh-ijkl")
    ctx = agent.make_context()
    assert ctx.room_options.room_id == "abcd-efgh-ijkl"
    assert ctx.room_options.playground is True


# -- docs/migrating.md: code written for 1.0.30 keeps working -------------------------------


async def test_options_changed_after_construction_apply_to_the_next_turn(
    lmnt_server: Any,
) -> None:
    """1.0.30 read its public attributes at every turn, so agents could change voice, model...
    between turns."""
    from track_helpers import speak

    tts = LMNTTTS(api_key="test-key", ws_url=lmnt_server.ws_url)
    try:
        await speak(tts, "One.")
        tts.voice, tts.language, tts.temperature = "morgan", "de", 0.5
        await speak(tts, "Two.")
    finally:
        await tts.aclose()
    second = [s.init for s in lmnt_server.sessions if s.texts][1]
    assert (second["voice"], second["language"], second["temperature"]) == ("morgan", "de", 0.5)


async def test_ws_url_changed_after_construction_is_used(lmnt_server: Any) -> None:
    """1.0.30 read ``ws_url`` at every turn: assigning it moves the next turn."""
    from videosdk.plugins.lmnt.testing import start_local_server

    from track_helpers import speak

    other = await start_local_server()
    tts = LMNTTTS(api_key="test-key", ws_url=lmnt_server.ws_url)
    try:
        await speak(tts, "One.")
        tts.ws_url = other.ws_url
        await speak(tts, "Two.")
    finally:
        await tts.aclose()
        await other.stop()
    assert [s.text for s in other.sessions if s.texts] == ["Two. "]


async def test_api_key_can_be_reassigned() -> None:
    """1.0.30's ``api_key`` was a plain attribute (key rotation); the next turn uses the new one."""
    from videosdk.plugins.lmnt.testing import start_local_server

    from track_helpers import speak

    server = await start_local_server(api_keys={"second-key"})  # only the new key works
    tts = LMNTTTS(api_key="first-key", ws_url=server.ws_url)
    try:
        tts.api_key = "second-key"
        pcm = await speak(tts, "Hello.")
    finally:
        await tts.aclose()
        await server.stop()
    assert tts.api_key == "second-key" and len(pcm) > 0


# -- docs/local-server.md: the copy-paste test suite works ----------------------------------


def _doc_block(path: Path, first_line: str) -> str:
    """The fenced python block of ``path`` whose first line is ``first_line``."""
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    found = [b for b in blocks if b.startswith(first_line + "\n")]
    assert len(found) == 1, f"{path.name}: one block starting {first_line!r}"
    return found[0]


DOC_SUITE = _doc_block(ROOT / "docs" / "local-server.md", "# test_speech.py")
DOC_TESTS = re.findall(r"^async def (test_\w+)\((\w+)\)", DOC_SUITE, flags=re.M)


def test_local_server_doc_conftest_names_the_fixture_module() -> None:
    from videosdk.plugins.lmnt import testing

    conftest = _doc_block(ROOT / "docs" / "local-server.md", "# conftest.py")
    namespace: dict[str, Any] = {}
    exec(compile(conftest, "conftest.py", "exec"), namespace)
    assert namespace["pytest_plugins"] == ["videosdk.plugins.lmnt.testing"]
    assert {"lmnt_server", "lmnt_tls_server"} <= set(vars(testing))
    assert len(DOC_TESTS) >= 3


@pytest.mark.parametrize(("name", "fixture"), DOC_TESTS, ids=[n for n, _ in DOC_TESTS])
async def test_local_server_doc_example(name: str, fixture: str) -> None:
    """Each test of the documented suite, given the server its fixture would give it."""
    from videosdk.plugins.lmnt.testing import make_tls_contexts, start_local_server

    namespace: dict[str, Any] = {"__name__": "doc_test_speech"}
    exec(compile(DOC_SUITE, "test_speech.py", "exec"), namespace)
    if fixture == "lmnt_tls_server":
        server_ctx, client_ctx = make_tls_contexts()
        server = await start_local_server(ssl_context=server_ctx)
        server.client_ssl_context = client_ctx
    else:
        assert fixture == "lmnt_server"
        server = await start_local_server()
    try:
        async with asyncio.timeout(5):
            await namespace[name](server)
    finally:
        await server.stop()
