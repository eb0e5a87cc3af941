"""Decoders of the formats whose bytes can be decoded as they come: PCM s16/f32, µ-law in WAV,
MP3; plus what every decoder shares (the error type, sample conversions).

Each decoder takes arbitrary slices of the byte stream (``decode``), ends it (``finish``) and
returns ``(sample rate, mono s16le bytes)`` chunks; the rate is the one the stream itself states
where it states one.  WebM lives in :mod:`.webm` (it needs a demuxer thread); the pipeline that
picks a decoder and resamples is :mod:`.audio`.
"""

from __future__ import annotations

import struct
from typing import Final, Protocol

import av
import numpy as np
import numpy.typing as npt

__all__ = ["AudioDecodeError"]

_Chunk = tuple[int, bytes]
"""A piece of decoded audio: (sample rate it is at, mono s16le bytes)."""

_I16: Final[np.dtype[np.int16]] = np.dtype(np.int16).newbyteorder("<")
_MAX_ERROR_SAMPLE: Final = 8


class AudioDecodeError(ValueError):
    """The byte stream cannot be decoded as the format it was announced as.

    The message names the format and the problem, and quotes at most a few bytes of the input,
    so it is safe to log even when a server sends megabytes of garbage.
    """


def _describe(exc: BaseException) -> str:
    """FFmpeg's reason plus its last log line, without PyAV's file-name noise."""
    if isinstance(exc, av.error.FFmpegError):
        text = str(exc.strerror or exc)
        log = exc.log
        if log and len(log) == 3 and log[2]:
            text += f" ({str(log[2]).strip()})"
        return text
    return f"{type(exc).__name__}: {exc}"


def _error(fmt: str, problem: str, sample: bytes | bytearray = b"") -> AudioDecodeError:
    text = f"{fmt}: {problem}"
    if sample:
        text += f" (bytes: {bytes(sample[:_MAX_ERROR_SAMPLE]).hex(' ')})"
    return AudioDecodeError(text)


class _Decoder(Protocol):
    def decode(self, data: bytes) -> list[_Chunk]: ...

    def finish(self) -> list[_Chunk]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- sample conversions


def _float_to_s16(x: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """Full scale is 32768 (not 32767) so that s16 -> f32 -> s16 is exact, as in FFmpeg."""
    y = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(y, -1.0, 1.0, out=y)
    y *= 32768.0
    np.rint(y, out=y)
    np.clip(y, -32768.0, 32767.0, out=y)
    return y.astype(_I16)


def _mono_s16(planes: npt.NDArray[np.generic]) -> npt.NDArray[np.int16]:
    """(channels, samples) in any sample type -> one s16 channel, averaging channels."""
    kind, size = planes.dtype.kind, planes.dtype.itemsize
    if kind == "f":
        mixed_f: npt.NDArray[np.floating] = planes.mean(axis=0)
        return _float_to_s16(mixed_f)
    if kind == "i" and size == 2 and planes.shape[0] == 1:
        return planes.reshape(-1).astype(_I16, copy=False)
    if kind == "u" and size == 1:
        wide = (planes.astype(np.int32) - 128) << 8
    elif kind == "i" and size == 4:
        wide = planes.astype(np.int64) >> 16
    elif kind == "i" and size == 2:
        wide = planes.astype(np.int32)
    else:
        raise TypeError(f"unsupported sample type {planes.dtype}")
    mixed: npt.NDArray[np.float64] = np.rint(wide.mean(axis=0))
    return np.clip(mixed, -32768, 32767).astype(_I16)


def _frame_to_s16(frame: av.AudioFrame) -> bytes:
    channels = int(frame.layout.nb_channels)
    arr = frame.to_ndarray()
    if not frame.format.is_planar:
        # Packed frames come back as one row of interleaved samples.
        arr = arr.reshape(-1, channels).T
    return _mono_s16(arr[:channels]).tobytes()


# --------------------------------------------------------------------------- PCM


class _PcmS16Decoder:
    """Passes bytes through untouched except for a carried odd byte, so the common case is free."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._carry = b""

    def decode(self, data: bytes) -> list[_Chunk]:
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if len(data) & 1:
            self._carry = data[-1:]
            data = data[:-1]
        return [(self._rate, data)] if data else []

    def finish(self) -> list[_Chunk]:
        # Half a sample at the very end cannot be played; dropping it keeps the output aligned.
        self._carry = b""
        return []

    def close(self) -> None:
        self._carry = b""


class _PcmF32Decoder:
    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._carry = b""

    def decode(self, data: bytes) -> list[_Chunk]:
        if self._carry:
            data = self._carry + data
        whole = len(data) - len(data) % 4
        self._carry = data[whole:]
        if not whole:
            return []
        samples = np.frombuffer(data, dtype="<f4", count=whole // 4)
        return [(self._rate, _float_to_s16(samples).tobytes())]

    def finish(self) -> list[_Chunk]:
        self._carry = b""
        return []

    def close(self) -> None:
        self._carry = b""


# --------------------------------------------------------------------------- G.711 µ-law in WAV


def _ulaw_table() -> npt.NDArray[np.int16]:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(_I16)


_ULAW_TO_S16: Final = _ulaw_table()

_WAVE_FORMAT_MULAW: Final = 0x0007
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
_MAX_FMT_CHUNK: Final = 1024
_OPEN_ENDED_SIZES: Final = (0, 0xFFFFFFFF)

_SNIFF, _CHUNK_HEADER, _FMT_BODY, _SKIP, _DATA, _BARE = range(6)


class _UlawDecoder:
    """Incremental RIFF/WAVE parser in front of a µ-law lookup table.

    LMNT wraps µ-law in a WAV header even on a live stream, where the size fields cannot be
    known; sizes of 0 or 0xFFFFFFFF therefore mean "until the end".  A stream that does not
    start with ``RIFF`` is taken to be bare G.711 at the requested rate, which is what telephony
    style servers send.  A fresh ``RIFF....WAVE`` at the start of a feed while inside an
    open-ended data chunk is taken as a new WAV stream rather than decoded as audio, since a
    server that restarts its encoder per utterance would otherwise inject a 44-byte click.
    """

    def __init__(self, rate: int) -> None:
        self._default_rate = rate
        self._rate = rate
        self._channels = 1
        self._buf = bytearray()
        self._state = _SNIFF
        self._need = 0
        self._skip = 0
        self._remaining: int | None = None
        self._pad = 0
        self._have_fmt = False
        self._saw_data = False
        self._fed = False

    def decode(self, data: bytes) -> list[_Chunk]:
        if not data:
            return []
        self._fed = True
        if (
            self._state == _DATA
            and self._remaining is None
            and data[:4] == b"RIFF"
            and data[8:12] == b"WAVE"
        ):
            self._buf.clear()  # at most a partial multichannel frame
            self._state = _SNIFF
        self._buf += data
        out: list[_Chunk] = []
        self._run(out)
        return out

    def finish(self) -> list[_Chunk]:
        if self._fed and not self._saw_data and self._state != _BARE:
            raise _error("ulaw", "stream ended inside the WAV header (no data chunk)")
        self._buf.clear()
        return []

    def close(self) -> None:
        self._buf.clear()

    def _run(self, out: list[_Chunk]) -> None:
        buf = self._buf
        while True:
            state = self._state
            if state == _SNIFF:
                if not b"RIFF".startswith(bytes(buf[:4])):
                    self._state = _BARE
                    self._rate, self._channels = self._default_rate, 1
                    self._saw_data = True
                    continue
                if len(buf) < 12:
                    return
                if buf[8:12] != b"WAVE":
                    raise _error("ulaw", "RIFF stream is not WAVE", buf[8:12])
                del buf[:12]
                self._have_fmt = False
                self._state = _CHUNK_HEADER
            elif state == _CHUNK_HEADER:
                if len(buf) < 8:
                    return
                chunk_id = bytes(buf[:4])
                if chunk_id == b"RIFF":  # a second WAV file concatenated after a sized one
                    self._state = _SNIFF
                    continue
                (size,) = struct.unpack_from("<I", buf, 4)
                del buf[:8]
                self._open_chunk(chunk_id, size)
            elif state == _FMT_BODY:
                if len(buf) < self._need:
                    return
                self._parse_fmt(bytes(buf[: self._need]))
                del buf[: self._need]
                self._state = _CHUNK_HEADER
            elif state == _SKIP:
                step = min(self._skip, len(buf))
                del buf[:step]
                self._skip -= step
                if self._skip:
                    return
                self._state = _CHUNK_HEADER
            elif state == _DATA:
                if not self._take_data(out):
                    return
            else:  # _BARE
                if buf:
                    out.append(
                        (self._rate, _ULAW_TO_S16[np.frombuffer(bytes(buf), np.uint8)].tobytes())
                    )
                    buf.clear()
                return

    def _open_chunk(self, chunk_id: bytes, size: int) -> None:
        if chunk_id == b"fmt ":
            if not 16 <= size <= _MAX_FMT_CHUNK:
                raise _error("ulaw", f"fmt chunk of {size} bytes")
            self._need = size + (size & 1)
            self._state = _FMT_BODY
        elif chunk_id == b"data":
            if not self._have_fmt:
                raise _error("ulaw", "data chunk before fmt chunk")
            self._remaining = None if size in _OPEN_ENDED_SIZES else size
            self._pad = size & 1 if self._remaining is not None else 0
            self._saw_data = True
            self._state = _DATA
        else:  # LIST, fact, cue, ... carry nothing we need
            self._skip = size + (size & 1)
            self._state = _SKIP

    def _parse_fmt(self, body: bytes) -> None:
        tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
        if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
            (tag,) = struct.unpack_from("<H", body, 24)  # first two bytes of the sub-format GUID
        if tag != _WAVE_FORMAT_MULAW:
            raise _error("ulaw", f"WAV format tag {tag:#06x} is not G.711 mu-law (7)")
        if bits != 8:
            raise _error("ulaw", f"{bits} bits per sample, mu-law needs 8")
        if not 1 <= channels <= 32:
            raise _error("ulaw", f"{channels} channels in fmt chunk")
        if rate <= 0:
            raise _error("ulaw", "sample rate 0 in fmt chunk")
        self._rate, self._channels, self._have_fmt = rate, channels, True

    def _take_data(self, out: list[_Chunk]) -> bool:
        """Decode what is buffered of the data chunk; False when more input is needed."""
        buf, ch = self._buf, self._channels
        avail = len(buf) if self._remaining is None else min(len(buf), self._remaining)
        take = avail - avail % ch
        if take:
            codes = np.frombuffer(bytes(buf[:take]), np.uint8)
            del buf[:take]
            pcm = _ULAW_TO_S16[codes]
            if ch > 1:
                mixed = np.rint(pcm.reshape(-1, ch).astype(np.int32).mean(axis=1))
                pcm = mixed.astype(_I16)
            out.append((self._rate, pcm.tobytes()))
            if self._remaining is not None:
                self._remaining -= take
        if self._remaining is not None and self._remaining < ch:
            # End of a sized data chunk: drop a torn last frame and the pad byte, then look for
            # more chunks (LIST after data is common in files).
            self._skip = self._remaining + self._pad
            self._remaining = None
            self._state = _SKIP
            return True
        return False


# --------------------------------------------------------------------------- MP3


class _Mp3Decoder:
    """PyAV's MP3 parser + decoder; the frame header, not the request, decides the rate.

    A leading ID3v2 tag (what FFmpeg's MP3 muxer writes, so a file served over HTTP may have
    one) is skipped because the bare parser would feed it to the decoder as a corrupt frame.
    Any FFmpeg error mid-stream is fatal: a stream that stops being MP3 halfway is not worth
    guessing at.  The one exception is a torn last frame at ``finish`` after audio was decoded
    (a cut connection), which is dropped.  If bytes were fed but not a single frame came out by
    ``finish``, that is an error too, so a server sending the wrong format fails loudly
    instead of producing silence.
    """

    def __init__(self) -> None:
        self._ctx = av.CodecContext.create("mp3", "r")
        self._fed = 0
        self._frames = 0
        self._head: bytearray | None = bytearray()  # None once past any ID3v2 tag
        self._skip = 0

    def decode(self, data: bytes) -> list[_Chunk]:
        if not data:
            return []  # never hand b"" to the parser: that means "flush"
        self._fed += len(data)
        data = self._strip_id3(data)
        return self._run(data) if data else []

    def finish(self) -> list[_Chunk]:
        out: list[_Chunk] = []
        if self._head:  # a stream shorter than an ID3 header
            out += self._run(bytes(self._head))
        self._head = None
        try:
            out += self._run(None)
        except AudioDecodeError:
            # The parser hands over whatever trails the last whole frame; after real audio
            # that is a stream cut mid-frame (torn frame dropped), not a wrong format.
            if not self._frames:
                raise
        if self._fed and not self._frames:
            raise _error("mp3", f"no MPEG audio frame found in {self._fed} bytes")
        return out

    def close(self) -> None:
        self._head = None

    def _strip_id3(self, data: bytes) -> bytes:
        if self._skip:
            step = min(self._skip, len(data))
            self._skip -= step
            data = data[step:]
            if self._skip or not data:
                return b""
        head = self._head
        if head is None:
            return data
        head += data
        if not b"ID3".startswith(bytes(head[:3])):
            self._head = None
            return bytes(head)
        if len(head) < 10:
            return b""
        size = (
            (head[6] & 0x7F) << 21
            | (head[7] & 0x7F) << 14
            | (head[8] & 0x7F) << 7
            | (head[9] & 0x7F)
        )
        total = 10 + size + (10 if head[5] & 0x10 else 0)
        rest = bytes(head[total:])
        self._skip = max(0, total - len(head))
        head.clear()  # another tag may follow; sniff again
        return self._strip_id3(rest) if rest else b""

    def _run(self, data: bytes | None) -> list[_Chunk]:
        out: list[_Chunk] = []
        try:
            for packet in self._ctx.parse(data):
                for frame in self._ctx.decode(packet):
                    out.append((int(frame.sample_rate), _frame_to_s16(frame)))
            if data is None:
                for frame in self._ctx.decode(None):
                    out.append((int(frame.sample_rate), _frame_to_s16(frame)))
        except av.error.FFmpegError as exc:
            raise _error("mp3", f"decoder error: {_describe(exc)}") from exc
        self._frames += len(out)
        return out
