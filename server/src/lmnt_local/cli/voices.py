"""``lmnt-local voices``: a server's ``GET /v1/ai/voice/list``, as a table or JSON.

``say`` uses the same fetch to check ``--voice`` before speaking.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from lmnt_local.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    LOCAL_KEY,
    CLIError,
    _engine,
    _note,
    _reason,
    _report_engine,
)


def _http_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def _fetch_voices(
    base: str, api_key: str, ca_file: str | None, wait: float = 10.0
) -> list[dict[str, Any]]:
    import aiohttp

    ssl_ctx: ssl.SSLContext | bool = True
    if ca_file:
        try:
            ssl_ctx = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise CLIError(f"cannot load --ca-file {ca_file}: {_reason(exc)}", EXIT_USAGE) from None
    url = f"{_http_base(base)}/v1/ai/voice/list"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session,
            session.get(url, headers={"X-API-Key": api_key}, ssl=ssl_ctx) as resp,
        ):
            if resp.status in (401, 403):
                raise CLIError(
                    f"{url} refused the API key (HTTP {resp.status}); "
                    "check --api-key / LMNT_API_KEY"
                )
            if resp.status != 200:
                raise CLIError(f"{url} answered HTTP {resp.status}")
            data = await resp.json(content_type=None)
    except aiohttp.ClientError as exc:
        raise CLIError(f"cannot list voices at {url}: {_reason(exc)}") from None
    except TimeoutError:
        raise CLIError(f"cannot list voices at {url}: no answer within {wait:g} s") from None
    except ValueError:
        raise CLIError(f"{url} did not answer with JSON") from None
    if not isinstance(data, list):
        raise CLIError(f"{url} did not answer with a list of voices")
    return [v for v in data if isinstance(v, dict)]


async def _voices(args: argparse.Namespace) -> int:
    if getattr(args, "voices_command", None) == "fetch":
        return await _fetch(args)
    api_key = args.api_key or os.getenv("LMNT_API_KEY") or LOCAL_KEY
    if args.url:
        from lmnt_local.protocol.hosts import is_loopback

        parts = urlsplit(args.url)
        plain = parts.scheme in ("http", "ws") and not is_loopback(parts.hostname)
        if plain and api_key != LOCAL_KEY and not args.allow_insecure:
            raise CLIError(
                f"{args.url} is not encrypted and not loopback: the API key would travel in "
                "clear text. Use https://, or pass --allow-insecure if this is intended.",
                EXIT_USAGE,
            )
        voices = await _fetch_voices(args.url, api_key, args.ca_file)
    else:
        from lmnt_local.server import LocalLMNTServer

        engine = _engine(args.engine, quiet=True, voice_dirs=args.voice_dirs)
        async with LocalLMNTServer(engine=engine, port=0) as server:
            voices = await _fetch_voices(server.http_url, LOCAL_KEY, None)
        _report_engine(engine, announce=False)
    if args.json:
        print(json.dumps(voices, indent=2))
        return EXIT_OK
    width = max([10, *(len(str(v.get("id", "?"))) for v in voices)])  # Piper ids are long
    for v in voices:
        language = str(v.get("language") or "any")
        print(
            f"{v.get('id', '?'):<{width}} {v.get('gender', ''):<7} {language:<5} "
            f"{v.get('description', '')}"
        )
    return EXIT_OK


async def _fetch(args: argparse.Namespace) -> int:
    """``voices fetch NAME...`` / ``voices fetch --list``."""
    from lmnt_local.server.engines.store import voices_home
    from lmnt_local.server.voice_fetch import FetchError, catalog, fetch_voices

    try:
        if args.list:
            entries = await catalog()
            wanted = (args.language or "").lower().replace("-", "_")
            width = max(len(name) for name in entries)
            for entry in entries.values():
                if wanted and not (
                    entry.language.lower() == wanted
                    or entry.language.lower().startswith(wanted + "_")
                ):
                    continue
                speakers = f"{entry.speakers} speakers" if entry.speakers > 1 else ""
                print(
                    f"{entry.name:<{width}} {entry.engine:<6} {entry.language:<6} "
                    f"{entry.gender:<7} {entry.quality:<7} {entry.size / 1e6:6.1f} MB {speakers}"
                )
            return EXIT_OK
        await fetch_voices(args.names, progress=_note)
    except FetchError as exc:
        raise CLIError(str(exc)) from None
    _note(f"the server reads {voices_home()} by default (lmnt-local serve)")
    return EXIT_OK
