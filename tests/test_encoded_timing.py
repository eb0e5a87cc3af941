"""The server times an encoded frame by the audio its bytes carry (issue 22 item 6).

A codec holds audio back, so the audio fed to it runs ahead of what its output carries; frames
credited with the audio fed started 30-60 ms late and per-frame word timings (legacy extras,
1.1 timestamps) came out that much early.
"""

from __future__ import annotations

import asyncio

import pytest

from lmnt_local.protocol.audio_timing import WebmTimer, timer_for
from lmnt_local.server.encoding.encoders import make_encoder
from lmnt_local.server.encoding.stream import AudioStream, Frame
from videosdk.plugins.lmnt.audio import AudioPipeline


@pytest.mark.parametrize(("fmt", "rate"), [("mp3", 24000), ("mp3", 8000), ("webm", 24000)])
def test_timed_output_trails_the_audio_fed_and_catches_up_at_a_drain(fmt: str, rate: int) -> None:
    encoder = make_encoder(fmt, rate)
    timer = timer_for(fmt)
    assert timer is not None
    fed = timed = 0.0
    for _ in range(20):
        out = encoder.encode(bytes(2 * (rate // 10)))
        fed += 0.1
        pieces = timer.feed(out)
        assert sum(n for n, _ in pieces) == len(out)
        timed += sum(s for _, s in pieces)
        # Behind by what the codec holds (a frame or two and its lookahead), never ahead.
        assert 0.0 < fed - timed < 0.15
    data, padded = encoder.drain()
    fed += padded / rate
    timed += sum(s for _, s in timer.feed(data))
    # MP3 counts its priming (the client adds the codec delay); WebM's pre-skip is trimmed.
    assert abs((fed - timed) - (0.0 if fmt == "mp3" else 0.0465)) < 0.08


def test_webm_blocks_carry_their_packet_duration_less_the_pre_skip() -> None:
    encoder = make_encoder("webm", 24000)
    timer = WebmTimer()
    out = encoder.encode(bytes(2 * 24000)) + encoder.finish()
    seconds = sum(s for _, s in timer.feed(out))
    # 51 packets of 20 ms are muxed for one second (lookahead), minus the 6.5 ms pre-skip.
    assert seconds == pytest.approx(1.0 + 0.020 - 0.0065, abs=0.021)


def test_other_formats_are_timed_by_the_audio_fed() -> None:
    assert timer_for("pcm_s16le") is None
    assert timer_for("ulaw") is None


@pytest.mark.parametrize("cut", [1, 7, 300, 4096])
def test_the_client_reads_the_same_time_at_every_byte_as_the_server_credits(cut: int) -> None:
    """WebM frames cut anywhere, even inside a block: the plugin's reading of the bytes it
    received is the server's time for the frame's start and end, to the nanosecond."""

    async def frames() -> list[tuple[bytes, float, float]]:
        stream = AudioStream(make_encoder("webm", 24000), 24000, cut)
        out: list[Frame] = []
        for _ in range(10):
            out += await stream.feed(bytes(2 * 2400), [], 0.0)
        out += await stream.drain()
        return [(f.data, f.start, f.end) for f in out]

    pipeline = AudioPipeline("webm", 24000, 24000)
    try:
        for data, start, end in asyncio.run(frames()):
            assert pipeline.seconds_received == pytest.approx(start, abs=1e-9)
            pipeline.feed(data)
            assert pipeline.seconds_received == pytest.approx(end, abs=1e-9)
    finally:
        pipeline.close()
