"""Client-side decoding: every format, every rate pair, every way a stream can be cut up.

Round trips go through the server's encoders (``server.encoding``), but the µ-law table and
the compressed formats are also checked against FFmpeg directly so the two halves of this
package cannot agree on a shared mistake.  Every test is bounded by ``time_limit`` so a
decoder that hangs fails the test instead of the suite.
"""

from __future__ import annotations

import gc
import io
import random
import struct
import threading
import time
from collections.abc import Iterable, Sequence
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lmnt_local.server.encoding.encoders import STREAM_FORMATS, make_encoder
from videosdk.plugins.lmnt import decoders, webm
from videosdk.plugins.lmnt.audio import FORMATS, AudioDecodeError, AudioPipeline

from audio_helpers import active_span, duration, estimate_pitch, s16_array, sine_s16, time_limit

IN_RATES = (8000, 16000, 24000)
OUT_RATES = (24000, 16000)
TONE = 440.0
HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Leading delay of the MP3 round trip, in samples at the encoder's rate: LAME's 576-sample
# encoder delay plus the decoder's 529-sample synthesis delay (measured: 1105 at 8/16/24 kHz,
# i.e. 138.1/69.1/46.0 ms).  Nothing trims it: a bare MP3 stream has no gapless metadata.
MP3_DELAY_SAMPLES = 1105
# Total decoded length of a 1.000 s tone, in seconds: whole frames (576 samples at these
# rates) covering delay + tone + LAME's tail.  Measured 1.152 s at 8 kHz, 1.080 s at 16 kHz,
# 1.056 s at 24 kHz.  Opus-in-WebM comes back at exactly 1.000 s: the demuxer applies the
# pre-skip and end trimming that the container records.
MP3_TOTAL = {8000: 1.152, 16000: 1.080, 24000: 1.056}


def _encode(fmt: str, rate: int, pcm: bytes) -> bytes:
    enc = make_encoder(fmt, rate)
    step = rate // 50 * 2  # 20 ms engine chunks, as a session would feed them
    return b"".join([enc.encode(pcm[i : i + step]) for i in range(0, len(pcm), step)]) + (
        enc.finish()
    )


def _decode(fmt: str, in_rate: int, out_rate: int, data: bytes) -> bytes:
    pipe = AudioPipeline(fmt, in_rate, out_rate)
    return pipe.feed(data) + pipe.flush()


def _feed_sizes(pipe: AudioPipeline, data: bytes, sizes: Sequence[int]) -> list[bytes]:
    """Feed ``data`` cut into ``sizes`` (cycled), then flush; every output chunk is returned."""
    outs: list[bytes] = []
    pos, i = 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        outs.append(pipe.feed(data[pos : pos + n]))
        pos += n
        i += 1
    outs.append(pipe.flush())
    return outs


def _random_sizes(seed: int, count: int = 400) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.choice((1, 1, 2, 3, 5, 7, 64, 333, 1000, 4097)) for _ in range(count)]


def _all_even(outs: Iterable[bytes]) -> bool:
    return all(len(o) % 2 == 0 for o in outs)


def _webm_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lmnt-webm-decoder" and t.is_alive()]


# ----------------------------------------------------------------------------- construction


@time_limit()
def test_public_constants() -> None:
    assert FORMATS == ("pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm")
    assert issubclass(AudioDecodeError, ValueError)


@time_limit()
def test_constructor_validation() -> None:
    AudioPipeline("raw", 24000, 24000).close()
    with pytest.raises(ValueError, match="unknown audio format"):
        AudioPipeline("mulaw", 8000, 24000)
    for bad in (0, -1, True, 24000.0, None):
        with pytest.raises(ValueError, match="in_rate"):
            AudioPipeline("pcm_s16le", bad, 24000)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="out_rate"):
            AudioPipeline("pcm_s16le", 24000, bad)  # type: ignore[arg-type]


@time_limit()
def test_lifecycle() -> None:
    pipe = AudioPipeline("pcm_s16le", 16000, 16000)
    assert pipe.feed(bytearray(b"\x01\x00\x02")) == b"\x01\x00"  # any bytes-like input
    assert pipe.samples_out == 1
    assert pipe.flush() == b""  # the stray byte is dropped
    assert pipe.flush() == b""
    pipe.close()
    pipe.close()
    with pytest.raises(RuntimeError, match="finished"):
        pipe.feed(b"\x00\x00")

    closed = AudioPipeline("pcm_s16le", 16000, 16000)
    closed.close()
    assert closed.flush() == b""
    with pytest.raises(RuntimeError):
        closed.feed(b"\x00\x00")


@time_limit()
def test_decode_errors_are_sticky() -> None:
    pipe = AudioPipeline("ulaw", 8000, 8000)
    with pytest.raises(AudioDecodeError):
        pipe.feed(b"RIFF\x00\x00\x00\x00WAVX")
    with pytest.raises(AudioDecodeError, match="not WAVE"):
        pipe.feed(b"\xff")
    with pytest.raises(AudioDecodeError):
        pipe.flush()


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("out_rate", OUT_RATES)
@pytest.mark.parametrize("in_rate", IN_RATES)
@pytest.mark.parametrize("fmt", STREAM_FORMATS)
@time_limit()
def test_round_trip_pitch_and_duration(fmt: str, in_rate: int, out_rate: int) -> None:
    tone = sine_s16(TONE, 1.0, in_rate)
    pipe = AudioPipeline(fmt, in_rate, out_rate)
    encoded = _encode(fmt, in_rate, tone)
    step = 1500  # server-sized WebSocket frames
    outs = [pipe.feed(encoded[i : i + step]) for i in range(0, len(encoded), step)]
    outs.append(pipe.flush())
    assert _all_even(outs)
    pcm = b"".join(outs)
    assert pipe.samples_out == len(pcm) // 2

    pitch = estimate_pitch(pcm, out_rate)
    start, end = active_span(pcm, out_rate)
    assert abs(pitch - TONE) / TONE < 0.01, pitch
    assert abs((end - start) - 1.0) < 0.020, end - start
    total = duration(pcm, out_rate)
    if fmt == "mp3":
        assert abs(start - MP3_DELAY_SAMPLES / in_rate) < 0.003, start
        assert abs(total - MP3_TOTAL[in_rate]) < 0.002, total
    else:
        # Lossless formats and WebM: no delay, and soxr's flush gives back every sample.
        assert start < 0.001, start
        assert abs(total - 1.0) <= 1 / out_rate, total


# ----------------------------------------------------------------------------- PCM


@time_limit()
def test_s16_same_rate_is_zero_copy() -> None:
    pipe = AudioPipeline("pcm_s16le", 24000, 24000)
    data = sine_s16(TONE, 0.02, 24000)
    assert pipe.feed(data) is data


@time_limit()
def test_s16_odd_byte_is_carried() -> None:
    pipe = AudioPipeline("raw", 8000, 8000)
    assert pipe.feed(b"\x01") == b""
    assert pipe.feed(b"\x02\x03") == b"\x01\x02"
    assert pipe.feed(b"\x04\x05\x06") == b"\x03\x04\x05\x06"
    assert pipe.feed(b"") == b""
    assert pipe.flush() == b""


def _pcm_case(fmt: str, in_rate: int, out_rate: int) -> tuple[str, int, int, bytes]:
    tone = sine_s16(TONE, 0.1, in_rate)
    return (fmt, in_rate, out_rate, _encode(fmt, in_rate, tone))


CHUNK_CASES = [
    _pcm_case("pcm_s16le", 16000, 16000),
    _pcm_case("pcm_s16le", 16000, 24000),
    _pcm_case("raw", 24000, 16000),
    _pcm_case("pcm_f32le", 24000, 24000),
    _pcm_case("pcm_f32le", 8000, 24000),
    _pcm_case("ulaw", 8000, 8000),
    _pcm_case("ulaw", 8000, 24000),
]


@pytest.mark.parametrize("case", CHUNK_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
@time_limit(3.0)
@HYPOTHESIS
@given(sizes=st.lists(st.integers(min_value=1, max_value=701), min_size=1, max_size=40))
@example(sizes=[1])
@example(sizes=[3, 1, 2, 5])
def test_pcm_chunking_is_byte_identical(
    case: tuple[str, int, int, bytes], sizes: list[int]
) -> None:
    """Any cut, including 1-byte and odd-sized feeds, gives exactly the single-feed bytes; the
    resampler runs in float32 precisely so this holds when rates differ too."""
    fmt, in_rate, out_rate, data = case
    reference = _decode(fmt, in_rate, out_rate, data)
    outs = _feed_sizes(AudioPipeline(fmt, in_rate, out_rate), data, sizes)
    assert _all_even(outs)
    assert b"".join(outs) == reference


@time_limit()
def test_f32_clipping_rounding_and_non_finite() -> None:
    values = [0.0, 1.0, -1.0, 2.0, -2.0, float("nan"), float("inf"), -float("inf")]
    values += [0.25, -0.25, 1e-5, 0.5 / 32768, 1.5 / 32768]
    expected = [0, 32767, -32768, 32767, -32768, 0, 0, 0, 8192, -8192, 0, 0, 2]
    pipe = AudioPipeline("pcm_f32le", 24000, 24000)
    out = pipe.feed(np.array(values, dtype="<f4").tobytes())
    assert s16_array(out).tolist() == expected


@time_limit()
def test_f32_partial_samples_are_carried() -> None:
    data = np.array([0.5, -0.5, 0.25], dtype="<f4").tobytes()
    pipe = AudioPipeline("pcm_f32le", 16000, 16000)
    outs = [pipe.feed(data[:3]), pipe.feed(data[3:5]), pipe.feed(data[5:11]), pipe.feed(data[11:])]
    assert [len(o) for o in outs] == [0, 2, 2, 2]
    assert s16_array(b"".join(outs)).tolist() == [16384, -16384, 8192]


@time_limit()
@HYPOTHESIS
@given(samples=st.lists(st.integers(min_value=-32768, max_value=32767), max_size=200))
def test_f32_round_trip_is_exact(samples: list[int]) -> None:
    pcm = np.array(samples, dtype="<i2").tobytes()
    assert _decode("pcm_f32le", 8000, 8000, _encode("pcm_f32le", 8000, pcm)) == pcm


# ----------------------------------------------------------------------------- µ-law / WAV


def _fmt_body(tag: int = 7, channels: int = 1, rate: int = 8000, bits: int = 8) -> bytes:
    align = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)


def _chunk(chunk_id: bytes, body: bytes, size: int | None = None) -> bytes:
    pad = b"\x00" if len(body) % 2 else b""
    return chunk_id + struct.pack("<I", len(body) if size is None else size) + body + pad


def _wav(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _ulaw_codes(seconds: float, rate: int) -> bytes:
    return _encode("ulaw", rate, sine_s16(TONE, seconds, rate))[44:]


def _lut_decode(codes: bytes) -> bytes:
    return decoders._ULAW_TO_S16[np.frombuffer(codes, np.uint8)].tobytes()


@time_limit()
def test_ulaw_table_matches_ffmpeg() -> None:
    ctx = av.CodecContext.create("pcm_mulaw", "r")
    ctx.sample_rate, ctx.layout = 8000, "mono"
    frames = ctx.decode(av.Packet(bytes(range(256))))
    reference = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert reference.tolist() == decoders._ULAW_TO_S16.tolist()


@time_limit()
def test_ulaw_without_riff_is_bare_g711() -> None:
    codes = _ulaw_codes(0.1, 8000)
    assert _decode("ulaw", 8000, 8000, codes) == _lut_decode(codes)
    # Starting with "R" (or even "RIF") is not enough to be mistaken for a header.
    for lead in (b"R\x00", b"RIF\x00", b"RIFX"):
        data = lead + codes
        pipe = AudioPipeline("ulaw", 8000, 8000)
        outs = [pipe.feed(data[i : i + 1]) for i in range(len(data))] + [pipe.flush()]
        assert b"".join(outs) == _lut_decode(data)


@time_limit()
def test_ulaw_header_split_at_every_byte() -> None:
    codes = _ulaw_codes(0.05, 8000)
    stream = _wav(
        _chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00lmnt\x00"),
        _chunk(b"fmt ", _fmt_body() + b"\x00\x00"),  # 18-byte fmt with cbSize
        _chunk(b"fact", struct.pack("<I", len(codes))),
        _chunk(b"data", codes, size=0xFFFFFFFF),
    )
    header_len = len(stream) - len(codes)
    expected = _lut_decode(codes)
    for cut in range(header_len + 3):
        pipe = AudioPipeline("ulaw", 8000, 8000)
        first = pipe.feed(stream[:cut])
        assert (first == b"") == (cut <= header_len), cut
        assert first + pipe.feed(stream[cut:]) + pipe.flush() == expected, cut
    pipe = AudioPipeline("ulaw", 8000, 8000)
    assert b"".join(_feed_sizes(pipe, stream, [1])) == expected


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF, None])
@time_limit()
def test_ulaw_data_sizes(size: int | None) -> None:
    """0 and 0xFFFFFFFF mean "until the end"; a real size ends the audio even if an (odd-sized,
    padded) LIST chunk follows, whose bytes must not be played."""
    codes = _ulaw_codes(0.05, 8000)[:-1]  # odd length exercises the pad byte
    trailer = _chunk(b"LIST", b"INFOICMT\x03\x00\x00\x00hi\x00") if size is None else b""
    stream = _wav(_chunk(b"fmt ", _fmt_body()), _chunk(b"data", codes, size=size)) + trailer
    if size is not None:
        stream = stream[: -1 if len(codes) % 2 else None]  # no pad byte on a live stream
    assert _decode("ulaw", 8000, 8000, stream) == _lut_decode(codes)


@time_limit()
def test_ulaw_header_rate_wins() -> None:
    codes = _ulaw_codes(0.5, 16000)
    stream = _wav(_chunk(b"fmt ", _fmt_body(rate=16000)), _chunk(b"data", codes, size=0))
    pcm = _decode("ulaw", 8000, 16000, stream)  # asked for 8 kHz, server sent 16 kHz
    assert pcm == _lut_decode(codes)  # no resampling at all: 16k in, 16k out
    assert abs(estimate_pitch(pcm, 16000) - TONE) < 1.0
    resampled = _decode("ulaw", 8000, 24000, stream)
    assert abs(duration(resampled, 24000) - 0.5) < 0.001


@time_limit()
def test_ulaw_stereo_and_extensible_are_averaged() -> None:
    rnd = random.Random(7)
    left, right = rnd.randbytes(400), rnd.randbytes(400)
    interleaved = bytes(b for pair in zip(left, right, strict=True) for b in pair)
    lut = decoders._ULAW_TO_S16.astype(np.int32)
    mean = (lut[np.frombuffer(left, np.uint8)] + lut[np.frombuffer(right, np.uint8)]) / 2
    expected = np.rint(mean).astype("<i2").tobytes()

    plain = _wav(_chunk(b"fmt ", _fmt_body(channels=2)), _chunk(b"data", interleaved))
    guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    extensible_body = (
        _fmt_body(tag=0xFFFE, channels=2)
        + struct.pack("<HHI", 22, 8, 3)
        + struct.pack("<H", 7)
        + guid_tail
    )
    extensible = _wav(_chunk(b"fmt ", extensible_body), _chunk(b"data", interleaved, size=0))
    for stream in (plain, extensible):
        pipe = AudioPipeline("ulaw", 8000, 8000)
        assert b"".join(_feed_sizes(pipe, stream, [3, 1, 5])) == expected


@time_limit()
def test_ulaw_concatenated_and_restarted_streams() -> None:
    a = _ulaw_codes(0.05, 8000)
    sized = _wav(_chunk(b"fmt ", _fmt_body()), _chunk(b"data", a))
    assert _decode("ulaw", 8000, 8000, sized + sized) == _lut_decode(a + a)

    # A live stream whose encoder restarted: the new header arrives at the start of a frame.
    live_a = make_encoder("ulaw", 8000).encode(sine_s16(TONE, 0.05, 8000))
    live_b = make_encoder("ulaw", 8000).encode(sine_s16(TONE, 0.03, 8000))
    pipe = AudioPipeline("ulaw", 8000, 8000)
    out = pipe.feed(live_a) + pipe.feed(live_b) + pipe.flush()
    assert out == _lut_decode(live_a[44:] + live_b[44:])


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"RIFF\x00\x00\x00\x00AVI LIST", "not WAVE"),
        (_wav(_chunk(b"fmt ", _fmt_body(tag=1, bits=16)), _chunk(b"data", b"\0\0")), "0x0001"),
        (_wav(_chunk(b"fmt ", _fmt_body(bits=16)), _chunk(b"data", b"\0\0")), "16 bits"),
        (_wav(_chunk(b"fmt ", _fmt_body(rate=0)), _chunk(b"data", b"\0\0")), "rate 0"),
        (_wav(_chunk(b"data", b"\0\0")), "data chunk before fmt"),
        (_wav(_chunk(b"fmt ", b"\0" * 8)), "fmt chunk of 8 bytes"),
        (_wav(_chunk(b"fmt ", _fmt_body())), "ended inside the WAV header"),
        (b"RIFF\x10\x00", "ended inside the WAV header"),
    ],
)
@time_limit()
def test_ulaw_bad_headers(stream: bytes, message: str) -> None:
    pipe = AudioPipeline("ulaw", 8000, 8000)
    with pytest.raises(AudioDecodeError, match=message) as info:
        pipe.feed(stream)
        pipe.flush()
    assert str(info.value).startswith("ulaw: ")


@time_limit()
def test_decode_error_message_quotes_only_a_few_bytes() -> None:
    junk = bytes(range(256)) * 40
    pipe = AudioPipeline("ulaw", 8000, 8000)
    with pytest.raises(AudioDecodeError) as info:
        pipe.feed(b"RIFF\xff\xff\xff\xff" + junk)
    assert str(info.value) == "ulaw: RIFF stream is not WAVE (bytes: 00 01 02 03)"


# ----------------------------------------------------------------------------- MP3


@pytest.mark.parametrize("seed", [1, 2, 3])
@time_limit()
def test_mp3_chunking(seed: int) -> None:
    data = _encode("mp3", 24000, sine_s16(TONE, 0.5, 24000))
    reference = _decode("mp3", 24000, 16000, data)
    outs = _feed_sizes(AudioPipeline("mp3", 24000, 16000), data, _random_sizes(seed))
    assert _all_even(outs)
    # The spec allows ±1 frame; in practice parser + decoder are deterministic.
    assert b"".join(outs) == reference
    ones = _feed_sizes(AudioPipeline("mp3", 24000, 16000), data[: len(data) // 4], [1])
    assert b"".join(ones) == _decode("mp3", 24000, 16000, data[: len(data) // 4])


@time_limit()
def test_mp3_streams_as_frames_arrive() -> None:
    enc = make_encoder("mp3", 24000)
    pipe = AudioPipeline("mp3", 24000, 24000)
    tone = sine_s16(TONE, 0.5, 24000)
    got_at: float | None = None
    for i in range(0, len(tone), 960):  # 20 ms engine chunks
        if pipe.feed(enc.encode(tone[i : i + 960])) and got_at is None:
            got_at = (i + 960) / 2 / 24000
    assert got_at is not None and got_at <= 0.1, got_at


@time_limit()
def test_mp3_with_id3_and_xing_from_a_file() -> None:
    """What FFmpeg's MP3 muxer writes (ID3v2 tag, Xing frame, ID3v1 trailer) also decodes."""
    rate = 16000
    buf = io.BytesIO()
    container = av.open(buf, "w", format="mp3", options={"write_id3v1": "1"})
    container.metadata["title"] = "x" * 300
    stream = container.add_stream("libmp3lame", rate=rate, layout="mono")
    stream.codec_context.format = "s16p"
    tone = s16_array(sine_s16(TONE, 0.5, rate))
    for n, i in enumerate(range(0, tone.size, 576)):
        frame = av.AudioFrame.from_ndarray(
            tone[i : i + 576].reshape(1, -1), format="s16p", layout="mono"
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, n * 576, Fraction(1, rate)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    data = buf.getvalue()
    assert data[:3] == b"ID3"
    for sizes in ([len(data)], [1], [3, 7, 11]):
        pcm = b"".join(_feed_sizes(AudioPipeline("mp3", rate, 24000), data, sizes))
        start, end = active_span(pcm, 24000)
        assert abs(estimate_pitch(pcm, 24000) - TONE) < 2.0
        assert abs((end - start) - 0.5) < 0.02


@time_limit()
def test_mp3_rate_change_mid_stream() -> None:
    first = _encode("mp3", 24000, sine_s16(TONE, 0.5, 24000))
    second = _encode("mp3", 16000, sine_s16(2 * TONE, 0.5, 16000))
    pipe = AudioPipeline("mp3", 24000, 24000)
    pcm = pipe.feed(first) + pipe.feed(second) + pipe.flush()
    expected = duration(_decode("mp3", 24000, 24000, first), 24000) + duration(
        _decode("mp3", 16000, 16000, second), 16000
    )
    assert abs(duration(pcm, 24000) - expected) < 0.002
    half = len(pcm) // 2 // 2 * 2
    assert abs(estimate_pitch(pcm[:half], 24000) - TONE) < 2.0
    assert abs(estimate_pitch(pcm[half:], 24000) - 2 * TONE) < 4.0


@time_limit()
def test_mp3_cut_mid_frame_keeps_what_arrived() -> None:
    """A stream cut inside its last frame (dropped connection) is not a format error."""
    data = _encode("mp3", 24000, sine_s16(TONE, 0.5, 24000))
    whole = duration(_decode("mp3", 24000, 24000, data), 24000)
    for cut in (1, 100, 287):  # 288-byte frames: 287 leaves a single byte of the last one
        pcm = _decode("mp3", 24000, 24000, data[:-cut])
        assert whole - 0.025 <= duration(pcm, 24000) <= whole


@time_limit()
def test_mp3_stereo_is_downmixed() -> None:
    rate = 24000
    ctx = av.CodecContext.create("libmp3lame", "w")
    ctx.sample_rate, ctx.layout, ctx.format, ctx.bit_rate = rate, "stereo", "s16p", 128000
    ctx.time_base = Fraction(1, rate)
    ctx.open()
    left = s16_array(sine_s16(TONE, 0.5, rate))
    planes = np.stack([left, np.zeros_like(left)])
    data = b""
    for i in range(0, left.size, 1152):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(planes[:, i : i + 1152]), format="s16p", layout="stereo"
        )
        frame.sample_rate, frame.pts, frame.time_base = rate, i, Fraction(1, rate)
        data += b"".join(bytes(p) for p in ctx.encode(frame))
    data += b"".join(bytes(p) for p in ctx.encode(None))
    pcm = _decode("mp3", rate, rate, data)
    assert abs(estimate_pitch(pcm, rate) - TONE) < 1.0
    peak = np.abs(s16_array(pcm)).max() / 32768
    assert 0.2 < peak < 0.3  # half of the 0.5 left channel: averaged, not summed or dropped


@pytest.mark.parametrize("seed", range(6))
@time_limit()
def test_mp3_garbage_raises(seed: int) -> None:
    rnd = random.Random(seed)
    garbage = rnd.randbytes(rnd.choice((1, 10, 417, 5000, 40000)))
    pipe = AudioPipeline("mp3", 24000, 24000)
    with pytest.raises(AudioDecodeError) as info:
        for i in range(0, len(garbage), 999):
            assert len(pipe.feed(garbage[i : i + 999])) % 2 == 0
        pipe.flush()
    assert str(info.value).startswith("mp3: ")
    assert len(str(info.value)) < 200


@time_limit()
def test_mp3_nothing_decodable_raises_at_flush() -> None:
    """Bytes fed but no frame decoded is an error (here: only an ID3 tag)."""
    tag = b"ID3\x04\x00\x00\x00\x00\x00\x05hello"
    pipe = AudioPipeline("mp3", 24000, 24000)
    assert pipe.feed(tag) == b""
    with pytest.raises(AudioDecodeError, match="no MPEG audio frame"):
        pipe.flush()
    assert AudioPipeline("mp3", 24000, 24000).flush() == b""  # nothing fed: nothing wrong


# ----------------------------------------------------------------------------- WebM / Opus


@pytest.mark.parametrize("seed", [1, 2])
@time_limit()
def test_webm_chunking(seed: int) -> None:
    data = _encode("webm", 16000, sine_s16(TONE, 0.5, 16000))
    reference = _decode("webm", 16000, 24000, data)
    outs = _feed_sizes(AudioPipeline("webm", 16000, 24000), data, _random_sizes(seed))
    assert _all_even(outs)
    assert b"".join(outs) == reference  # ±1 frame allowed; in practice identical
    head = data[:1500]  # header + first clusters, one byte at a time
    ones = _feed_sizes(AudioPipeline("webm", 16000, 24000), head, [1])
    assert b"".join(ones) == _decode("webm", 16000, 24000, head)
    assert not _webm_threads()


@time_limit()
def test_webm_streams_as_clusters_arrive() -> None:
    """Each feed returns what its bytes decoded to (the worker is given time to catch up), so
    PCM starts long before the stream ends: Opus lookahead + one cluster + soxr's HQ filter."""
    enc = make_encoder("webm", 24000)
    pipe = AudioPipeline("webm", 24000, 24000)
    tone = sine_s16(TONE, 0.5, 24000)
    got_at: float | None = None
    for i in range(0, len(tone), 960):
        if pipe.feed(enc.encode(tone[i : i + 960])) and got_at is None:
            got_at = (i + 960) / 2 / 24000
    pipe.feed(enc.finish())
    pipe.flush()
    assert got_at is not None and got_at <= 0.15, got_at


@pytest.mark.parametrize("seed", range(4))
@time_limit()
def test_webm_garbage_raises(seed: int) -> None:
    rnd = random.Random(seed)
    garbage = rnd.randbytes(rnd.choice((1, 100, 5000, 40000)))
    if seed % 2:
        garbage = b"\x1a\x45\xdf\xa3" + garbage  # EBML magic, then nonsense
    pipe = AudioPipeline("webm", 24000, 24000)
    with pytest.raises(AudioDecodeError) as info:
        for i in range(0, len(garbage), 999):
            assert len(pipe.feed(garbage[i : i + 999])) % 2 == 0
        pipe.flush()
    assert str(info.value).startswith("webm: ")
    assert len(str(info.value)) < 200
    with pytest.raises(AudioDecodeError):
        pipe.feed(b"more")
    time.sleep(0.01)
    assert not _webm_threads()


@time_limit()
def test_webm_truncated_stream_decodes_what_arrived() -> None:
    data = _encode("webm", 24000, sine_s16(TONE, 0.5, 24000))
    pcm = _decode("webm", 24000, 24000, data[: len(data) // 2])
    assert 0.15 < duration(pcm, 24000) < 0.35
    assert _decode("webm", 24000, 24000, b"") == b""


@time_limit()
def test_webm_close_stops_a_waiting_worker() -> None:
    data = _encode("webm", 24000, sine_s16(TONE, 0.5, 24000))
    pipe = AudioPipeline("webm", 24000, 24000)
    pipe.feed(data[:2000])
    assert _webm_threads()  # blocked in read(), waiting for more
    started = time.monotonic()
    pipe.close()
    assert time.monotonic() - started < 0.5
    assert not _webm_threads()
    pipe.close()
    assert pipe.flush() == b""
    with pytest.raises(RuntimeError):
        pipe.feed(data[2000:])


@time_limit()
def test_webm_dropped_pipeline_releases_its_thread() -> None:
    data = _encode("webm", 24000, sine_s16(TONE, 0.2, 24000))
    pipe = AudioPipeline("webm", 24000, 24000)
    pipe.feed(data[:1500])
    assert _webm_threads()
    del pipe
    gc.collect()
    deadline = time.monotonic() + 1.0
    while _webm_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _webm_threads()


@time_limit()
def test_webm_flush_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A demuxer that never finishes turns into an AudioDecodeError, not a hung flush."""
    release = threading.Event()

    def stuck(src: object, results: object) -> None:
        release.wait(5.0)

    monkeypatch.setattr(webm, "_demux_webm", stuck)
    monkeypatch.setattr(webm, "_WEBM_FLUSH_TIMEOUT", 0.2)
    monkeypatch.setattr(webm._WebmDecoder, "CATCH_UP_TIMEOUT", 0.01)
    pipe = AudioPipeline("webm", 24000, 24000)
    pipe.feed(b"\x1a\x45\xdf\xa3")
    started = time.monotonic()
    with pytest.raises(AudioDecodeError, match="did not finish"):
        pipe.flush()
    assert 0.15 < time.monotonic() - started < 0.6
    release.set()
