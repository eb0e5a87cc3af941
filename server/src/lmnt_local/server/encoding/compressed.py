"""Encoders backed by a real codec through PyAV: MP3, and Opus, AAC and FLAC in containers.

Apart because these are the heavy ones (``heavy`` True: they run in the worker processes of
:mod:`.pool`), and they share the frame slicing, the drain of a codec's lookahead and the
care a PyAV output container needs when a stream is abandoned.
"""

from __future__ import annotations

import weakref
from fractions import Fraction
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from lmnt_local.server.encoding.pcm import _I16, Encoder

_MP3_BIT_RATE: Final = 96_000
_OPUS_BIT_RATE: Final = 64_000
_AAC_BIT_RATE: Final = 64_000
_OPUS_RATES: Final = frozenset((8000, 12000, 16000, 24000, 48000))


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
