"""The formats a client may ask for and the media type each is served under.

Apart from the encoders: this is the vocabulary the HTTP and WebSocket layers check requests
and label responses with, and it needs no codec.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ENCODER_FORMATS", "HTTP_FORMATS", "STREAM_FORMATS", "content_type"]

STREAM_FORMATS: tuple[str, ...] = ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm", "raw")
"""Formats a WebSocket session may request (``raw`` is legacy 16-bit PCM)."""

HTTP_FORMATS: tuple[str, ...] = (*STREAM_FORMATS, "wav", "aac")
"""Formats of the HTTP bytes endpoint: the streaming ones plus the two LMNT renders whole."""

ENCODER_FORMATS: tuple[str, ...] = (*HTTP_FORMATS, "ogg_opus", "flac", "wav_stream")
"""Every format :func:`.encoders.make_encoder` makes: LMNT's plus those only the OpenAI-compatible
endpoint offers (Opus in Ogg, FLAC, and WAV streamed with an open-ended header)."""

_CONTENT_TYPES: Final[dict[str, str]] = {
    "pcm_s16le": "application/vnd.lmnt.audio-int16",
    "raw": "application/vnd.lmnt.audio-int16",
    "pcm_f32le": "application/vnd.lmnt.audio-fp32",
    "ulaw": "audio/basic",
    "mp3": "audio/mpeg",
    "webm": "audio/webm",
    "wav": "audio/wav",
    "aac": "audio/aac",
    "ogg_opus": "audio/ogg",
    "flac": "audio/flac",
    "wav_stream": "audio/wav",
}


def content_type(fmt: str) -> str:
    """HTTP Content-Type for ``fmt``.

    ``raw`` is labelled int16 because here it *is* int16 PCM (real LMNT sent MP3 under an fp32
    label on HTTP, a bug not worth mimicking).  ``ulaw`` keeps ``audio/basic`` although the
    payload carries a WAV header, as the µ-law media type is what telephony clients look for.
    """
    try:
        return _CONTENT_TYPES[fmt]
    except KeyError:
        raise ValueError(f"unknown audio format {fmt!r}") from None
