"""``lmnt-local voices fetch``: Piper's catalogue and hibari's other voices, checked, installed
atomically into the directory the server reads by default (:mod:`.engines.store`).

Both come from the Hugging Face hub: Piper's ``rhasspy/piper-voices`` at a pinned revision (its
``voices.json`` lists every file with ``size_bytes`` and ``md5_digest``), hibari's
``maureesewilliams/hibari`` (its package's ``voices.json`` gives size and sha256 per voice,
copied below so fetching does not need hibari installed).  Every file is streamed into a
temporary ``.part`` file beside its destination, its size and checksum compared with the
catalogue, and only then renamed into place (a voice's config before its model, since the
server only loads a model whose config is beside it): an interrupted, truncated or corrupt
download leaves nothing the server would load.

``$LMNT_VOICES_HUB_URL`` replaces ``https://huggingface.co`` (a mirror serving the same paths:
``{hub}/{repo}/resolve/{revision}/{path}``); ``$LMNT_PIPER_REVISION`` another revision of
Piper's catalogue.  No network is a one-line error naming the host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from lmnt_local.server.engines.genders import PIPER_GENDERS
from lmnt_local.server.engines.store import engine_dir, voices_home

__all__ = [
    "HIBARI_VOICES",
    "HUB_ENV",
    "PIPER_REVISION",
    "CatalogVoice",
    "FetchError",
    "catalog",
    "fetch_voices",
]

HUB_ENV = "LMNT_VOICES_HUB_URL"
REVISION_ENV = "LMNT_PIPER_REVISION"
_HUB = "https://huggingface.co"
PIPER_REPO = "rhasspy/piper-voices"
#: The catalogue revision every fetch reads: a commit of the hub repository (the one Gentoo's
#: piper-voices package pins, 2025), so the catalogue and its md5 digests never move under a
#: user; ``$LMNT_PIPER_REVISION`` picks another (a commit, a tag such as ``v1.0.0``, ``main``).
PIPER_REVISION = "b23e00315cccfa7360b3a7f89b95da786efc4656"
HIBARI_REPO = "maureesewilliams/hibari"
HIBARI_REVISION = "main"  # pinned by the sha256 of each file below

#: hibari-tts 0.2.1's ``hibari/assets/voices.json``, the voices not in its wheel.
HIBARI_VOICES: Mapping[str, Mapping[str, Any]] = {
    "kore": {
        "file": "af_kore.int8.onnx",
        "bytes": 7936868,
        "sha256": "346885752673e45d42f9864c9e2432094bc4b6385df060d4b83273da764d2fa9",
        "language": "en-US",
        "gender": "female",
    },
    "emma": {
        "file": "bf_emma.int8.onnx",
        "bytes": 7936868,
        "sha256": "f709f0488ee63b583a22189a955aaf4257b9806dd330be3490661e53af0a89c1",
        "language": "en-GB",
        "gender": "female",
    },
    "fenrir": {
        "file": "am_fenrir_v2.int8.onnx",
        "bytes": 8031158,
        "sha256": "f59fbd87908c91f827bc21b1b89443757b9a8580db9eee20aa948deb731321f4",
        "language": "en-US",
        "gender": "male",
    },
    "fable": {
        "file": "bm_fable.int8.onnx",
        "bytes": 7936868,
        "sha256": "c28529302f2d27cd12f62625c24425888c4e3c2675583100ec530259136b8bc6",
        "language": "en-GB",
        "gender": "male",
    },
}

_CHUNK = 1 << 16


class FetchError(RuntimeError):
    """A fetch that failed; the message is one line that names the file and what to do."""


@dataclass(frozen=True, slots=True)
class _File:
    path: str  # repository path
    dest: Path
    size: int
    digest: str  # hex
    algorithm: str  # "md5" or "sha256"


@dataclass(frozen=True, slots=True)
class CatalogVoice:
    """One entry of ``voices fetch --list``."""

    name: str
    engine: str  # "piper" or "hibari"
    language: str
    gender: str
    quality: str
    speakers: int
    size: int
    files: tuple[_File, ...]


def hub_url() -> str:
    return (os.environ.get(HUB_ENV, "").strip() or _HUB).rstrip("/")


def piper_revision() -> str:
    return os.environ.get(REVISION_ENV, "").strip() or PIPER_REVISION


def _resolve(repo: str, revision: str, path: str) -> str:
    return f"{hub_url()}/{repo}/resolve/{revision}/{path}"


def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, connect=15, sock_connect=15, sock_read=60)


def _network_error(url: str, exc: BaseException) -> FetchError:
    host = url.split("/")[2] if "://" in url else url
    os_error = getattr(exc, "os_error", None)
    if isinstance(os_error, socket.gaierror):
        reason = f"the host name does not resolve: {os_error.strerror or os_error}"
    elif isinstance(os_error, OSError) and os_error.errno and os_error.errno > 0:
        reason = os.strerror(os_error.errno).lower()  # "connection refused", not the noise
    else:
        reason = str(exc) or type(exc).__name__
    return FetchError(
        f"cannot reach {host} to fetch voices ({reason}); check the network, "
        f"or set ${HUB_ENV} to a mirror"
    )


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                raise FetchError(f"{url} answered HTTP {resp.status}")
            body = await resp.read()
    except (aiohttp.ClientConnectionError, TimeoutError) as exc:
        raise _network_error(url, exc) from None
    try:
        return json.loads(body)
    except ValueError:
        raise FetchError(f"{url} is not the JSON catalogue it should be") from None


def _piper_entries(data: Any, revision: str) -> dict[str, CatalogVoice]:
    if not isinstance(data, dict):
        raise FetchError("Piper's voices.json is not a JSON object")
    home = engine_dir("piper")
    voices: dict[str, CatalogVoice] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict):
            continue
        files = []
        for path, meta in entry["files"].items():
            if not isinstance(meta, dict):
                continue
            name = str(path).rsplit("/", 1)[-1]
            if name.endswith(".onnx") or name.endswith(".onnx.json"):
                dest = home / name
            elif name == "MODEL_CARD":
                dest = home / f"{key}.MODEL_CARD"
            else:
                continue
            size, digest = meta.get("size_bytes"), meta.get("md5_digest")
            if not isinstance(size, int) or not isinstance(digest, str):
                continue
            files.append(_File(str(path), dest, size, digest.lower(), "md5"))
        if not any(f.dest.name.endswith(".onnx") for f in files):
            continue
        language: dict[str, Any] = (
            entry["language"] if isinstance(entry.get("language"), dict) else {}
        )
        parts = str(key).split("-")
        name_part = str(entry.get("name") or (parts[1] if len(parts) >= 3 else key))
        speakers = entry.get("num_speakers")
        voices[str(key)] = CatalogVoice(
            str(key),
            "piper",
            str(language.get("code") or key.split("-", 1)[0]),
            PIPER_GENDERS.get(name_part, "unknown"),
            str(entry.get("quality") or "unknown"),
            speakers if isinstance(speakers, int) else 1,
            sum(f.size for f in files),
            tuple(files),
        )
    if not voices:
        raise FetchError(f"Piper's voices.json at revision {revision} lists no voices")
    return voices


def _hibari_entries() -> dict[str, CatalogVoice]:
    home = engine_dir("hibari")
    return {
        name: CatalogVoice(
            name,
            "hibari",
            str(v["language"]).replace("-", "_"),
            str(v["gender"]),
            "int8",
            1,
            int(v["bytes"]),
            (
                _File(
                    f"voices/{v['file']}",
                    home / str(v["file"]),
                    int(v["bytes"]),
                    v["sha256"],
                    "sha256",
                ),
            ),
        )
        for name, v in HIBARI_VOICES.items()
    }


async def catalog(session: aiohttp.ClientSession | None = None) -> dict[str, CatalogVoice]:
    """Every fetchable voice by name: hibari's four, then Piper's catalogue (read from the hub
    at the pinned revision; a copy is kept beside the voices for the next listing)."""
    revision = piper_revision()
    cached = voices_home() / f"piper-voices.{revision}.json"
    data: Any = None
    if cached.is_file():
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(cached.read_text(encoding="utf-8"))
    if data is None:
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(aiohttp.ClientSession(timeout=_timeout()))
            data = await _get_json(session, _resolve(PIPER_REPO, revision, "voices.json"))
        piper = _piper_entries(data, revision)  # check before keeping it
        with contextlib.suppress(OSError):
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{secrets.token_hex(4)}.part")
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, cached)
    else:
        piper = _piper_entries(data, revision)
    return {**_hibari_entries(), **piper}


def _digest_of(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _installed(file: _File) -> bool:
    try:
        return file.dest.stat().st_size == file.size and (
            _digest_of(file.dest, file.algorithm) == file.digest
        )
    except OSError:
        return False


async def _download(session: aiohttp.ClientSession, url: str, file: _File) -> Path:
    """Stream ``url`` into a ``.part`` file beside ``file.dest``; return it once its size and
    checksum match the catalogue (else delete it and raise)."""
    file.dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.dest.with_name(f".{file.dest.name}.{secrets.token_hex(4)}.part")
    h = hashlib.new(file.algorithm)
    got = 0
    try:
        try:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise FetchError(f"{url} answered HTTP {resp.status}")
                with tmp.open("wb") as out:
                    async for block in resp.content.iter_chunked(_CHUNK):
                        got += len(block)
                        if got > file.size:
                            raise FetchError(
                                f"{file.dest.name}: the server sent more than the catalogue's "
                                f"{file.size} bytes; nothing was installed"
                            )
                        h.update(block)
                        out.write(block)
        except aiohttp.ClientPayloadError:
            raise FetchError(
                f"{file.dest.name}: the download was cut off after {got} of {file.size} bytes; "
                "nothing was installed (run the command again)"
            ) from None
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            if got:
                raise FetchError(
                    f"{file.dest.name}: the download was cut off after {got} of {file.size} "
                    "bytes; nothing was installed (run the command again)"
                ) from None
            raise _network_error(url, exc) from None
        if got != file.size:
            raise FetchError(
                f"{file.dest.name}: got {got} bytes, the catalogue says {file.size}; "
                "nothing was installed"
            )
        if h.hexdigest() != file.digest:
            raise FetchError(
                f"{file.dest.name}: {file.algorithm} {h.hexdigest()} does not match the "
                f"catalogue's {file.digest}; nothing was installed"
            )
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


async def fetch_voices(
    names: list[str],
    *,
    progress: Callable[[str], None] = lambda line: None,
) -> list[CatalogVoice]:
    """Download and install ``names`` (Piper catalogue keys or hibari voice names)."""
    async with aiohttp.ClientSession(timeout=_timeout()) as session:
        wanted = [n.strip() for n in names if n.strip()]
        hibari = _hibari_entries()
        entries = hibari if all(n.lower() in hibari for n in wanted) else None
        if entries is None:
            entries = await catalog(session)
        chosen = []
        for name in wanted:
            voice = entries.get(name) or entries.get(name.lower())
            if voice is None:
                raise FetchError(_unknown(name, entries))
            chosen.append(voice)
        for voice in chosen:
            await _install(session, voice, progress)
    return chosen


async def _install(
    session: aiohttp.ClientSession, voice: CatalogVoice, progress: Callable[[str], None]
) -> None:
    missing = [f for f in voice.files if not _installed(f)]
    if not missing:
        progress(f"{voice.name}: already installed in {voice.files[0].dest.parent}")
        return
    progress(f"{voice.name}: fetching {sum(f.size for f in missing) / 1e6:.1f} MB")
    repo, revision = (
        (PIPER_REPO, piper_revision())
        if voice.engine == "piper"
        else (HIBARI_REPO, HIBARI_REVISION)
    )
    parts: list[tuple[Path, _File]] = []
    try:
        for file in missing:
            parts.append(
                (await _download(session, _resolve(repo, revision, file.path), file), file)
            )
        # The config before the model: the server loads a model only with its config beside it.
        for tmp, file in sorted(parts, key=lambda p: p[1].dest.name.endswith(".onnx")):
            os.replace(tmp, file.dest)
        parts.clear()
    finally:
        for tmp, _ in parts:
            with contextlib.suppress(OSError):
                tmp.unlink()
    progress(f"{voice.name}: installed in {voice.files[0].dest.parent}")
    licence = _licence(voice)
    if licence:
        progress(f"{voice.name}: licence (from its MODEL_CARD): {licence}")


def _licence(voice: CatalogVoice) -> str | None:
    """The ``License:`` line of a Piper voice's model card: what using its audio allows."""
    for file in voice.files:
        if file.dest.name.endswith(".MODEL_CARD"):
            with contextlib.suppress(OSError):
                for line in file.dest.read_text(encoding="utf-8", errors="replace").splitlines():
                    head, _, value = line.strip(" *-").partition(":")
                    if head.strip().lower() in ("license", "licence") and value.strip():
                        return value.strip()[:200]
    return None


def _unknown(name: str, entries: Mapping[str, CatalogVoice]) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"no voice {name!r} in the catalogue{hint} (see: lmnt-local voices fetch --list)"
