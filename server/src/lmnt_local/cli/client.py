"""How ``lmnt-local say`` speaks when the plugin is not installed: a small asyncio client.

The server distribution carries no ``videosdk-*`` package, so a server-only install cannot
speak through ``LMNTTTS``.  This client is the protocol and nothing else: one aiohttp WebSocket
per turn, frames built and read by the sans-IO codec (:mod:`lmnt_local.protocol`), the same
key and URL policy (:mod:`lmnt_local.protocol.hosts`) and the same one-line errors as the plugin
path.  Compressed formats are decoded with PyAV once the stream has ended (a WAV is written
only then anyway), and the WAV is at the rate the plugin path writes, resampled with soxr.

When the plugin *is* installed ``say`` speaks through it instead (:mod:`.speak`): that path is
evidence the plugin is right.  :func:`use_plugin` makes the choice.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import ssl
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import numpy as np
import numpy.typing as npt

from lmnt_local.protocol import (
    Audio,
    ClientDecoder,
    ErrorFrame,
    ProtocolViolation,
    SessionOptions,
    encode_client_eof,
    encode_client_text,
)
from lmnt_local.protocol.hosts import (
    INSECURE_ENV,
    connect_failure_reason,
    insecure_allowed_by_env,
    is_private_host,
)

__all__ = ["CLIENT_ENV", "ClientFailure", "speak_bare", "to_track_pcm", "use_plugin"]

#: ``say``'s client: ``auto`` (the plugin when importable, else this one), ``plugin`` or
#: ``bare``.  Mainly for tests, which check both paths in one environment.
CLIENT_ENV = "LMNT_LOCAL_SAY_CLIENT"
TRACK_RATE = 24000  # what the plugin path's track plays, so what either path's WAV holds
#: Seconds of server silence tolerated while audio is owed (longer than the plugin's 5 s: a
#: CLI waits for the slow first sentence of a neural engine rather than fail).
RECEIVE_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0

Kind = Literal["auth", "connection", "server", "protocol"]


def use_plugin() -> bool:
    """Whether ``say`` speaks through the plugin: ``LMNT_LOCAL_SAY_CLIENT`` if set, else
    whether ``videosdk.plugins.lmnt`` is importable."""
    choice = os.getenv(CLIENT_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "plugin", "bare"):
        from lmnt_local.cli.common import EXIT_USAGE, CLIError

        raise CLIError(f"{CLIENT_ENV} must be auto, plugin or bare; got {choice!r}", EXIT_USAGE)
    if choice != "auto":
        return choice == "plugin"
    try:
        return importlib.util.find_spec("videosdk.plugins.lmnt") is not None
    except ImportError:  # ``videosdk`` itself missing
        return False


class ClientFailure(Exception):
    """A failure of the bare client, with what ``say`` needs to describe it as the plugin's
    typed errors are described (``kind`` stands for the plugin's error class)."""

    def __init__(
        self,
        message: str,
        kind: Kind,
        *,
        server_message: str | None = None,
        error_type: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.server_message = server_message
        self.error_type = error_type
        self.retryable = retryable


def _display(url: str) -> str:
    """``scheme://host:port``: never userinfo or a query, which may carry credentials."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _safe_url(url: str) -> str:
    """``url`` with userinfo and every query value masked, as the plugin shows URLs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(
        f"{item.split('=', 1)[0]}=***" if "=" in item else item for item in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _scrub(text: str, key: str) -> str:
    return text.replace(key, "***") if len(key) >= 8 else text


def check_url(url: str, allow_insecure: bool) -> None:
    """The plugin's rule: the key never goes over ``ws://`` to a public host unless asked."""
    parts = urlsplit(url)
    insecure_ok = allow_insecure or insecure_allowed_by_env()
    if parts.scheme == "ws" and not insecure_ok and not is_private_host(parts.hostname):
        raise ValueError(
            f"ws_url {_safe_url(url)!r} is plain ws:// to a public host: the API key would "
            f"travel unencrypted. Use wss://, or, if this is intended, pass --allow-insecure "
            f"or set {INSECURE_ENV}=1 (ws:// to loopback, private addresses and single-label or "
            ".local/.internal/.svc names is allowed without either)."
        )


def _ssl_context(ca_file: str | None) -> ssl.SSLContext | bool:
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"ca_file {ca_file!r} could not be loaded: {exc}") from None


def _handshake_failure(status: int, where: str) -> ClientFailure:
    text = f"LMNT handshake with {where} was refused with HTTP {status}"
    if status in (401, 403):
        return ClientFailure(f"{text}: the API key was rejected", "auth")
    if status == 429:
        return ClientFailure(f"{text}: rate limited", "server", retryable=True)
    if status >= 500:
        return ClientFailure(f"{text}: server error", "server", retryable=True)
    if status == 404:
        text += ": no LMNT endpoint at that path"
    return ClientFailure(text, "connection")


def _frame_failure(frame: ErrorFrame, key: str) -> ClientFailure:
    """As the plugin maps an error frame (``connection.error_from_frame``)."""
    message = _scrub(frame.message, key)
    lowered = message.lower()
    kind: Kind = "server"
    if frame.type in ("authentication_error", "permission_error") or "api key" in lowered:
        kind = "auth"
    retryable = frame.type in ("internal_server_error", "rate_limit_error")
    return ClientFailure(
        f"LMNT server error: {message}",
        kind,
        server_message=message,
        error_type=frame.type,
        retryable=retryable,
    )


class _Turn:
    """What one connection received: the encoded audio, and how it ended."""

    def __init__(self) -> None:
        self.audio = bytearray()
        self.failure: ClientFailure | None = None


async def _run_turn(
    http: aiohttp.ClientSession,
    url: str,
    options: SessionOptions,
    pieces: Sequence[str],
    ssl_ctx: ssl.SSLContext | bool,
    on_audio: Any,
) -> _Turn:
    where = _display(url)
    turn = _Turn()
    key = options.api_key
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            ws = await http.ws_connect(url, ssl=ssl_ctx, max_msg_size=4 * 1024 * 1024)
    except TimeoutError:
        raise ClientFailure(
            f"could not connect to LMNT at {where} within {CONNECT_TIMEOUT:g} s", "connection"
        ) from None
    except aiohttp.WSServerHandshakeError as exc:
        raise _handshake_failure(exc.status, where) from None
    except aiohttp.ClientConnectorCertificateError as exc:
        raise ClientFailure(
            f"TLS certificate of {where} could not be verified "
            f"({_scrub(str(exc.certificate_error), key)}); pass --ca-file",
            "connection",
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        detail = _scrub(connect_failure_reason(exc), key)
        raise ClientFailure(
            f"could not connect to LMNT at {where}: {detail}", "connection"
        ) from None
    decoder = ClientDecoder(options.version)
    async with ws:
        try:
            await ws.send_str(options.encode_init())
            for piece in pieces:
                await ws.send_str(encode_client_text(piece, options.version))
            await ws.send_str(encode_client_eof(options.version))
        except (aiohttp.ClientError, ConnectionError):
            # The server closed while we were still sending (it refused the session or failed
            # before audio): what it said before closing is read below and reported, rather
            # than this write error.
            pass
        for _ in range(10_000_000):  # bounded: the server closes after eof
            try:
                msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
            except TimeoutError:
                turn.failure = ClientFailure(
                    f"no answer from LMNT at {where} for {RECEIVE_TIMEOUT:g} s", "connection"
                )
                break
            if msg.type is aiohttp.WSMsgType.BINARY:
                events = decoder.binary(msg.data)
            elif msg.type is aiohttp.WSMsgType.TEXT:
                events = decoder.text(msg.data)
            else:
                code = ws.close_code
                if turn.failure is None and code not in (1000, None):
                    turn.failure = ClientFailure(
                        f"LMNT at {where} closed the connection (code {code})",
                        "connection",
                        retryable=True,
                    )
                break
            for event in events:
                if isinstance(event, Audio):
                    turn.audio.extend(event.data)
                    on_audio(len(event.data))
                elif isinstance(event, ErrorFrame) and turn.failure is None:
                    turn.failure = _frame_failure(event, key)
                elif isinstance(event, ProtocolViolation) and turn.failure is None:
                    turn.failure = ClientFailure(
                        f"LMNT protocol error: {_scrub(event.reason, key)}", "protocol"
                    )
            if turn.failure is not None and turn.failure.kind == "protocol":
                break
    return turn


async def speak_bare(
    text: str,
    *,
    ws_url: str,
    api_key: str,
    progress: Any = None,
    voice: str = "ava",
    language: str = "auto",
    format: str = "pcm_s16le",
    sample_rate: int = 24000,
    protocol_version: str = "1.0",
    ca_file: str | None = None,
    allow_insecure: bool = False,
    speed: float | None = None,
) -> Any:
    """Speak ``text``; return a :class:`~.speak.Speech` at ``TRACK_RATE``.

    A failure before any audio raises :class:`ClientFailure`; one after audio started returns
    what was received with ``failure`` set, so ``say`` can keep it (and say it is partial).
    """
    from lmnt_local.cli.speak import Speech, _turns

    check_url(ws_url, allow_insecure)
    ssl_ctx = _ssl_context(ca_file)
    options = SessionOptions(
        api_key=api_key,
        voice=voice,
        language=language,
        format=format,
        sample_rate=sample_rate,
        version=protocol_version,
        speed=speed,
    )
    started = time.monotonic()
    first_audio: list[float] = []
    received = [0]
    # Seconds per byte where the wire is PCM, for the progress line; compressed formats show
    # only the first audio (their duration is known once decoded).
    width = {"pcm_s16le": 2, "pcm_f32le": 4, "ulaw": 1}.get(format)

    def on_audio(size: int) -> None:
        received[0] += size
        if not first_audio:
            first_audio.append(time.monotonic() - started)
            if progress is not None:
                progress.first_audio(first_audio[0])
        if progress is not None and width is not None:
            progress.update(received[0] / width / sample_rate)

    pcm: list[bytes] = []
    failure: str | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
        try:
            for pieces in _turns(text):
                turn = await _run_turn(http, ws_url, options, pieces, ssl_ctx, on_audio)
                if turn.audio:
                    pcm.append(to_track_pcm(bytes(turn.audio), format, sample_rate))
                if turn.failure is not None:
                    if not received[0]:
                        raise turn.failure
                    failure = turn.failure.message
                    break
        finally:
            if progress is not None:
                progress.done()
    return Speech(
        pcm=b"".join(pcm),
        rate=TRACK_RATE,
        first_audio=first_audio[0] if first_audio else None,
        wall=time.monotonic() - started,
        failure=failure,
    )


def to_track_pcm(data: bytes, fmt: str, rate: int) -> bytes:
    """``data`` in the wire format ``fmt`` at ``rate`` as mono s16le at ``TRACK_RATE``.

    A truncated stream (a failure mid-turn) decodes as far as it goes: a partial last sample or
    MP3 frame is dropped, never an error.
    """
    samples: npt.NDArray[np.float32]
    if fmt == "pcm_s16le":
        samples = np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float32) / np.float32(
            32768
        )
    elif fmt == "pcm_f32le":
        samples = np.frombuffer(data[: len(data) // 4 * 4], "<f4").astype(np.float32)
    else:
        samples, rate = _decode_av(data, fmt, rate)
    if rate != TRACK_RATE and samples.size:
        import soxr

        samples = soxr.resample(samples, rate, TRACK_RATE).astype(np.float32)
    return bytes(
        (np.clip(np.nan_to_num(samples), -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes()
    )


def _decode_av(data: bytes, fmt: str, rate: int) -> tuple[npt.NDArray[np.float32], int]:
    """µ-law, MP3 or WebM/Opus through PyAV, as mono float32 at the stream's own rate."""
    import av

    container_format = {"ulaw": "mulaw", "mp3": "mp3", "webm": "webm"}.get(fmt)
    if container_format is None:
        raise ValueError(f"cannot decode format {fmt!r}")
    options = {"sample_rate": str(rate)} if fmt == "ulaw" else {}
    chunks: list[npt.NDArray[np.float32]] = []
    out_rate = rate
    try:
        with av.open(io.BytesIO(data), format=container_format, options=options) as container:
            stream = container.streams.audio[0]
            out_rate = stream.rate or rate
            resampler = av.AudioResampler(format="flt", layout="mono", rate=out_rate)
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    continue  # a cut last packet of a failed stream
                for frame in frames:
                    for mono in resampler.resample(frame):
                        chunks.append(mono.to_ndarray().reshape(-1).astype(np.float32))
            for mono in resampler.resample(None):
                chunks.append(mono.to_ndarray().reshape(-1).astype(np.float32))
    except av.error.FFmpegError as exc:
        if not chunks:
            raise ClientFailure(
                f"could not decode the server's {fmt} audio: {exc}", "protocol"
            ) from None
    empty: npt.NDArray[np.float32] = np.zeros(0, np.float32)
    return (np.concatenate(chunks) if chunks else empty), out_rate
