"""Server-side encoders: mono s16le PCM from an engine -> the bytes LMNT would put on the wire.

Every encoder streams: ``encode`` returns whatever output the codec has ready, so the first
WebSocket frame can leave while the rest of the sentence is still being synthesized.  The only
exception is ``wav``, which LMNT itself serves only over HTTP and only whole (see
:class:`_WavEncoder`).  Layouts follow section 8 of the protocol notes; where LMNT's exact
bytes are unknown the choice made here is documented on the encoder.
"""

from __future__ import annotations

import struct
import weakref
from fractions import Fraction
from typing import Final

import av
import numpy as np
import numpy.typing as npt

__all__ = [
    "ENCODER_FORMATS",
    "HTTP_FORMATS",
    "STREAM_FORMATS",
    "Encoder",
    "content_type",
    "make_encoder",
    "ulaw_encode",
]

STREAM_FORMATS: tuple[str, ...] = ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm", "raw")
"""Formats a WebSocket session may request (``raw`` is legacy 16-bit PCM)."""

HTTP_FORMATS: tuple[str, ...] = (*STREAM_FORMATS, "wav", "aac")
"""Formats of the HTTP bytes endpoint: the streaming ones plus the two LMNT renders whole."""

ENCODER_FORMATS: tuple[str, ...] = (*HTTP_FORMATS, "ogg_opus", "flac", "wav_stream")
"""Every format :func:`make_encoder` makes: LMNT's plus those only the OpenAI-compatible
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

_I16: Final[np.dtype[np.int16]] = np.dtype(np.int16).newbyteorder("<")
_MP3_BIT_RATE: Final = 96_000
_OPUS_BIT_RATE: Final = 64_000
_AAC_BIT_RATE: Final = 64_000
_OPUS_RATES: Final = frozenset((8000, 12000, 16000, 24000, 48000))


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


class Encoder:
    """Streams s16le mono PCM at ``sample_rate`` into one output format.

    ``encode`` takes an even number of bytes and returns what is ready (possibly ``b""``);
    ``finish`` flushes the codec and container and returns the tail; ``close`` abandons the
    stream (a cancelled session) and frees the codec.  After either, ``encode`` raises
    ``RuntimeError`` and ``finish`` returns ``b""``.  This base class is the identity encoder
    used for ``pcm_s16le``/``raw``.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        self.fmt = fmt
        self.sample_rate = sample_rate
        self._finished = False

    @property
    def content_type(self) -> str:
        return content_type(self.fmt)

    def encode(self, pcm: bytes) -> bytes:
        if self._finished:
            raise RuntimeError(f"{self.fmt} encoder already finished")
        if len(pcm) & 1:
            raise ValueError(f"s16le PCM must have an even length, got {len(pcm)} bytes")
        return self._encode(bytes(pcm))

    def finish(self) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        return self._finish()

    #: True for encoders whose work is heavy enough to leave the event loop (real codecs);
    #: the identity, f32, µ-law and WAV encoders are a numpy call or a copy.
    heavy: bool = False

    def drain(self) -> tuple[bytes, int]:
        """Everything the codec holds back, so the stream so far can be heard to its end.

        Returns the bytes and how many samples of silence had to be fed to push the codec's
        lookahead out (0 for formats that hold nothing back).  Encoding continues afterwards:
        this is what a flush needs, where ``finish`` would end the stream.
        """
        if self._finished:
            return b"", 0
        return self._drain()

    def _drain(self) -> tuple[bytes, int]:
        return b"", 0

    def close(self) -> None:
        """Drop the stream without producing its tail; idempotent, safe after ``finish``."""
        if not self._finished:
            self._finished = True
            self._abandon()

    def _abandon(self) -> None:
        pass

    def _encode(self, pcm: bytes) -> bytes:
        return pcm

    def _finish(self) -> bytes:
        return b""


class _F32Encoder(Encoder):
    """Scales by 1/32768 so the client's x32768 gets the original samples back exactly."""

    def _encode(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, _I16).astype(np.float32)
        samples *= np.float32(1.0 / 32768.0)
        return samples.astype("<f4").tobytes()


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """G.711 µ-law code for every int16 value, indexed by the sample's uint16 bit pattern.

    Follows the classic Sun reference (drop to 14 bits, bias 33, clip at 8159), which is what
    ``audioop.lin2ulaw`` does, so output is bit-identical to the de-facto standard encoder.
    """
    x = np.arange(65536, dtype=np.int32)
    x = np.where(x >= 32768, x - 65536, x) >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(x), 8159) + 0x21
    segment = np.maximum(np.floor(np.log2(v)).astype(np.int32) - 5, 0)
    code = (np.minimum(segment, 7) << 4) | ((v >> (segment + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    table: npt.NDArray[np.uint8] = (code ^ mask).astype(np.uint8)
    return table


_S16_TO_ULAW: Final = _ulaw_encode_table()


def ulaw_encode(pcm: bytes) -> bytes:
    """Bare G.711 µ-law bytes for s16le PCM (no header)."""
    return _S16_TO_ULAW[np.frombuffer(pcm, _I16).view(np.uint16)].tobytes()


def _wav_header(
    *, tag: int, rate: int, bits: int, data_size: int, riff_size: int | None = None
) -> bytes:
    block = bits // 8
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", 36 + data_size if riff_size is None else riff_size),
            b"WAVE",
            b"fmt ",
            struct.pack("<IHHIIHH", 16, tag, 1, rate, rate * block, block, bits),
            b"data",
            struct.pack("<I", data_size),
        )
    )


class _UlawEncoder(Encoder):
    """A 44-byte WAV header (format tag 7, mono, 8 bits) and then µ-law bytes.

    The sizes are 0xFFFFFFFF because the length of a live stream is unknown when the header
    goes out.  No ``fact`` chunk: the canonical 44-byte layout lets naive telephony clients
    that strip a fixed 44 bytes land on the first sample, and FFmpeg/sox accept it.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        self._header: bytes | None = _wav_header(
            tag=7, rate=sample_rate, bits=8, data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF
        )

    def _take_header(self) -> bytes:
        header, self._header = self._header, None
        return header or b""

    def _encode(self, pcm: bytes) -> bytes:
        return self._take_header() + ulaw_encode(pcm)

    def _finish(self) -> bytes:
        return self._take_header()  # an empty stream is still a valid (empty) WAV


class _StreamingWavEncoder(_UlawEncoder):
    """16-bit PCM WAV whose header goes out first with open-ended sizes (0xFFFFFFFF).

    What OpenAI's speech endpoint streams: playback can start with the first chunk, and
    FFmpeg, browsers and libsndfile read to the end of the data whatever the header says.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        self._header = _wav_header(
            tag=1, rate=sample_rate, bits=16, data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF
        )

    def _encode(self, pcm: bytes) -> bytes:
        return self._take_header() + pcm


class _WavEncoder(Encoder):
    """16-bit PCM WAV with true sizes, so everything comes out of ``finish``.

    LMNT renders WAV whole (HTTP only), and a header with real sizes is what every player
    expects from a file; a streaming 0xFFFFFFFF header would trade that for latency nobody
    asked for on this endpoint.
    """

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        self._pcm = bytearray()

    def _encode(self, pcm: bytes) -> bytes:
        self._pcm += pcm
        return b""

    def _abandon(self) -> None:
        self._pcm.clear()

    def _finish(self) -> bytes:
        header = _wav_header(tag=1, rate=self.sample_rate, bits=16, data_size=len(self._pcm))
        data = header + bytes(self._pcm)
        self._pcm.clear()
        return data


class _Sink:
    """Write-only file object for PyAV: no ``seek``, so muxers must write in a streaming way."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buf)
        self._buf.clear()
        return data


class _CodecEncoder(Encoder):
    """Shared frame slicing for codecs that only accept fixed-size frames (all but the last)."""

    _sample_format: str = "s16"
    #: Frames of silence a muxer needs after the last packet before it writes it out (a WebM
    #: cluster is written when the next one starts).
    _drain_extra_frames: int = 0
    heavy = True

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        self._pending = bytearray()
        self._pts = 0
        self._out_end = 0  # input sample up to which packets have come out of the codec

    def _packet_out(self, packet: av.Packet) -> None:
        if packet.pts is not None and packet.duration and packet.time_base is not None:
            end = (packet.pts + packet.duration) * packet.time_base * self.sample_rate
            self._out_end = max(self._out_end, int(end))

    def _drain(self) -> tuple[bytes, int]:
        target = self._pts + len(self._pending) // 2
        if target <= self._out_end and not self._pending:
            return self._output(), 0
        step = self._frame_size()
        padded = (-(len(self._pending) // 2)) % step
        self._pending += bytes(2 * padded)
        out = self._encode(b"")
        silence = bytes(2 * step)
        target += self._drain_extra_frames * step
        for _ in range(64):  # a codec's lookahead is a few frames; bounded whatever happens
            if self._out_end >= target:
                break
            out += self._encode(silence)
            padded += step
        return out, padded

    def _frame_size(self) -> int:
        raise NotImplementedError

    def _encode_frame(self, frame: av.AudioFrame | None) -> None:
        raise NotImplementedError

    def _output(self) -> bytes:
        raise NotImplementedError

    def _make_frame(self, pcm: bytes) -> av.AudioFrame:
        samples = np.frombuffer(pcm, _I16).reshape(1, -1)
        if self._sample_format == "fltp":
            array: npt.NDArray[np.generic] = samples.astype(np.float32) / np.float32(32768.0)
        else:
            array = samples.astype(np.int16)
        frame = av.AudioFrame.from_ndarray(array, format=self._sample_format, layout="mono")
        frame.sample_rate = self.sample_rate
        frame.time_base = Fraction(1, self.sample_rate)
        frame.pts = self._pts
        self._pts += samples.shape[1]
        return frame

    def _encode(self, pcm: bytes) -> bytes:
        self._pending += pcm
        step = self._frame_size() * 2
        whole = len(self._pending) - len(self._pending) % step
        for start in range(0, whole, step):
            self._encode_frame(self._make_frame(bytes(self._pending[start : start + step])))
        del self._pending[:whole]
        return self._output()

    def _finish(self) -> bytes:
        if self._pending:  # every codec used here accepts a short last frame
            self._encode_frame(self._make_frame(bytes(self._pending)))
            self._pending.clear()
        self._encode_frame(None)
        return self._output()


class _Mp3Encoder(_CodecEncoder):
    """Bare MPEG audio frames from LAME, no ID3/Xing: what a live MP3 stream looks like.

    96 kbps mono as LMNT documents; LAME caps MPEG-2.5 (8 kHz) at 64 kbps.  The bit reservoir
    is off: with it LAME holds every frame back until the next one is coded, which costs a
    frame of latency (216 instead of 144 ms before the first byte at 8 kHz, 72 vs 48 ms at
    24 kHz) for a quality gain nobody hears at 96 kbps speech.
    """

    _sample_format = "s16p"

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        ctx = av.CodecContext.create("libmp3lame", "w")
        ctx.sample_rate = sample_rate
        ctx.layout = "mono"
        ctx.format = "s16p"
        ctx.bit_rate = _MP3_BIT_RATE
        ctx.time_base = Fraction(1, sample_rate)
        ctx.options = {"reservoir": "0"}
        ctx.open()
        self._ctx = ctx
        self._out = bytearray()

    def _abandon(self) -> None:
        self._out.clear()

    def _frame_size(self) -> int:
        return int(self._ctx.frame_size)

    def _encode_frame(self, frame: av.AudioFrame | None) -> None:
        for packet in self._ctx.encode(frame):
            self._packet_out(packet)
            self._out += bytes(packet)

    def _output(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data


class _MuxedEncoder(_CodecEncoder):
    """A codec inside a container that PyAV writes into a non-seekable sink as it goes."""

    _container_format: str = ""
    _codec: str = ""
    _bit_rate: int = 0
    _container_options: dict[str, str] = {}

    def __init__(self, fmt: str, sample_rate: int) -> None:
        super().__init__(fmt, sample_rate)
        self._sink = _Sink()
        self._container = av.open(
            self._sink,
            mode="w",
            format=self._container_format,
            container_options={"flush_packets": "1", **self._container_options},
        )
        # PyAV (16.1) segfaults when a started output container writing to a Python object is
        # garbage-collected unclosed, e.g. when a session is dropped mid-utterance.  Closing it
        # from a finalizer (which also runs at interpreter exit) avoids that.
        self._closer = weakref.finalize(self, _close_container, self._container)
        stream = self._container.add_stream(self._codec, rate=sample_rate, layout="mono")
        stream.codec_context.format = self._sample_format
        stream.codec_context.bit_rate = self._bit_rate
        stream.codec_context.time_base = Fraction(1, sample_rate)
        stream.codec_context.open()
        self._stream = stream

    def _frame_size(self) -> int:
        return int(self._stream.codec_context.frame_size)

    def _encode_frame(self, frame: av.AudioFrame | None) -> None:
        for packet in self._stream.encode(frame):
            self._packet_out(packet)
            self._container.mux(packet)

    def _output(self) -> bytes:
        return self._sink.take()

    def _finish(self) -> bytes:
        head = super()._finish()
        self._container.start_encoding()  # no-op unless nothing was muxed: still emit a header
        self._closer()  # writes the last cluster / trailer into the sink
        return head + self._sink.take()

    def _abandon(self) -> None:
        self._closer()
        self._sink.take()


def _close_container(container: av.container.OutputContainer) -> None:
    try:
        container.close()
    except Exception:  # abandoning a stream; a failing trailer write changes nothing
        pass


class _WebmEncoder(_MuxedEncoder):
    """Opus in live WebM: unknown-size segment and clusters, no cues, one cluster per packet.

    ``live`` keeps the muxer from needing to seek back; a zero cluster time limit closes each
    cluster as soon as the next packet arrives, so output trails input by one 20 ms Opus frame
    (plus the encoder's lookahead) instead of the default multi-second clusters.
    """

    _container_format = "webm"
    _codec = "libopus"
    _bit_rate = _OPUS_BIT_RATE
    _container_options = {"live": "1", "cluster_time_limit": "0"}
    _drain_extra_frames = 2


class _AacEncoder(_MuxedEncoder):
    """AAC-LC in ADTS, the self-framing form of AAC that can be served as a plain byte stream."""

    _container_format = "adts"
    _codec = "aac"
    _bit_rate = _AAC_BIT_RATE
    _sample_format = "fltp"


class _OggOpusEncoder(_MuxedEncoder):
    """Opus in Ogg (what ``.opus`` files are), a page per 20 ms packet so it streams."""

    _container_format = "ogg"
    _codec = "libopus"
    _bit_rate = _OPUS_BIT_RATE
    _container_options = {"page_duration": "20000"}


class _FlacEncoder(_MuxedEncoder):
    """FLAC in its native container.  The sink cannot seek, so STREAMINFO keeps "length
    unknown" (every decoder reads such a stream to its end) and frames go out as coded."""

    _container_format = "flac"
    _codec = "flac"


def _supported_rates(codec: str) -> frozenset[int]:
    rates = av.codec.Codec(codec, "w").audio_rates
    return frozenset(int(r) for r in rates) if rates else frozenset()


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
