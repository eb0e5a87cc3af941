"""``lmnt-local``: serve the local LMNT-compatible server, or speak text to a WAV file.

``say`` goes through ``LMNTTTS`` and the framework's real ``CustomAudioStreamTrack``, the same
path an agent's audio takes, so a WAV that sounds right is evidence the plugin is right.  With
no ``--ws-url`` and no key it starts the embedded server, so it needs no account and no network.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import ssl
import sys
import time
import urllib.request
import wave
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .protocol import FORMATS, SAMPLE_RATES

EXIT_OK, EXIT_USAGE, EXIT_FAILURE = 0, 2, 1
TRACK_RATE = 24000


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmnt-local", description="Local LMNT-compatible server and LMNT speech tools."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the local LMNT-compatible server")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one")
    serve.add_argument("--tls-cert", help="PEM certificate chain, to serve wss:// and https://")
    serve.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve.add_argument(
        "--api-key", action="append", default=[], dest="api_keys",
        help="accepted key (repeatable); with none, any non-empty key is accepted",
    )  # fmt: skip
    serve.add_argument("--engine", choices=("auto", "espeak", "tone"), default="auto")

    say = sub.add_parser("say", help="speak text through LMNTTTS into a WAV file")
    say.add_argument("text", nargs="?", help="text to speak; read from stdin when omitted or -")
    say.add_argument("-o", "--output", required=True, help="WAV file to write (24 kHz mono s16)")
    say.add_argument("--voice", default="ava")
    say.add_argument("--language", default="auto")
    say.add_argument("--format", choices=FORMATS, default="pcm_s16le", help="wire format")
    say.add_argument("--sample-rate", type=int, choices=SAMPLE_RATES, default=24000)
    say.add_argument("--ws-url", help="LMNT-compatible endpoint (default: LMNT_WS_URL, else an "
                     "embedded local server)")  # fmt: skip
    say.add_argument("--api-key", help="API key (default: LMNT_API_KEY)")
    say.add_argument("--engine", choices=("auto", "espeak", "tone"), default="auto",
                     help="engine of the embedded server")  # fmt: skip
    say.add_argument("--protocol-version", choices=("1.0", "1.1", "1.2"), default="1.0")
    say.add_argument("--quiet", action="store_true", help="no progress on stderr")

    voices = sub.add_parser("voices", help="list the voices a server offers")
    voices.add_argument("--url", help="server base URL (http(s)://host:port) or its ws(s):// URL; "
                        "default: an embedded server")  # fmt: skip
    voices.add_argument("--api-key", help="API key (default: LMNT_API_KEY)")
    voices.add_argument("--engine", choices=("auto", "espeak", "tone"), default="auto")
    return parser


def _engine(name: str) -> Any:
    from .server.engines import ToneEngine

    if name == "tone":
        return ToneEngine()
    from .server.espeak import EspeakEngine

    if name == "espeak" or EspeakEngine.available():
        return EspeakEngine()
    print("lmnt-local: espeak-ng is not installed, using the tone engine "
          "(pip install 'videosdk-plugins-lmnt[local]' for speech)", file=sys.stderr)  # fmt: skip
    return ToneEngine()


async def _serve(args: argparse.Namespace) -> int:
    from .server import LocalLMNTServer

    ctx = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("lmnt-local: --tls-cert and --tls-key go together", file=sys.stderr)
            return EXIT_USAGE
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    server = LocalLMNTServer(
        engine=_engine(args.engine), host=args.host, port=args.port, ssl_context=ctx,
        api_keys=set(args.api_keys) or None,
    )  # fmt: skip
    async with server:
        print(f"LMNT-compatible server on {server.ws_url}", flush=True)
        print(f"HTTP endpoints on {server.http_url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    return EXIT_OK


class _Progress:
    """Seconds of audio produced so far, on one stderr line (only when stderr is a terminal or
    the text is long enough for it to matter)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0

    def update(self, seconds: float, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if final or now - self.last > 0.2:
            self.last = now
            end = "\n" if final else ""
            print(f"\rlmnt-local: {seconds:6.1f} s of audio", end=end, file=sys.stderr, flush=True)


async def speak_to_pcm(
    text: str, *, ws_url: str, api_key: str, progress: _Progress | None = None, **options: Any
) -> bytes:
    """Speak through ``LMNTTTS`` into the framework's track and return the 24 kHz PCM it played."""
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack

    from .tts import LMNTTTS

    loop = asyncio.get_running_loop()
    track = CustomAudioStreamTrack(loop)
    track._start = 0.0  # pull frames as fast as they are ready instead of in real time
    track._speaking_grace_period = 0.0
    tts = LMNTTTS(api_key=api_key, ws_url=ws_url, **options)
    tts.audio_track = track
    tts.loop = loop
    frames: list[bytes] = []
    done = asyncio.Event()

    async def drain() -> None:
        while not (done.is_set() and not track.frame_buffer):
            if track.frame_buffer:
                frame = await track.recv()
                frames.append(frame.to_ndarray().tobytes())
                if progress:
                    progress.update(len(frames) * 0.02)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.002)

    async def chunks() -> AsyncIterator[str]:
        yield text

    drainer = loop.create_task(drain())
    try:
        await tts.synthesize(chunks())
    finally:
        done.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(drainer, 30)
        await tts.aclose()
    if progress:
        progress.update(len(frames) * 0.02, final=True)
    return b"".join(frames)


def write_wav(path: str, pcm: bytes, rate: int = TRACK_RATE) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)


@contextlib.asynccontextmanager
async def _endpoint(ws_url: str | None, engine: str) -> AsyncIterator[str]:
    if ws_url:
        yield ws_url
        return
    from .server import LocalLMNTServer

    async with LocalLMNTServer(engine=_engine(engine), port=0) as server:
        yield server.ws_url


async def _say(args: argparse.Namespace) -> int:
    text = args.text
    if text is None or text == "-":
        text = sys.stdin.read()
    if not text.strip():
        print("lmnt-local: no text to speak", file=sys.stderr)
        return EXIT_USAGE
    ws_url = args.ws_url or os.getenv("LMNT_WS_URL")
    api_key = args.api_key or os.getenv("LMNT_API_KEY")
    if ws_url and not api_key:
        print("lmnt-local: --api-key (or LMNT_API_KEY) is needed with a remote server",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    from .errors import LMNTError

    progress = _Progress(not args.quiet and (sys.stderr.isatty() or len(text) > 200))
    try:
        async with _endpoint(ws_url, args.engine) as url:
            pcm = await speak_to_pcm(
                text, ws_url=url, api_key=api_key or "local", progress=progress,
                voice=args.voice, language=args.language, format=args.format,
                sample_rate=args.sample_rate, protocol_version=args.protocol_version,
            )  # fmt: skip
    except (LMNTError, ValueError) as exc:
        print(f"lmnt-local: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not pcm:
        print("lmnt-local: the server produced no audio", file=sys.stderr)
        return EXIT_FAILURE
    try:
        write_wav(args.output, pcm)
    except OSError as exc:
        print(f"lmnt-local: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    seconds = len(pcm) / 2 / TRACK_RATE
    print(f"wrote {args.output}: {seconds:.2f} s, {TRACK_RATE} Hz mono", file=sys.stderr)
    return EXIT_OK


def _http_base(url: str) -> str:
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


async def _voices(args: argparse.Namespace) -> int:
    api_key = args.api_key or os.getenv("LMNT_API_KEY") or "local"

    def fetch(base: str) -> list[dict[str, Any]]:
        req = urllib.request.Request(
            f"{_http_base(base)}/v1/ai/voice/list", headers={"X-API-Key": api_key}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            data = json.load(resp)
        return data if isinstance(data, list) else []

    try:
        if args.url:
            voices = await asyncio.to_thread(fetch, args.url)
        else:
            from .server import LocalLMNTServer

            async with LocalLMNTServer(engine=_engine(args.engine), port=0) as server:
                voices = await asyncio.to_thread(fetch, server.http_url)
    except (OSError, ValueError) as exc:
        print(f"lmnt-local: could not list voices: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for v in voices:
        print(f"{v.get('id', '?'):<10} {v.get('gender', ''):<7} {v.get('description', '')}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = {"serve": _serve, "say": _say, "voices": _voices}[args.command]
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
