"""``lmnt-local say``: which server and key, the text, the WAV file written atomically, and
every failure turned into one line that says what to fix.

The speaking itself is :mod:`.speak`; the voice list it checks ``--voice`` against is
:mod:`.voices`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lmnt_local.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    LOCAL_KEY,
    CLIError,
    _engine,
    _note,
    _reason,
    _report_engine,
    _ws_url,
)
from lmnt_local.cli.speak import _Progress, speak, wav_bytes
from lmnt_local.cli.voices import _fetch_voices

#: Text this long gets a progress indicator on stderr.
PROGRESS_CHARS = 200

log = logging.getLogger("lmnt_local.cli")  # the CLI's one logger


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
    if url is None and args.engine is None and not args.voice_dirs:
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
        from lmnt_local.protocol.hosts import is_loopback

        if not is_loopback(urlsplit(url).hostname):
            raise CLIError(
                f"an API key is needed for {url}: pass --api-key or set LMNT_API_KEY", EXIT_USAGE
            )
        return _Target(url, LOCAL_KEY, False)
    return _Target(url, key, True)


@contextlib.asynccontextmanager
async def _endpoint(
    target: _Target, args: argparse.Namespace, quiet: bool
) -> AsyncIterator[tuple[str, Any]]:
    """The URL to speak to, and the embedded server's engine (``None`` for another server)."""
    if target.url is not None:
        yield target.url, None
        return
    from lmnt_local.server import LocalLMNTServer

    engine = _engine(args.engine or "auto", quiet, voice_dirs=args.voice_dirs)
    async with LocalLMNTServer(engine=engine, port=0) as server:
        if not quiet:
            _report_engine(engine)
            _note_route(engine, args.voice, args.language)
        yield server.ws_url, engine


def _note_route(engine: Any, voice: str, language: str) -> None:
    """Say which voice speaks when it is not what was asked for (another gender, espeak-ng
    for a language no neural voice speaks)."""
    route = getattr(engine, "route", None)
    if not callable(route):
        return
    from lmnt_local.server.engines import LanguageError

    try:
        chosen = route(voice, language)
    except LanguageError:
        return  # the server refuses it with the same words
    if chosen.note is not None:
        _note(f"voice {voice!r}: {chosen.note}")


def _kind(exc: Exception) -> str | None:
    """The plugin's error class, or the bare client's stand-in for it, as one word."""
    from lmnt_local.cli.client import ClientFailure

    if isinstance(exc, ClientFailure):
        return exc.kind
    try:
        from videosdk.plugins.lmnt.errors import (
            LMNTAuthError,
            LMNTConnectionError,
            LMNTServerError,
        )
    except ImportError:
        return None
    for cls, kind in (
        (LMNTAuthError, "auth"),
        (LMNTConnectionError, "connection"),
        (LMNTServerError, "server"),
    ):
        if isinstance(exc, cls):
            return kind
    return None


def _describe(exc: Exception, target: _Target) -> CLIError:
    """One line that says what to fix; never the key (the plugin's errors are redacted, the
    bare client's never carry it).  The same line whichever client spoke."""
    kind = _kind(exc)
    if kind == "auth":
        detail = getattr(exc, "server_message", None) or getattr(exc, "message", str(exc))
        hint = (
            "no API key was given: pass --api-key or set LMNT_API_KEY"
            if not target.key_given
            else "check --api-key / LMNT_API_KEY"
        )
        return CLIError(f"the server refused the API key ({detail}); {hint}")
    if kind == "connection":
        return CLIError(_as_flags(getattr(exc, "message", str(exc))))  # names the URL and why
    if kind == "server" and not getattr(exc, "retryable", False) and _refused_option(exc):
        # The server validates what the plugin cannot know (its languages, models...): a
        # refused option is a command line that cannot work, as the plugin's own checks say.
        return CLIError(
            f"the server refused an option: {getattr(exc, 'server_message', '')}", EXIT_USAGE
        )
    if isinstance(exc, ValueError):  # option checks the parser lets through
        return CLIError(_as_flags(str(exc)), EXIT_USAGE)
    return CLIError(str(exc))


#: Init fields a server names when it refuses one ("language: Input should be ...", as LMNT's
#: validation errors read); each is a command-line option of ``say``.
_OPTION_FIELDS = ("voice", "language", "model", "format", "sample_rate", "speed")


def _refused_option(exc: Any) -> bool:
    if exc.error_type == "invalid_request_error":
        return True
    message = (exc.server_message or "").strip()
    return any(message.startswith(f"{name}:") for name in _OPTION_FIELDS)


async def _check_voice(args: argparse.Namespace, url: str, key: str, quiet: bool = False) -> None:
    """Refuse a ``--voice`` the server does not list, before speaking (a mistyped voice is
    otherwise spoken in a default voice, silently).

    The list is the server's own ``GET /v1/ai/voice/list``, so engines with other voices and
    other servers are judged by what they offer.  A server without that endpoint, or one that
    refuses the key there, is not second-guessed; nor is a remote ``ws://`` one, where the key
    must not travel in clear text unless the user said so.
    """
    from lmnt_local.protocol.hosts import is_loopback

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
    chosen = next((v for v in voices if str(v.get("id")).casefold() == args.voice.casefold()), {})
    tags = chosen.get("tags")
    if not quiet and isinstance(tags, list) and "fallback" in tags:
        _note(f"voice {args.voice!r}: {chosen.get('description', '')}")


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
    from lmnt_local.cli.client import ClientFailure, speak_bare, use_plugin

    # The plugin when installed (its path is evidence the plugin is right), else the bare
    # protocol client of a server-only install; LMNT_LOCAL_SAY_CLIENT forces either.
    plugin = use_plugin()
    failures: tuple[type[Exception], ...] = (ClientFailure, ValueError)
    if plugin:
        from videosdk.plugins.lmnt.errors import LMNTError

        failures = (LMNTError, ValueError)
    text = _read_text(args)
    target = _target(args)
    quiet = bool(args.quiet)
    progress = None
    if not quiet and len(text) >= PROGRESS_CHARS:
        progress = _Progress(sys.stderr, interactive=sys.stderr.isatty())
    output = _Output(args.output)  # before speaking: an unwritable path fails at once
    try:
        async with _endpoint(target, args, quiet) as (url, engine):
            await _check_voice(args, url, target.key, quiet or engine is not None)
            if progress is not None:
                progress.start(text, url if target.url else "the embedded local server")
            try:
                speech = await (speak if plugin else speak_bare)(
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
                    speed=args.speed,
                )
            except failures as exc:
                raise _describe(exc, target) from None
        if not speech.pcm:
            if speech.failure is not None:
                raise CLIError(f"the server failed: {speech.failure}")
            raise CLIError("the server produced no audio for this text")
        output.commit(wav_bytes(speech.pcm, speech.rate))
    finally:
        output.discard()
    where = "stdout" if args.output == "-" else args.output
    if speech.failure is not None:
        # Kept, not thrown away: most of a long text beats none.  The exit code and this line
        # (printed even with -q, as every error is) say the file is not the whole text.
        raise CLIError(
            f"the server failed after {speech.seconds:.1f} s of audio: {speech.failure}; "
            f"wrote the partial audio received to {where}"
        )
    if not quiet:
        first = f", first audio after {speech.first_audio:.2f} s" if speech.first_audio else ""
        _note(
            f"wrote {where}: {speech.seconds:.2f} s of audio ({speech.rate} Hz mono s16) "
            f"in {speech.wall:.2f} s{first}"
        )
    return EXIT_OK
