"""``lmnt-local``: serve the local LMNT-compatible server, speak text to a WAV file, list voices.

``say`` goes through ``LMNTTTS`` and the framework's real ``CustomAudioStreamTrack``, the same
path an agent's audio takes, so a WAV that sounds right is evidence the plugin is right; in a
server-only install (no plugin) it speaks through a small protocol client (:mod:`.client`).
With no ``--ws-url`` it starts an embedded server, so it needs no account and no network.

Every failure the user can cause or fix (bad text, an unwritable file, a wrong key, a server
that is not there) ends in one ``lmnt-local: ...`` line on stderr and a non-zero exit code,
never a traceback: ``2`` for a command line that cannot work (argparse's own code), ``1`` for a
failure while running, ``130`` for Ctrl-C.  See ``docs/cli.md``.

This module is the parser and the entry point; the commands are :mod:`.serve`,
:mod:`.say` (speaking in :mod:`.speak`) and :mod:`.voices`, and what they share
(exit codes, ``CLIError``, notes, engine choice) is :mod:`.common`.  Every name they define
that was importable from here before the split still is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

# Names defined in the command modules stay importable from here ("X as X": re-exported).
from lmnt_local.cli.common import ENGINES as ENGINES
from lmnt_local.cli.common import EXIT_FAILURE as EXIT_FAILURE
from lmnt_local.cli.common import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from lmnt_local.cli.common import EXIT_OK as EXIT_OK
from lmnt_local.cli.common import EXIT_TERMINATED as EXIT_TERMINATED
from lmnt_local.cli.common import EXIT_USAGE as EXIT_USAGE
from lmnt_local.cli.common import LOCAL_KEY as LOCAL_KEY
from lmnt_local.cli.common import CLIError as CLIError
from lmnt_local.cli.common import _describe_engine as _describe_engine
from lmnt_local.cli.common import _engine as _engine
from lmnt_local.cli.common import _note as _note
from lmnt_local.cli.common import _reason as _reason
from lmnt_local.cli.common import _ws_url as _ws_url
from lmnt_local.cli.say import PROGRESS_CHARS as PROGRESS_CHARS
from lmnt_local.cli.say import _say
from lmnt_local.cli.serve import add_serve_options, exit_now, serve
from lmnt_local.cli.speak import CHUNK_CHARS as CHUNK_CHARS
from lmnt_local.cli.speak import TRACK_RATE as TRACK_RATE
from lmnt_local.cli.speak import TURN_CHARS as TURN_CHARS
from lmnt_local.cli.speak import Speech, speak, wav_bytes
from lmnt_local.cli.speak import _Progress as _Progress
from lmnt_local.cli.voices import _fetch_voices as _fetch_voices
from lmnt_local.cli.voices import _http_base as _http_base
from lmnt_local.cli.voices import _voices
from lmnt_local.protocol import FORMATS, LEGACY_VERSION, SAMPLE_RATES, TYPED_VERSIONS
from lmnt_local.version import __version__

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "Speech", "main", "speak", "wav_bytes"]


# -- argument parsing --------------------------------------------------------------------------


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {port}")
    return port


def _speed(value: str) -> float:
    """LMNT's documented range; checked here so a typo is a usage error, not a refused turn."""
    try:
        speed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.25 <= speed <= 2.0:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"speed must be between 0.25 and 2.0, got {value}")
    return speed


def _server_key(value: str) -> str:
    # An empty key can never be sent (clients refuse it), so a server accepting only "" would
    # accept nobody.
    if not value.strip():
        raise argparse.ArgumentTypeError("an accepted API key cannot be empty")
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


def _add_voice_dirs(parser: argparse.ArgumentParser, description: str) -> None:
    """``--voices DIR`` (repeatable), the same option on every command that starts a server."""
    parser.add_argument(
        "--voices",
        action="append",
        type=Path,
        default=[],
        dest="voice_dirs",
        metavar="DIR",
        help=description,
    )


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
        help="speech engine: hibari, neural (Piper), espeak-ng, or the 440 Hz test tone "
        "(default auto: the best one installed, in that order)",
    )
    _add_voice_dirs(
        serve,
        "directory of Piper voices (NAME.onnx + NAME.onnx.json), repeatable: each "
        "becomes voice id NAME of the neural engine",
    )
    add_serve_options(serve)

    say = sub.add_parser(
        "say",
        parents=[common],
        help="speak text into a WAV file (through LMNTTTS when the plugin is installed)",
        description="Speak text into a WAV file (24 kHz mono s16, what the framework's audio "
        "track plays): through LMNTTTS and the track when the plugin is installed, else "
        "through a bare protocol client. Without --ws-url (or LMNT_WS_URL) an embedded local "
        "server speaks, so no key is needed. If the server fails after audio started, the "
        "audio received is written and the exit code is 1.",
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
    say.add_argument(
        "--speed",
        type=_speed,
        help="pace, 0.25 (slow) to 2.0 (twice as fast); default: the server's (1.0)",
    )
    _add_voice_dirs(
        say, "directory of Piper voices for the embedded server, as for serve (repeatable)"
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
    _add_voice_dirs(voices, "directory of Piper voices for the embedded server, as for serve")
    fetch_help = (
        "download voices into the directory the server reads by default "
        "($LMNT_VOICES_HOME, else $XDG_DATA_HOME/lmnt-local/voices)"
    )
    fetch = voices.add_subparsers(dest="voices_command", metavar="{fetch}").add_parser(
        "fetch",
        parents=[common],
        help=fetch_help,
        description=fetch_help + ": Piper's catalogue (pinned revision; md5 checked) and "
        "hibari's kore, emma, fenrir and fable (sha256 checked). A download that is cut off "
        "or does not match leaves nothing behind. $LMNT_VOICES_HUB_URL replaces "
        "https://huggingface.co (a mirror with the same paths).",
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="e.g. en_US-amy-medium, kore")
    fetch.add_argument(
        "--list", action="store_true", help="list the fetchable voices instead (with sizes)"
    )
    fetch.add_argument("--language", help="with --list: only this language (e.g. de, en_GB)")
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
        if args.voice_dirs and args.ws_url:
            parser.error("say: --voices gives the embedded server voices; not with --ws-url")
    if args.command == "voices" and getattr(args, "voices_command", None) == "fetch":
        if bool(args.names) == bool(args.list):
            parser.error("voices fetch: give voice names, or --list")


# -- serve helpers (used by cli_serve) --------------------------------------------------------


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


# -- entry point -------------------------------------------------------------------------------


def _configure_logging(verbose: bool) -> None:
    """Debug logs only when asked for.

    By default nothing is configured: the plugin's and the framework's warnings repeat what
    the one-line error already says (``videosdk`` carries a ``NullHandler``, so they stay
    silent), and ``main()`` called in-process must not change the caller's logging.
    """
    if verbose:
        # The plugin and server at debug; the framework's debug is a line per 20 ms frame.
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("lmnt_local").setLevel(logging.DEBUG)
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
        _note(str(exc), logging.ERROR)
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
    if argv is None and args.command == "serve":
        # The program (not an in-process call) has stopped its server: exit now rather than
        # spend 0.3-1 s unloading the codecs, the model and the rest (docs/cli.md, SIGTERM).
        exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
