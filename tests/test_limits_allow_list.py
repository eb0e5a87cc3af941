"""``--limits FILE`` as an allow-list: ``only_listed_keys = true`` refuses every other key.

Checked on every door (WebSocket, LMNT HTTP, OpenAI HTTP) of a real server loaded from a real
file, through ``lmnt-local serve --limits`` in a real process, and for the file's mistakes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from lmnt_local.server import LocalLMNTServer, ToneEngine
from lmnt_local.server.ops.limits import LimitsConfig

LISTED = "sk-team-a-5e1f"
EXTRA = "sk-cli-given-9b2c"
OTHER = "sk-not-listed-77aa"

ALLOW_LIST = f"""
only_listed_keys = true

[keys.team-a]
key = "{LISTED}"
chars_per_minute = 100000
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "limits.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


async def _doors(http: aiohttp.ClientSession, srv_http: str, ws_url: str, key: str) -> tuple:
    """(WebSocket close code, LMNT HTTP status, OpenAI HTTP status) for ``key``."""
    init = {"X-API-Key": key, "voice": "ava", "format": "pcm_s16le"}
    async with http.ws_connect(ws_url) as ws:
        await ws.send_str(json.dumps(init))
        await ws.send_str(json.dumps({"text": "Hi."}))
        await ws.send_str(json.dumps({"eof": True}))
        async for _ in ws:
            pass
        code = ws.close_code
    body = {"text": "Hi.", "voice": "ava", "format": "pcm_s16le"}
    async with http.post(
        srv_http + "/v1/ai/speech/bytes", json=body, headers={"X-API-Key": key}
    ) as resp:
        lmnt = resp.status
    openai = {"model": "tts-1", "voice": "alloy", "input": "Hi.", "response_format": "pcm"}
    async with http.post(
        srv_http + "/v1/audio/speech", json=openai, headers={"Authorization": f"Bearer {key}"}
    ) as resp:
        oai = resp.status
    return code, lmnt, oai


async def test_only_listed_keys_and_api_keys_are_accepted(tmp_path: Path) -> None:
    limits = LimitsConfig.load(_file(tmp_path, ALLOW_LIST), environ={})
    async with (
        LocalLMNTServer(ToneEngine(), api_keys={EXTRA}, limits=limits) as srv,
        aiohttp.ClientSession() as http,
    ):
        assert await _doors(http, srv.http_url, srv.ws_url, LISTED) == (1000, 200, 200)
        assert await _doors(http, srv.http_url, srv.ws_url, EXTRA) == (1000, 200, 200)
        assert await _doors(http, srv.http_url, srv.ws_url, OTHER) == (1002, 403, 401)


async def test_without_the_setting_any_key_is_still_accepted(tmp_path: Path) -> None:
    limits = LimitsConfig.load(_file(tmp_path, ALLOW_LIST.replace("true", "false")), environ={})
    async with LocalLMNTServer(ToneEngine(), limits=limits) as srv, aiohttp.ClientSession() as h:
        assert await _doors(h, srv.http_url, srv.ws_url, OTHER) == (1000, 200, 200)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('only_listed_keys = "yes"\n', "only_listed_keys must be true or false"),
        ("only_listed_keys = true\n", "needs at least one [keys.NAME]"),
    ],
)
def test_allow_list_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        LimitsConfig.load(_file(tmp_path, text), environ={})


def _start(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_serve_limits_file_is_the_allow_list(tmp_path: Path) -> None:
    path = _file(tmp_path, ALLOW_LIST)
    argv = [sys.executable, "-m", "lmnt_local.cli.app", "serve", "--port", "0"]
    argv += ["--engine", "tone", "--workers", "1", "--limits", str(path)]
    proc = _start(argv)
    try:
        assert proc.stdout is not None
        ws_url = proc.stdout.readline().split()[-1]
        http_url = "http" + ws_url.removeprefix("ws").split("/v1/", 1)[0]
        async with aiohttp.ClientSession() as http:
            assert await _doors(http, http_url, ws_url, LISTED) == (1000, 200, 200)
            assert await _doors(http, http_url, ws_url, OTHER) == (1002, 403, 401)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        assert "accepting 1 API key(s)" in stderr and LISTED not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
