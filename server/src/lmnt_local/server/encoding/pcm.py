"""The encoder interface and the encoders that are arithmetic on the samples or a header.

Raw PCM, float PCM, µ-law and WAV need no codec library and cost a numpy call or a copy, so they
run inline on the event loop (``heavy`` False); the real codecs are in :mod:`.compressed`.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
import numpy.typing as npt

from lmnt_local.server.encoding.formats import content_type

__all__ = ["Encoder", "ulaw_encode"]

_I16: Final[np.dtype[np.int16]] = np.dtype(np.int16).newbyteorder("<")


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
