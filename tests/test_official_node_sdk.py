"""The official TypeScript SDK ``lmnt-node`` 2.12, unmodified, run by Node.js against the server.

``lmnt-node`` is installed from the npm registry once per machine into the user's cache
directory (``$XDG_CACHE_HOME`` or ``~/.cache``, ``videosdk-plugins-lmnt/lmnt-node``): outside the
repository, so neither git nor a source distribution ever sees it;
``tests/node/lmnt_node_client.cjs`` makes every call the SDK offers, pointed at the local server
with ``LMNT_BASE_URL``, and prints what came back.
Without Node.js or without the npm registry the tests are skipped, saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lmnt_local.server import LocalLMNTServer, ToneEngine

TONE = ToneEngine()
KEY = "sesame-node"
SDK = "lmnt-node@~2.12.0"
HERE = Path(__file__).parent
CACHE = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "videosdk-plugins-lmnt"
    / "lmnt-node"
)
SCRIPT = HERE / "node" / "lmnt_node_client.cjs"


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``lmnt-node`` 2.12 from npm, installed once into the git-ignored cache."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js/npm not installed: the lmnt-node SDK cannot run")
    modules = CACHE / "node_modules"
    installed = modules / "lmnt-node" / "package.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE.parent / ".gitignore").write_text(
        "# npm installs of tests/test_official_node_sdk.py\n*\n"
    )
    if not installed.exists():
        (CACHE / "package.json").write_text('{"private": true}\n')
        try:
            subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", SDK],
                cwd=CACHE,
                check=True,
                capture_output=True,
                timeout=240,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"npm registry unreachable, cannot install {SDK}: {exc}")
    version = json.loads(installed.read_text())["version"]
    assert version.startswith("2.12."), version
    return modules


@pytest.fixture(scope="module")
def node_results(node_modules: Path) -> dict[str, Any]:
    """One run of the driver script (about 1 s), shared by the tests of this module."""
    return asyncio.run(_drive(node_modules))


async def _drive(node_modules: Path) -> dict[str, Any]:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY}) as srv:
        env = {
            **os.environ,
            "LMNT_BASE_URL": srv.http_url,
            "LMNT_API_KEY": KEY,
            "NODE_PATH": str(node_modules),
        }
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(SCRIPT),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(40):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()[-2000:]
        result: dict[str, Any] = json.loads(out)
        return result


def pcm_len(text: str, rate: int = 24000) -> int:
    return round(TONE.seconds_per_char * rate) * len(text) * 2


def test_every_lmnt_node_call(node_results: dict[str, Any]) -> None:
    r = node_results
    # speech
    assert r["generate"] == {
        "ok": True,
        "bytes": pcm_len("Hello there.", 16000),
        "type": "application/vnd.lmnt.audio-int16",
    }
    assert r["generate_mp3"]["ok"] and r["generate_mp3"]["head"].startswith("fff")
    assert r["generate_detailed"]["bytes"] == pcm_len("Hello big world.")
    assert [t["text"] for t in r["generate_detailed"]["timestamps"]] == ["Hello", "big", "world."]
    # voices
    assert [v["id"] for v in r["voices_list"]["value"]] == [v.id for v in TONE.voices()]
    assert r["voices_list_starred"]["value"] == []
    assert r["voices_retrieve"]["value"]["id"] == "morgan"
    assert r["voices_update"]["value"]["voice"]["name"] == "Morgan (mine)"
    assert [v["id"] for v in r["voices_list_starred_after"]["value"]] == ["morgan"]
    assert (r["voices_retrieve_missing"]["status"], r["voices_retrieve_missing"]["name"]) == (
        404,
        "NotFoundError",
    )
    assert r["voices_delete"]["status"] == 403
    assert r["voices_delete"]["error"]["error"]["type"] == "permission_error"
    assert r["voices_create"]["status"] == 501
    assert "cloning is not available" in r["voices_create"]["error"]["error"]["message"]
    # account: every character this key had spoken, HTTP and WebSocket alike
    spoken = ["Hello there."] * 2 + ["Hello big world.", "Hello world. ", "never spoken", "ok"]
    assert r["account"]["value"]["usage"]["characters"] == sum(map(len, spoken))
    # errors in the 1.1 envelope
    assert r["wrong_key"]["status"] == 403
    assert r["wrong_key"]["error"] == {
        "error": {"type": "permission_error", "message": "Invalid API key"}
    }
    assert (r["unknown_voice"]["status"], r["unknown_voice"]["name"]) == (
        422,
        "UnprocessableEntityError",
    )


def test_lmnt_node_session(node_results: dict[str, Any]) -> None:
    s = node_results["session"]
    assert s["kinds"][0] == "ready" and not s["errors"]
    assert "flush_complete:1" in s["kinds"] and "reset_complete:2" in s["kinds"]
    assert s["audio"] == pcm_len("Hello world. ") + pcm_len("ok")  # "never spoken" was reset
    assert [t["text"] for t in s["timestamps"]] == ["Hello", "world.", "ok"]
    bad = node_results["session_bad_voice"]
    assert bad["audio"] == 0 and bad["kinds"] == ["error"]
    assert "unknown voice 'nobody'" in bad["errors"][0]["message"]
