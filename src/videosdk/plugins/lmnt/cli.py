"""``lmnt-local``: serve the local LMNT-compatible server, speak text to a WAV file, list voices.

``say`` goes through ``LMNTTTS`` and the framework's real ``CustomAudioStreamTrack``, the same
path an agent's audio takes, so a WAV that sounds right is evidence the plugin is right.  With
no ``--ws-url`` it starts an embedded server, so it needs no account and no network.

Every failure the user can cause or fix (bad text, an unwritable file, a wrong key, a server
that is not there) ends in one ``lmnt-local: ...`` line on stderr and a non-zero exit code,
never a traceback: ``2`` for a command line that cannot work (argparse's own code), ``1`` for a
failure while running, ``130`` for Ctrl-C.  See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import secrets
import signal
import ssl
import sys
import time
import wave
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from .cli_serve import add_serve_options, serve
from .protocol import FORMATS, LEGACY_VERSION, SAMPLE_RATES, STREAM_PATH, TYPED_VERSIONS
from .version import __version__

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "Speech", "main", "speak", "wav_bytes"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + SIGINT / SIGTERM, as shells report them
TRACK_RATE = 24000  # what the framework's CustomAudioStreamTrack plays, so what the WAV holds
ENGINES = ("auto", "neural", "espeak", "tone")
#: Placeholder key for servers that accept any non-empty key (the embedded one, a keyless
#: ``lmnt-local serve``): a real key is never sent where it is not needed.
LOCAL_KEY = "local"
#: Text is streamed in pieces of at most this many characters, as an agent's sentence chunker
#: would stream it (and so no single message hits a server's frame limit).
CHUNK_CHARS = 1000
#: Longer texts are spoken in several turns (the local server caps a session at 100 000).
TURN_CHARS = 50_000
#: Text this long gets a progress indicator on stderr.
PROGRESS_CHARS = 200

log = logging.getLogger("videosdk.plugins.lmnt.cli")


class CLIError(Exception):
    """A failure reported as one ``lmnt-local: ...`` line with an exit code, no traceback."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


# -- argument parsing --------------------------------------------------------------------------


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _server_key(value: str) -> str:
    # An empty key can never be sent (clients refuse it), so a server accepting only "" would
    # accept nobody.
    if not value.strip():
        raise argparse.ArgumentTypeError("an accepted API key cannot be empty")
    return value


def _ws_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected a ws:// or wss:// URL with a host, got {value!r} "
            f"(the local server's is ws://127.0.0.1:PORT{STREAM_PATH})"
        )
    return value


def _base_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(
            f"expected an http(s):// or ws(s):// URL with a host, got {value!r}"
        )
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, as every other failure of ``lmnt-local`` is.

    argparse's default prints the whole usage block (7 lines for ``say``) before the message;
    the message plus where to find the usage is what a user needs.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see: {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lmnt-local",
        description="Local LMNT-compatible server and LMNT speech tools (no key, no network).",
        epilog="Exit codes: 0 ok, 1 failure (server, network, key, file), 2 bad command line, "
        "130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    # -v also after the command; SUPPRESS keeps a subcommand from resetting a -v given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log at debug level"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,say,voices}")

    serve = sub.add_parser(
        "serve",
        parents=[common],
        help="run the local LMNT-compatible server until SIGINT/SIGTERM",
        description="Run the local LMNT-compatible server. The first line on stdout is its "
        "WebSocket URL (with the real port when --port 0). SIGINT or SIGTERM drains it: "
        "readiness turns false, in-flight turns finish (up to --drain-timeout), the rest are "
        "closed with 1001; a second signal stops at once.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8765, help="port (default 8765); 0 picks one")
    serve.add_argument(
        "--tls-cert", metavar="PEM", help="certificate chain: serve wss:// + https://"
    )
    serve.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    serve.add_argument(
        "--api-key",
        action="append",
        type=_server_key,
        default=[],
        dest="api_keys",
        metavar="KEY",
        help="accept this key (repeatable); with none, any non-empty key is accepted",
    )
    serve.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="speech engine: neural (Piper), espeak-ng, or the 440 Hz test tone "
        "(default auto: the best one installed, in that order)",
    )
    serve.add_argument(
        "--voices",
        action="append",
        type=Path,
        default=[],
        dest="voice_dirs",
        metavar="DIR",
        help="directory of Piper voices (NAME.onnx + NAME.onnx.json), repeatable: each "
        "becomes voice id NAME of the neural engine",
    )
    add_serve_options(serve)

    say = sub.add_parser(
        "say",
        parents=[common],
        help="speak text through LMNTTTS into a WAV file",
        description="Speak text through LMNTTTS and the framework's audio track into a WAV "
        "file (24 kHz mono s16, what the track plays). Without --ws-url (or LMNT_WS_URL) an "
        "embedded local server speaks, so no key is needed.",
    )
    say.add_argument("text", nargs="*", help="text to speak; read from stdin when omitted or -")
    say.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="WAV",
        help="WAV file to write; - writes it to stdout",
    )
    say.add_argument("--voice", default="ava", help="voice id (default ava)")
    say.add_argument("--language", default="auto", help="ISO 639-1 code or auto (default)")
    say.add_argument(
        "--format",
        choices=FORMATS,
        default="pcm_s16le",
        help="audio format on the wire (default pcm_s16le); the WAV is always 24 kHz s16",
    )
    say.add_argument(
        "--sample-rate",
        type=int,
        choices=SAMPLE_RATES,
        default=24000,
        help="sample rate on the wire (default 24000)",
    )
    say.add_argument(
        "--ws-url",
        type=_ws_url,
        help="LMNT-compatible endpoint (default: LMNT_WS_URL, else an embedded local server)",
    )
    say.add_argument(
        "--api-key",
        help="API key for --ws-url (default: LMNT_API_KEY; not needed "
        "for a loopback server that accepts any key)",
    )
    say.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust for wss://")
    say.add_argument(
        "--allow-insecure",
        action="store_true",
        help="allow sending the key over ws:// to a host that is not loopback",
    )
    say.add_argument(
        "--engine",
        choices=ENGINES,
        help="engine of the embedded server (implies it: LMNT_WS_URL is ignored)",
    )
    say.add_argument(
        "--protocol-version",
        choices=(LEGACY_VERSION, *TYPED_VERSIONS),
        default=LEGACY_VERSION,
        help="LMNT protocol (default 1.0, legacy)",
    )
    say.add_argument("-q", "--quiet", action="store_true", help="nothing on stderr but errors")

    voices = sub.add_parser(
        "voices",
        parents=[common],
        help="list the voices a server offers",
        description="List the voices of a server (default: an embedded local server).",
    )
    voices.add_argument(
        "--url",
        type=_base_url,
        help="server base URL (http(s)://host:port) "
        "or its ws(s):// URL; default: an embedded server",
    )
    voices.add_argument("--api-key", help="API key (default: LMNT_API_KEY)")
    voices.add_argument("--ca-file", metavar="PEM", help="CA bundle to trust for https://")
    voices.add_argument(
        "--allow-insecure",
        action="store_true",
        help="allow sending the key over http:// to a host that is not loopback",
    )
    voices.add_argument(
        "--engine", choices=ENGINES, default="auto", help="engine of the embedded server"
    )
    voices.add_argument("--json", action="store_true", help="print the server's JSON list")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations argparse cannot express; errors exit 2 like argparse's own."""
    if args.command == "serve" and bool(args.tls_cert) != bool(args.tls_key):
        parser.error("serve: --tls-cert and --tls-key go together")
    if args.command == "say":
        if args.engine is not None and args.ws_url:
            parser.error(
                "say: --engine chooses the embedded server's engine; it cannot be "
                "combined with --ws-url"
            )
        if args.output == "-" and sys.stdout.isatty():
            parser.error("say: refusing to write a WAV file to a terminal; use -o FILE")


# -- engines and servers -----------------------------------------------------------------------


def _engine(
    name: str, quiet: bool = False, voice_dirs: Sequence[Path] = (), announce: bool = True
) -> Any:
    """The engine for an embedded or served server, named on stderr (``announce``, unless
    ``quiet``): ``auto`` is the best installed one (neural, espeak-ng, then the tone, with a
    hint)."""
    from .server.engines import EngineUnavailable, make_engine

    try:
        engine = make_engine(name, voice_dirs=voice_dirs)
    except (EngineUnavailable, RuntimeError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if not quiet:
        if engine.name == "tone" and name == "auto":
            _note(
                "no speech engine is installed, using the 440 Hz tone engine "
                '(for speech, from a checkout: pip install ".[local]")'
            )
        elif announce:
            _note(f"speech engine: {_describe_engine(engine)}")
    return engine


def _describe_engine(engine: Any) -> str:
    if engine.name != "neural":
        return str(engine.name)
    voices = [v for v in engine.voices() if "alias" not in v.tags]
    if voices:
        return f"neural (Piper; voices {', '.join(v.id for v in voices)})"
    return str(engine.name)


def _tls_reason(exc: BaseException, args: argparse.Namespace) -> str:
    """Say which file is wrong and how: OpenSSL says "[SSL] PEM lib" for most of it."""
    if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
        return f"{args.tls_key} is not the private key of the certificate in {args.tls_cert}"
    if not isinstance(exc, ssl.SSLError):
        return _reason(exc)

    def pem(path: str) -> str:
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return ""

    if "-----BEGIN CERTIFICATE-----" not in pem(args.tls_cert):
        return f"{args.tls_cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
    if "PRIVATE KEY-----" not in pem(args.tls_key):
        return f"{args.tls_key} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)"
    if "ENCRYPTED" in pem(args.tls_key):
        return f"{args.tls_key} is encrypted; give an unencrypted key"
    return f"{args.tls_cert} or {args.tls_key} could not be read as PEM ({_reason(exc)})"


def _note(message: str) -> None:
    print(f"lmnt-local: {message}", file=sys.stderr, flush=True)


def _reachable_urls(server: Any, host: str) -> tuple[str, str]:
    """(ws URL, http URL) a client can use: a wildcard bind address is not one to connect to."""
    ws_url: str = server.ws_url
    http_url: str = server.http_url
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}
    if host in wildcard:
        netloc = f"{wildcard[host]}:{server.port}"
        ws_url = urlunsplit(urlsplit(ws_url)._replace(netloc=netloc))
        http_url = urlunsplit(urlsplit(http_url)._replace(netloc=netloc))
    return ws_url, http_url


async def _serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the URL goes to stdout first so scripts can wait for it."""
    return await serve(args)


# -- say ---------------------------------------------------------------------------------------


class _Progress:
    """Seconds of audio received so far, on stderr, so a long text does not look hung.

    On a terminal one line is rewritten in place; otherwise (a log, a CI job, a pipe) a line is
    written when audio starts and then at most once a second, so logs stay readable.
    """

    def __init__(self, stream: IO[str], *, interactive: bool) -> None:
        self.stream = stream
        self.interactive = interactive
        self.started = time.monotonic()
        self._last = self.started
        self._shown = False

    def start(self, text: str, where: str) -> None:
        words = len(text.split())
        noun = "word" if words == 1 else "words"
        self._line(f"speaking {len(text):,} characters ({words:,} {noun}) via {where}")

    def first_audio(self, seconds: float) -> None:
        if not self.interactive:
            self._line(f"first audio after {seconds:.2f} s")

    def update(self, audio_seconds: float) -> None:
        now = time.monotonic()
        if now - self._last < (0.1 if self.interactive else 1.0):
            return
        self._last = now
        message = f"{audio_seconds:7.1f} s of audio after {now - self.started:5.1f} s"
        if self.interactive:
            print(f"\rlmnt-local: {message}", end="", file=self.stream, flush=True)
            self._shown = True
        else:
            self._line(message)

    def done(self) -> None:
        if self._shown:
            print(file=self.stream, flush=True)  # end the line rewritten in place
            self._shown = False

    def _line(self, message: str) -> None:
        self.done()
        print(f"lmnt-local: {message}", file=self.stream, flush=True)


@dataclass(frozen=True, slots=True)
class Speech:
    """What ``speak`` heard: the PCM the track played and how long it took."""

    pcm: bytes  # mono s16le at ``rate``
    rate: int
    first_audio: float | None  # seconds from the start to the first audio frame
    wall: float  # seconds from the start to the last frame played

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / self.rate


def _turns(text: str) -> list[list[str]]:
    """The text as turns of at most ``TURN_CHARS``, each a list of ``CHUNK_CHARS`` pieces."""
    turns: list[list[str]] = [[]]
    size = 0
    # Sentences, long ones cut after a space: how an agent's chunker streams text, and the same
    # cut the local server makes.
    from .server.config import speech_units

    for piece in speech_units(text, CHUNK_CHARS):
        if size + len(piece) > TURN_CHARS and turns[-1]:
            turns.append([])
            size = 0
        turns[-1].append(piece)
        size += len(piece)
    return turns


async def speak(
    text: str,
    *,
    ws_url: str,
    api_key: str,
    progress: _Progress | None = None,
    drain_timeout: float = 10.0,
    **options: Any,
) -> Speech:
    """Speak ``text`` through ``LMNTTTS`` into the framework's track; return what it played.

    The track is drained the way the WebRTC sender pulls it, only as fast as frames are ready
    instead of in real time, and the end is the track's own "last audio byte" callback after
    ``mark_synthesis_complete()``: the audio is complete when the framework says everything
    queued was played, not when ``synthesize()`` returns.  A failure after audio started is
    only an ``"error"`` event for the plugin (the agent keeps what was heard); here it is an
    error, because a silently truncated WAV is worse than none.
    """
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack
    from videosdk.agents.tts.tts import FlushMarker

    from .tts import LMNTTTS

    loop = asyncio.get_running_loop()
    started = time.monotonic()
    track = CustomAudioStreamTrack(loop)
    track._start = 0.0  # a start in the past: recv() never waits for real time
    track._speaking_grace_period = 0.0
    # One utterance: a warm spare connection would only be opened to be closed again.
    options.setdefault("warm_connection", False)
    tts = LMNTTTS(api_key=api_key, ws_url=ws_url, **options)
    tts.audio_track = track
    tts.loop = loop
    errors: list[str] = []
    tts.on("error", lambda message: errors.append(str(message)))
    first_audio: list[float] = []
    played_all = asyncio.Event()

    async def on_first_audio() -> None:
        if not first_audio:
            first_audio.append(time.monotonic() - started)
            if progress is not None:
                progress.first_audio(first_audio[0])

    async def on_last_audio() -> None:
        played_all.set()

    tts.on_first_audio_byte(on_first_audio)
    track.on_last_audio_byte(on_last_audio)
    frames: list[bytes] = []
    frame_seconds = track.samples / track.sample_rate

    async def drain() -> None:
        while True:
            before = track._samples_played
            frame = await track.recv()
            # The track counts a frame as played only when it carried queued audio.
            if track._samples_played > before and frame is not None:
                frames.append(_frame_bytes(frame))
                if progress is not None:
                    progress.update(len(frames) * frame_seconds)
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(0.002)

    async def text_of(pieces: list[str]) -> AsyncIterator[Any]:
        for piece in pieces:
            yield piece
        yield FlushMarker()  # as the framework's SpeechGeneration ends every turn

    drainer = loop.create_task(drain(), name="lmnt-local-drain")
    try:
        for pieces in _turns(text):
            tts.reset_first_audio_tracking()
            track.mark_synthesis_start()
            await tts.synthesize(text_of(pieces))
            if errors:
                received = track._cumulative_input_samples / track.sample_rate
                raise CLIError(f"the server failed after {received:.1f} s of audio: {errors[0]}")
        track.mark_synthesis_complete()
        try:
            await asyncio.wait_for(played_all.wait(), drain_timeout)
        except TimeoutError:
            # Only a partial frame can be stuck (the plugin pads turns to whole frames).
            log.warning("the track did not report its last audio; taking what it holds")
            frames.extend(_frame_bytes(f) for f in track.frame_buffer)
            frames.append(bytes(track.audio_data_buffer))
    finally:
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer
        await tts.aclose()
        if progress is not None:
            progress.done()
    return Speech(
        pcm=b"".join(frames),
        rate=int(track.sample_rate),
        first_audio=first_audio[0] if first_audio else None,
        wall=time.monotonic() - started,
    )


def _frame_bytes(frame: Any) -> bytes:
    return bytes(frame.to_ndarray().reshape(-1).astype("<i2").tobytes())


def wav_bytes(pcm: bytes, rate: int = TRACK_RATE) -> bytes:
    """A complete mono s16 WAV file, built in memory so it can go to a pipe (no seeking)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


class _Output:
    """The WAV destination, checked before any synthesis and written atomically after.

    A temporary file is created next to the target at once, so an unwritable path fails in
    milliseconds instead of after speaking (which may cost money on a remote service), and the
    target is replaced only by a complete file: an error or Ctrl-C never leaves half a WAV.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._tmp: str | None = None
        if path == "-":
            return
        target = Path(path)
        if target.is_dir():
            raise CLIError(f"cannot write {path}: it is a directory")
        # O_EXCL with a random name instead of mkstemp: the file gets the umask's permissions
        # like any other the user writes (mkstemp's 0600 would need a chmod, and reading the
        # umask means setting it, which races with other threads).
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            raise CLIError(f"cannot write {path}: {_reason(exc)}") from None
        self._tmp = str(tmp)

    def commit(self, data: bytes) -> None:
        try:
            if self._tmp is None:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
                return
            with open(self._tmp, "wb") as f:
                f.write(data)
            os.replace(self._tmp, self.path)
            self._tmp = None
        except OSError as exc:
            raise CLIError(f"cannot write {self.path}: {_reason(exc)}") from None

    def discard(self) -> None:
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)
            self._tmp = None


def _read_text(args: argparse.Namespace) -> str:
    if args.text and args.text != ["-"]:
        text = " ".join(args.text)
    else:
        if sys.stdin.isatty() and not args.quiet:
            _note("reading the text from stdin (end it with Ctrl-D)")
        text = sys.stdin.read()
    # Surrounding whitespace (echo's newline) is not speech: the tone engine would make it
    # 50 ms of silence per character, espeak nothing at all.
    text = text.strip()
    if not text:
        raise CLIError("no text to speak (give it as an argument or on stdin)", EXIT_USAGE)
    return text


@dataclass(frozen=True, slots=True)
class _Target:
    url: str | None  # None: start an embedded server
    key: str
    key_given: bool


def _target(args: argparse.Namespace) -> _Target:
    """Which server to speak through, with which key.

    ``--engine`` means the embedded server; otherwise ``--ws-url``, then ``LMNT_WS_URL``.  A
    remote server needs a key; a loopback one gets a placeholder if none is given, since a
    keyless ``lmnt-local serve`` accepts any non-empty key (and one with keys says so).
    """
    url = args.ws_url
    if url is None and args.engine is None:
        env = os.getenv("LMNT_WS_URL")
        if env:
            try:
                url = _ws_url(env)
            except argparse.ArgumentTypeError as exc:
                raise CLIError(f"LMNT_WS_URL: {exc}", EXIT_USAGE) from None
    key = args.api_key or os.getenv("LMNT_API_KEY") or None
    if url is None:
        return _Target(None, LOCAL_KEY, False)  # never hand a real key to our own server
    if key is None:
        from .connection import is_loopback

        if not is_loopback(urlsplit(url).hostname):
            raise CLIError(
                f"an API key is needed for {url}: pass --api-key or set LMNT_API_KEY", EXIT_USAGE
            )
        return _Target(url, LOCAL_KEY, False)
    return _Target(url, key, True)


@contextlib.asynccontextmanager
async def _endpoint(target: _Target, engine: str | None, quiet: bool) -> AsyncIterator[str]:
    if target.url is not None:
        yield target.url
        return
    from .server import LocalLMNTServer

    async with LocalLMNTServer(engine=_engine(engine or "auto", quiet), port=0) as server:
        yield server.ws_url


def _describe(exc: Exception, target: _Target) -> CLIError:
    """One line that says what to fix; never the key (the plugin's errors are redacted)."""
    from .errors import LMNTAuthError, LMNTConnectionError, LMNTServerError

    if isinstance(exc, LMNTAuthError):
        detail = exc.server_message or exc.message
        hint = (
            "no API key was given: pass --api-key or set LMNT_API_KEY"
            if not target.key_given
            else "check --api-key / LMNT_API_KEY"
        )
        return CLIError(f"the server refused the API key ({detail}); {hint}")
    if isinstance(exc, LMNTConnectionError):
        return CLIError(_as_flags(exc.message))  # names the URL and the reason
    if isinstance(exc, LMNTServerError) and not exc.retryable and _refused_option(exc):
        # The server validates what the plugin cannot know (its languages, models...): a
        # refused option is a command line that cannot work, as the plugin's own checks say.
        return CLIError(f"the server refused an option: {exc.server_message}", EXIT_USAGE)
    if isinstance(exc, ValueError):  # LMNTTTS's checks of options the parser lets through
        return CLIError(_as_flags(str(exc)), EXIT_USAGE)
    return CLIError(str(exc))


#: Init fields a server names when it refuses one ("language: Input should be ...", as LMNT's
#: validation errors read); each is a command-line option of ``say``.
_OPTION_FIELDS = ("voice", "language", "model", "format", "sample_rate")


def _refused_option(exc: Any) -> bool:
    if exc.error_type == "invalid_request_error":
        return True
    message = (exc.server_message or "").strip()
    return any(message.startswith(f"{name}:") for name in _OPTION_FIELDS)


async def _check_voice(args: argparse.Namespace, url: str, key: str) -> None:
    """Refuse a ``--voice`` the server does not list, before speaking (a mistyped voice is
    otherwise spoken in a default voice, silently).

    The list is the server's own ``GET /v1/ai/voice/list``, so engines with other voices and
    other servers are judged by what they offer.  A server without that endpoint, or one that
    refuses the key there, is not second-guessed; nor is a remote ``ws://`` one, where the key
    must not travel in clear text unless the user said so.
    """
    from .connection import is_loopback

    parts = urlsplit(url)
    if parts.scheme == "ws" and not is_loopback(parts.hostname) and not args.allow_insecure:
        return
    try:
        voices = await _fetch_voices(url, key, args.ca_file, wait=3.0)
    except CLIError as exc:
        log.debug("not checking --voice: %s", exc)
        return
    ids = [str(v["id"]) for v in voices if isinstance(v.get("id"), str)]
    if ids and args.voice.casefold() not in {i.casefold() for i in ids}:
        raise CLIError(
            f"unknown voice {args.voice!r}; this server's voices are: {', '.join(ids)}",
            EXIT_USAGE,
        )


#: The plugin's hints name Python keywords; on the command line they are flags.
_FLAG_HINTS = {
    "pass allow_insecure=True": "pass --allow-insecure",
    "pass ssl= or a CA bundle": "pass --ca-file",
    "ca_file ": "--ca-file ",
}


def _as_flags(message: str) -> str:
    for python, flag in _FLAG_HINTS.items():
        message = message.replace(python, flag)
    return message


@contextlib.contextmanager
def _terminate_cancels() -> Iterator[None]:
    """SIGTERM cancels the command as Ctrl-C does, so cleanup (the temporary WAV, the embedded
    server, the connection) runs instead of the process vanishing mid-write."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    try:
        if task is None:
            raise RuntimeError("no task")
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    except (NotImplementedError, RuntimeError):  # Windows, or main() run off the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


async def _say(args: argparse.Namespace) -> int:
    with _terminate_cancels():
        return await _say_text(args)


async def _say_text(args: argparse.Namespace) -> int:
    from .errors import LMNTError

    text = _read_text(args)
    target = _target(args)
    quiet = bool(args.quiet)
    progress = None
    if not quiet and len(text) >= PROGRESS_CHARS:
        progress = _Progress(sys.stderr, interactive=sys.stderr.isatty())
    output = _Output(args.output)  # before speaking: an unwritable path fails at once
    try:
        async with _endpoint(target, args.engine, quiet) as url:
            await _check_voice(args, url, target.key)
            if progress is not None:
                progress.start(text, url if target.url else "the embedded local server")
            try:
                speech = await speak(
                    text,
                    ws_url=url,
                    api_key=target.key,
                    progress=progress,
                    voice=args.voice,
                    language=args.language,
                    format=args.format,
                    sample_rate=args.sample_rate,
                    protocol_version=args.protocol_version,
                    ca_file=args.ca_file,
                    allow_insecure=args.allow_insecure,
                )
            except (LMNTError, ValueError) as exc:
                raise _describe(exc, target) from None
        if not speech.pcm:
            raise CLIError("the server produced no audio for this text")
        output.commit(wav_bytes(speech.pcm, speech.rate))
    finally:
        output.discard()
    if not quiet:
        where = "stdout" if args.output == "-" else args.output
        first = f", first audio after {speech.first_audio:.2f} s" if speech.first_audio else ""
        _note(
            f"wrote {where}: {speech.seconds:.2f} s of audio ({speech.rate} Hz mono s16) "
            f"in {speech.wall:.2f} s{first}"
        )
    return EXIT_OK


# -- voices ------------------------------------------------------------------------------------


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
    api_key = args.api_key or os.getenv("LMNT_API_KEY") or LOCAL_KEY
    if args.url:
        from .connection import is_loopback

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
        from .server import LocalLMNTServer

        async with LocalLMNTServer(engine=_engine(args.engine, quiet=True), port=0) as server:
            voices = await _fetch_voices(server.http_url, LOCAL_KEY, None)
    if args.json:
        print(json.dumps(voices, indent=2))
        return EXIT_OK
    width = max([10, *(len(str(v.get("id", "?"))) for v in voices)])  # Piper ids are long
    for v in voices:
        print(f"{v.get('id', '?'):<{width}} {v.get('gender', ''):<7} {v.get('description', '')}")
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """The useful part of an OS/library error, without errno noise or reprs."""
    if getattr(exc, "os_error", None) is not None:  # aiohttp's "Cannot connect to host ..."
        from .connection import connect_failure_reason

        return connect_failure_reason(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _configure_logging(verbose: bool) -> None:
    """Debug logs only when asked for.

    By default nothing is configured: the plugin's and the framework's warnings repeat what
    the one-line error already says (``videosdk`` carries a ``NullHandler``, so they stay
    silent), and ``main()`` called in-process must not change the caller's logging.
    """
    if verbose:
        # The plugin and server at debug; the framework's debug is a line per 20 ms frame.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("videosdk.plugins.lmnt").setLevel(logging.DEBUG)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lmnt-local``; returns the exit code (argparse errors raise ``SystemExit(2)``)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    _configure_logging(args.verbose)
    handlers: dict[str, Callable[[argparse.Namespace], Any]] = {
        "serve": _serve,
        "say": _say,
        "voices": _voices,
    }
    try:
        code: int = asyncio.run(handlers[args.command](args))
    except CLIError as exc:
        _note(str(exc))
        return exc.code
    except KeyboardInterrupt:
        _note("interrupted")  # no WAV was written (see _Output)
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:  # SIGTERM during say (see _terminate_cancels)
        return EXIT_TERMINATED
    except BrokenPipeError:  # `lmnt-local voices | head -1`: the reader left, that is fine
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
