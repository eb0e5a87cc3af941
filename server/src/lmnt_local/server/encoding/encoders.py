"""Server-side encoders: mono s16le PCM from an engine -> the bytes LMNT would put on the wire.

Every encoder streams: ``encode`` returns whatever output the codec has ready, so the first
WebSocket frame can leave while the rest of the sentence is still being synthesized.  The only
exception is ``wav``, which LMNT itself serves only over HTTP and only whole (see
:class:`_WavEncoder`).  Layouts follow section 8 of the protocol notes; where LMNT's exact
bytes are unknown the choice made here is documented on the encoder.

This module is the factory; the encoders live in :mod:`.pcm` (arithmetic and headers) and
:mod:`.compressed` (codecs through PyAV), the format names in :mod:`.formats`.
"""

from __future__ import annotations

from lmnt_local.server.encoding.compressed import (
    _OPUS_RATES,
    _AacEncoder,
    _FlacEncoder,
    _Mp3Encoder,
    _OggOpusEncoder,
    _supported_rates,
    _WebmEncoder,
)
from lmnt_local.server.encoding.formats import (
    ENCODER_FORMATS,
    HTTP_FORMATS,
    STREAM_FORMATS,
    content_type,
)
from lmnt_local.server.encoding.pcm import (
    Encoder,
    _F32Encoder,
    _StreamingWavEncoder,
    _UlawEncoder,
    _WavEncoder,
    ulaw_encode,
)

__all__ = [
    "ENCODER_FORMATS",
    "HTTP_FORMATS",
    "STREAM_FORMATS",
    "Encoder",
    "content_type",
    "make_encoder",
    "ulaw_encode",
]


def make_encoder(fmt: str, sample_rate: int) -> Encoder:
    """An encoder for ``fmt`` at ``sample_rate``; ``ValueError`` for unknown formats or rates
    the codec cannot take (LMNT itself only offers 8000, 16000 and 24000)."""
    if fmt not in ENCODER_FORMATS:
        raise ValueError(f"unknown audio format {fmt!r}; expected one of {list(ENCODER_FORMATS)}")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if fmt in ("pcm_s16le", "raw"):
        return Encoder(fmt, sample_rate)
    if fmt == "pcm_f32le":
        return _F32Encoder(fmt, sample_rate)
    if fmt == "ulaw":
        return _UlawEncoder(fmt, sample_rate)
    if fmt == "wav":
        return _WavEncoder(fmt, sample_rate)
    if fmt == "wav_stream":
        return _StreamingWavEncoder(fmt, sample_rate)
    if fmt == "flac":
        return _FlacEncoder(fmt, sample_rate)
    allowed = {
        "mp3": _supported_rates("libmp3lame"),
        "webm": _OPUS_RATES,
        "ogg_opus": _OPUS_RATES,
        "aac": _supported_rates("aac"),
    }[fmt]
    if sample_rate not in allowed:
        raise ValueError(
            f"{fmt} cannot be encoded at {sample_rate} Hz; use one of {sorted(allowed)}"
        )
    if fmt == "mp3":
        return _Mp3Encoder(fmt, sample_rate)
    if fmt == "webm":
        return _WebmEncoder(fmt, sample_rate)
    if fmt == "ogg_opus":
        return _OggOpusEncoder(fmt, sample_rate)
    return _AacEncoder(fmt, sample_rate)
