"""The server embedded in an application: ``LocalLMNTServer.ready`` and ``ThreadedLMNTServer``.

The example in docs/local-server.md runs as written in a fresh process; the threaded server is
driven from plain synchronous code (no event loop in the test), including OpenAI's synchronous
client, and its failures reach the caller.
"""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import wave
from pathlib import Path

import pytest

from lmnt_local.server import LocalLMNTServer, ThreadedLMNTServer, ToneEngine

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "local-server.md"


def _doc_example() -> str:
    text = DOC.read_text()
    marker = "<!-- tested: tests/test_embed.py runs this block as written -->"
    block = re.search(re.escape(marker) + r"\n```python\n(.*?)```", text, re.S)
    assert block is not None, "the example block is gone from docs/local-server.md"
    return block.group(1)


def _readyz(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_documented_example_runs_as_written(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _doc_example()],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"speech at http://127\.0\.0\.1:\d+ and ws://", proc.stdout)
    with wave.open(io.BytesIO((tmp_path / "hello.wav").read_bytes())) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 24000)
        # Streamed WAV has open-ended sizes (as OpenAI's): the data runs to the end of the file.
        seconds = len(wav.readframes(wav.getnframes())) / 2 / 24000
    # "Hello from inside the app." is five words: speech, not a click or a minute of noise.
    assert 0.8 < seconds < 6, seconds


def test_threaded_server_start_ready_url_stop_from_sync_code() -> None:
    openai = pytest.importorskip("openai")
    server = ThreadedLMNTServer(engine=ToneEngine(), api_keys={"app-key"})
    assert not server.ready
    with pytest.raises(RuntimeError, match="not started"):
        server.url  # noqa: B018
    assert server.start() is server and server.ready
    try:
        assert server.url == server.http_url == f"http://127.0.0.1:{server.port}"
        assert server.ws_url.endswith("/v1/ai/speech/stream")
        assert _readyz(server.url) == 200
        client = openai.OpenAI(api_key="app-key", base_url=server.url + "/v1", max_retries=0)
        audio = client.audio.speech.create(
            model="tts-1", voice="alloy", input="Hi there.", response_format="pcm"
        )
        assert len(audio.content) == round(ToneEngine().duration_of("Hi there.") * 24000) * 2
    finally:
        server.stop()
    assert not server.ready
    server.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.server.port), timeout=2).close()
    assert not [t for t in threading.enumerate() if t.name == "lmnt-local-server"]


def test_threaded_server_start_failure_reaches_the_caller() -> None:
    with ThreadedLMNTServer(engine=ToneEngine()) as first:
        clash = ThreadedLMNTServer(engine=ToneEngine(), port=first.port)
        with pytest.raises(OSError):
            clash.start()
        assert not clash.ready
        assert first.ready
    assert [t for t in threading.enumerate() if t.name == "lmnt-local-server"] == []


def test_threaded_server_stop_can_drain() -> None:
    with ThreadedLMNTServer(engine=ToneEngine()) as server:
        assert _readyz(server.url) == 200
        server.stop(drain=1.0)
        assert not server.ready


async def test_local_server_ready_follows_start_and_stop() -> None:
    server = LocalLMNTServer(engine=ToneEngine())
    assert not server.ready
    await server.start()
    assert server.ready
    await server.stop()
    assert not server.ready
