"""Server-side encoders: byte layouts, streaming behaviour, and decodability by independent
decoders (FFmpeg via PyAV, the stdlib ``wave`` module) rather than only by our own client."""

from __future__ import annotations

import gc
import io
import struct
import subprocess
import sys
import wave
from pathlib import Path

import av
import numpy as np
import pytest

from lmnt_local.server.encoding.encoders import (
    HTTP_FORMATS,
    STREAM_FORMATS,
    Encoder,
    content_type,
    make_encoder,
    ulaw_encode,
)

from audio_helpers import active_span, estimate_pitch, s16_array, sine_s16, time_limit

RATES = (8000, 16000, 24000)
ENCODING_PY = (
    Path(__file__).resolve().parents[1] / "server/src/lmnt_local/server/encoding/encoders.py"
)


def _encode_in_pieces(enc: Encoder, pcm: bytes, piece_seconds: float = 0.02) -> list[bytes]:
    """What a session would send: one encode() per engine chunk, then the finish() tail."""
    step = round(enc.sample_rate * piece_seconds) * 2
    return [enc.encode(pcm[i : i + step]) for i in range(0, len(pcm), step)] + [enc.finish()]


def _decode_with_ffmpeg(data: bytes, fmt: str) -> tuple[bytes, int]:
    """Decode with PyAV's demuxers (the reference), returning mono s16 and its rate."""
    container = av.open(io.BytesIO(data), format=fmt)
    try:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono")
        parts: list[bytes] = []
        rate = 0
        for frame in container.decode(stream):
            rate = frame.sample_rate
            for out in resampler.resample(frame):
                parts.append(bytes(out.to_ndarray().tobytes()))
        return b"".join(parts), rate
    finally:
        container.close()


# ----------------------------------------------------------------------------- API surface


def test_format_lists() -> None:
    assert STREAM_FORMATS == ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm", "raw")
    assert HTTP_FORMATS == (*STREAM_FORMATS, "wav", "aac")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("pcm_s16le", "application/vnd.lmnt.audio-int16"),
        ("raw", "application/vnd.lmnt.audio-int16"),
        ("pcm_f32le", "application/vnd.lmnt.audio-fp32"),
        ("ulaw", "audio/basic"),
        ("mp3", "audio/mpeg"),
        ("webm", "audio/webm"),
        ("wav", "audio/wav"),
        ("aac", "audio/aac"),
        ("ogg_opus", "audio/ogg"),
        ("flac", "audio/flac"),
        ("wav_stream", "audio/wav"),
    ],
)
def test_content_type(fmt: str, expected: str) -> None:
    assert content_type(fmt) == expected
    assert make_encoder(fmt, 24000).content_type == expected


def test_unknown_format_and_bad_rates_are_value_errors() -> None:
    with pytest.raises(ValueError, match="unknown audio format"):
        make_encoder("vorbis", 24000)
    with pytest.raises(ValueError, match="unknown audio format"):
        content_type("mulaw")
    for bad in (0, -8000, True, 16000.0):
        with pytest.raises(ValueError, match="sample_rate"):
            make_encoder("pcm_s16le", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mp3 cannot be encoded at 44 Hz"):
        make_encoder("mp3", 44)
    with pytest.raises(ValueError, match="webm cannot be encoded at 44100 Hz"):
        make_encoder("webm", 44100)


@pytest.mark.parametrize("fmt", HTTP_FORMATS)
def test_lifecycle(fmt: str) -> None:
    enc = make_encoder(fmt, 16000)
    with pytest.raises(ValueError, match="even length"):
        enc.encode(b"\x00\x01\x02")
    enc.encode(sine_s16(440, 0.1, 16000))
    enc.finish()
    assert enc.finish() == b""
    enc.close()  # safe after finish
    with pytest.raises(RuntimeError, match="finished"):
        enc.encode(b"\x00\x00")

    dropped = make_encoder(fmt, 16000)
    dropped.encode(sine_s16(440, 0.1, 16000))
    dropped.close()
    dropped.close()
    assert dropped.finish() == b""


@time_limit(5.0)
def test_unfinished_encoders_are_collected_safely() -> None:
    """PyAV 16.1 segfaults when a started output container is garbage-collected unclosed (a
    session dropped mid-utterance).  Run in a child so a crash is a failure, not a dead suite;
    the module is loaded by path to skip the package's framework imports."""
    script = f"""
import gc, importlib.util, numpy as np
spec = importlib.util.spec_from_file_location("encoding", {str(ENCODING_PY)!r})
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
pcm = np.zeros(4800, "<i2").tobytes()
for fmt in ("webm", "aac", "mp3"):
    enc = mod.make_encoder(fmt, 24000); enc.encode(pcm); del enc; gc.collect()
kept = mod.make_encoder("webm", 24000); kept.encode(pcm)   # still alive at interpreter exit
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=4.5
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-500:])
    assert proc.stdout.strip() == "ok"


def test_unfinished_encoder_collected_in_process() -> None:
    enc = make_encoder("webm", 16000)
    enc.encode(sine_s16(440, 0.1, 16000))
    del enc
    gc.collect()


# ----------------------------------------------------------------------------- PCM formats


@pytest.mark.parametrize("fmt", ["pcm_s16le", "raw"])
def test_s16_is_identity(fmt: str) -> None:
    pcm = sine_s16(440, 0.05, 24000)
    enc = make_encoder(fmt, 24000)
    assert enc.encode(pcm) == pcm
    assert enc.finish() == b""


def test_f32_scaling_is_exact_inverse_of_client() -> None:
    samples = np.array([0, 1, -1, 16384, -16384, 32767, -32768], dtype="<i2")
    out = make_encoder("pcm_f32le", 8000).encode(samples.tobytes())
    floats = np.frombuffer(out, dtype="<f4")
    assert floats.tolist() == [s / 32768.0 for s in samples.tolist()]
    assert floats.min() >= -1.0 and floats.max() < 1.0


# ----------------------------------------------------------------------------- µ-law


@pytest.mark.parametrize("rate", RATES)
def test_ulaw_header_layout(rate: int) -> None:
    enc = make_encoder("ulaw", rate)
    data = enc.encode(sine_s16(440, 0.01, rate)) + enc.finish()
    header = data[:44]
    assert header[:4] == b"RIFF" and header[8:16] == b"WAVEfmt "
    riff_size, fmt_size, tag, channels, hdr_rate, byte_rate, align, bits = struct.unpack(
        "<I4x4xIHHIIHH", header[4:36]
    )
    assert (riff_size, fmt_size, tag, channels) == (0xFFFFFFFF, 16, 7, 1)
    assert (hdr_rate, byte_rate, align, bits) == (rate, rate, 1, 8)
    assert header[36:40] == b"data" and header[40:44] == b"\xff\xff\xff\xff"
    assert len(data) == 44 + round(0.01 * rate)


def test_ulaw_header_only_once_and_for_empty_streams() -> None:
    enc = make_encoder("ulaw", 8000)
    first = enc.encode(b"")
    assert len(first) == 44
    assert enc.encode(b"\x00\x00\x00\x00") == b"\xff\xff"  # µ-law silence
    assert enc.finish() == b""
    assert len(make_encoder("ulaw", 8000).finish()) == 44


def test_ulaw_encode_matches_reference() -> None:
    """Bit-identical to the Sun/CCITT reference that ``audioop`` implements (3.11 still has
    it); and decodes through FFmpeg's pcm_mulaw within one quantization step."""
    every = np.arange(-32768, 32768, dtype="<i2").tobytes()
    ours = ulaw_encode(every)
    audioop = pytest.importorskip("audioop")
    assert ours == audioop.lin2ulaw(every, 2)

    ctx = av.CodecContext.create("pcm_mulaw", "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in ctx.decode(av.Packet(ours))])
    error = np.abs(decoded.astype(np.int32) - s16_array(every))
    magnitude = np.abs(s16_array(every).astype(np.int32))
    # µ-law step size grows with magnitude: 4 LSB near zero, 1024 LSB near full scale.
    assert np.all(error <= np.maximum(8, magnitude / 16 + 8))


# ----------------------------------------------------------------------------- compressed


@pytest.mark.parametrize("rate", RATES)
def test_mp3_streams_96k_frames(rate: int) -> None:
    enc = make_encoder("mp3", rate)
    pieces = _encode_in_pieces(enc, sine_s16(440, 1.0, rate))
    first_200ms = b"".join(pieces[:10])
    assert first_200ms, "no MP3 bytes after 200 ms of audio"
    data = b"".join(pieces)
    assert data[:2] in (b"\xff\xf3", b"\xff\xe3", b"\xff\xfb")  # sync, no ID3/Xing
    version = {0: "2.5", 2: "2", 3: "1"}[(data[1] >> 3) & 3]
    bitrate_index = data[2] >> 4
    kbps = {"1": [0, 32, 40, 48, 56, 64, 80, 96], "2": [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96]}
    table = kbps["1" if version == "1" else "2"]
    # LAME caps MPEG-2.5 (8 kHz) at 64 kbps; 16/24 kHz (MPEG-2) get the documented 96.
    assert table[bitrate_index] == (64 if rate == 8000 else 96)

    pcm, out_rate = _decode_with_ffmpeg(data, "mp3")
    assert out_rate == rate
    assert abs(estimate_pitch(pcm, rate) - 440) < 440 * 0.01


@pytest.mark.parametrize("rate", RATES)
def test_webm_streams_live_opus(rate: int) -> None:
    enc = make_encoder("webm", rate)
    pieces = _encode_in_pieces(enc, sine_s16(440, 1.0, rate))
    first_200ms = b"".join(pieces[:10])
    assert first_200ms[:4] == b"\x1a\x45\xdf\xa3"  # EBML magic
    assert sum(1 for p in pieces[:10] if p) >= 5, "clusters should follow every few packets"
    data = b"".join(pieces)

    # A non-seekable reader (no seek/tell) is enough for FFmpeg to decode all of it.
    class Pipe:
        def __init__(self, payload: bytes) -> None:
            self._buf = io.BytesIO(payload)

        def read(self, n: int = -1) -> bytes:
            return self._buf.read(min(n, 100) if n > 0 else n)

    container = av.open(Pipe(data), format="webm")
    try:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        samples = sum(frame.samples for frame in container.decode(stream))
    finally:
        container.close()
    assert samples == 48000  # Opus decodes at 48 kHz; pre-skip and end padding trimmed


@pytest.mark.parametrize("rate", RATES)
def test_aac_is_adts(rate: int) -> None:
    enc = make_encoder("aac", rate)
    pieces = _encode_in_pieces(enc, sine_s16(440, 1.0, rate))
    data = b"".join(pieces)
    assert data[0] == 0xFF and data[1] & 0xF0 == 0xF0  # ADTS sync word
    pcm, out_rate = _decode_with_ffmpeg(data, "aac")
    assert out_rate == rate
    assert abs(estimate_pitch(pcm, rate) - 440) < 440 * 0.01
    start, end = active_span(pcm, rate)
    assert abs((end - start) - 1.0) < 0.03


def test_wav_is_whole_file_with_real_sizes() -> None:
    pcm = sine_s16(440, 0.5, 16000)
    enc = make_encoder("wav", 16000)
    assert enc.encode(pcm) == b""  # nothing until the size is known
    data = enc.finish()
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        assert w.readframes(w.getnframes()) == pcm
    assert len(make_encoder("wav", 8000).finish()) == 44


def test_every_stream_format_produces_bytes_within_200ms() -> None:
    """Streaming latency: what a session could put on the wire after 200 ms of engine audio."""
    for fmt in STREAM_FORMATS:
        for rate in RATES:
            enc = make_encoder(fmt, rate)
            pieces = _encode_in_pieces(enc, sine_s16(440, 0.2, rate))[:-1]  # no finish()
            assert sum(map(len, pieces)) > 0, (fmt, rate)
            enc.close()
