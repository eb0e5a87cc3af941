"""What ``lmnt-local serve`` writes to stderr, as the program (a real process, real signals).

``--log-format json``: every line on stderr is one JSON object, the start and stop notes
included (a log collector reading the stream must never meet a text line).  The default text
format: the server's own error lines (``synthesis failed``) appear without ``-v``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

#: ``lmnt-local`` whose tone engine fails on any text with "boom" in it.
FAILING = """
import sys
from lmnt_local.server.engines import tone

speak = tone.ToneEngine.synthesize

async def synthesize(self, text, **kwargs):
    if "boom" in text:
        raise RuntimeError("engine exploded")
    async for chunk in speak(self, text, **kwargs):
        yield chunk

tone.ToneEngine.synthesize = synthesize
from lmnt_local.cli import main
sys.exit(main())
"""
INIT = {"X-API-Key": "any-key", "voice": "ava", "format": "pcm_s16le", "sample_rate": 24000}


@contextmanager
def _serve(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    argv = [sys.executable, "-c", FAILING, "serve", "--port", "0", "--engine", "tone", *args]
    if "--workers" not in args:
        argv += ["--workers", "1"]  # workers are fresh processes: the failing engine is here
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ws_url = proc.stdout.readline().split()[-1]
        yield proc, ws_url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def _fail_twice(ws_url: str) -> None:
    """A WebSocket session and an HTTP request whose synthesis fails."""
    http_url = "http" + ws_url.removeprefix("ws").split("/v1/", 1)[0]
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(ws_url) as ws:
            await ws.send_str(json.dumps(INIT))
            await ws.send_str(json.dumps({"text": "boom."}))
            await ws.send_str(json.dumps({"eof": True}))
            async for _ in ws:
                pass
            assert ws.close_code == 1011
        body = {"text": "boom.", "voice": "ava", "format": "pcm_s16le"}
        headers = {"X-API-Key": "any-key"}
        async with http.post(http_url + "/v1/ai/speech", json=body, headers=headers) as resp:
            assert resp.status == 500


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert proc.stderr is not None
    return proc.stderr.read()


async def test_json_log_format_writes_json_lines_only() -> None:
    with _serve("--log-format", "json") as (proc, ws_url):
        await _fail_twice(ws_url)
        stderr = _stop(proc)
    lines = stderr.splitlines()
    records = [json.loads(line) for line in lines]  # every line, or this raises
    assert all(isinstance(r, dict) and r["level"] and r["message"] for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("engine tone") for m in messages), messages  # the start note
    assert messages[-1] == "stopping" or "stopping" in messages
    failed = [r for r in records if "synthesis failed" in r["message"]]
    assert len(failed) == 2 and all(r["level"] == "ERROR" for r in failed)
    assert all("engine exploded" in r["exception"] for r in failed)
    assert all(r.get("request_id", "").startswith("req_") for r in failed)


async def test_json_log_format_with_workers_writes_json_lines_only() -> None:
    with _serve("--log-format", "json", "--workers", "2") as (proc, _):
        stderr = _stop(proc)
    records = [json.loads(line) for line in stderr.splitlines()]
    assert len({r["pid"] for r in records}) == 3  # the supervisor and both workers
    assert records[-1]["message"] == "stopping"


async def test_default_text_logs_keep_the_servers_error_lines() -> None:
    with _serve() as (proc, ws_url):
        await _fail_twice(ws_url)
        stderr = _stop(proc)
    errors = [line for line in stderr.splitlines() if "synthesis failed" in line]
    assert len(errors) == 2 and all(" ERROR " in line for line in errors), stderr
    assert "engine exploded" in stderr  # the traceback says why
    assert "lmnt-local: stopping" in stderr  # the notes stay plain text here
    assert " INFO " not in stderr  # warnings and errors only, without -v
