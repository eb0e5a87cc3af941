"""How much audio the bytes a codec gave out carry, read from the bytes themselves.

A codec holds audio back (lookahead, a whole frame, a muxer's open cluster), so the audio fed
to it is ahead of the audio its output carries.  Frames sent to a client must be timed by the
latter: a client places a frame where its audio begins in what it decodes, and legacy extras
and 1.1 timestamps time words from there.  Encoders may run in another process, so the time is
read from the output: constant-bit-rate MP3 by its byte count, WebM (Opus) by its blocks.
Clients read the bytes they receive the same way (the decoder holds audio back too), so both
ends agree on where every frame starts.
"""

from __future__ import annotations

__all__ = ["ByteTimer", "Mp3Timer", "WebmTimer", "timer_for"]

#: (bytes, seconds of audio they carry), in byte order, covering every byte given.
Pieces = list[tuple[int, float]]

# Bit rates (kbit/s) of MPEG-audio Layer III: MPEG-1, then MPEG-2 and 2.5.
_MP3_KBPS_V1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_KBPS_V2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)


class ByteTimer:
    """Base: reads a codec's output as it is given out."""

    def feed(self, data: bytes) -> Pieces:
        raise NotImplementedError


class Mp3Timer(ByteTimer):
    """Bare constant-bit-rate MPEG audio: every byte carries 8 / bit rate seconds, counted
    from the first byte (the codec's own delay is the client's to add, as for any MP3)."""

    def __init__(self) -> None:
        self._per_byte: float | None = None

    def feed(self, data: bytes) -> Pieces:
        if not data:
            return []
        if self._per_byte is None:
            self._per_byte = _mp3_seconds_per_byte(data)
        return [(len(data), len(data) * self._per_byte)]


def _mp3_seconds_per_byte(data: bytes) -> float:
    if len(data) < 3 or data[0] != 0xFF or data[1] & 0xE0 != 0xE0:
        raise ValueError("MP3 output does not start with an MPEG-audio frame header")
    version, index = (data[1] >> 3) & 3, data[2] >> 4
    kbps = (_MP3_KBPS_V1 if version == 3 else _MP3_KBPS_V2)[index] if 0 < index < 15 else 0
    if not kbps:
        raise ValueError(f"MP3 frame header with an unusable bit rate index {index}")
    return 8.0 / (kbps * 1000)


_SEGMENT = 0x18538067
_CLUSTER = 0x1F43B675
_SIMPLE_BLOCK = 0xA3
_BLOCK_GROUP = 0xA0
_BLOCK = 0xA1
_CODEC_PRIVATE = 0x63A2
_TRACKS = 0x1654AE6B
_TRACK_ENTRY = 0xAE
_MASTERS = frozenset((_SEGMENT, _CLUSTER, _BLOCK_GROUP, _TRACKS, _TRACK_ENTRY))


def _vint(buf: bytearray, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of the EBML variable-size integer at ``at``; None if incomplete.
    An all-ones size (unknown) is returned as -1."""
    if at >= len(buf):
        return None
    first = buf[at]
    length = 1
    while length <= 8 and not first & (0x80 >> (length - 1)):
        length += 1
    if length > 8:
        raise ValueError("invalid EBML variable-size integer")
    if at + length > len(buf):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for b in buf[at + 1 : at + length]:
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = -1
    return value, length


def _opus_seconds(packet: bytes) -> float:
    """Duration of one Opus packet from its TOC byte (RFC 6716, 3.1)."""
    if not packet:
        return 0.0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (0.010, 0.020, 0.040, 0.060)[config % 4]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (0.010, 0.020)[config % 2]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (0.0025, 0.005, 0.010, 0.020)[config % 4]
    code = toc & 3
    count = 1 if code == 0 else 2 if code < 3 else (packet[1] & 0x3F if len(packet) > 1 else 0)
    return frame * count


class WebmTimer(ByteTimer):
    """Opus in WebM: each block carries its packet's duration, the decoder's pre-skip (from
    the OpusHead) trimmed off the first ones, as the decoder trims it; everything else (EBML
    header, track info, cluster headers) carries none."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._owed = 0  # bytes of _buf already returned (as carrying no time)
        self._skip = 0.0  # pre-skip still to trim, seconds

    def feed(self, data: bytes) -> Pieces:
        if not data:
            return []
        self._buf += data
        parsed, at = self._parse()
        del self._buf[:at]
        owed, self._owed = self._owed, len(self._buf)
        if owed:  # an element split between two outputs (not what the muxer does): lump it
            return [(len(data), sum(s for _, s in parsed))]
        if self._owed:
            parsed.append((self._owed, 0.0))
        return parsed

    @property
    def partial(self) -> float:
        """Seconds carried by the bytes of a block received so far but not yet whole (the
        server's frames are cut at any byte; a block's time is spread evenly over its bytes)."""
        buf = self._buf
        ident = _vint(buf, 0, keep_marker=True)
        size = None if ident is None else _vint(buf, ident[1], keep_marker=False)
        if ident is None or size is None or ident[0] not in (_SIMPLE_BLOCK, _BLOCK):
            return 0.0
        head = ident[1] + size[1]
        track = _vint(buf, head, keep_marker=False)
        if track is None or size[0] <= 0:
            return 0.0
        toc = head + track[1] + 3  # after the block's timecode and flags
        if len(buf) <= toc + 1:
            return 0.0
        seconds = _opus_seconds(bytes(buf[toc : toc + 2]))
        seconds -= min(self._skip, seconds)
        total = head + size[0]
        return seconds * min(1.0, (len(buf) - toc - 1) / (total - toc - 1))

    def _parse(self) -> tuple[Pieces, int]:
        out: Pieces = []
        at = 0
        buf = self._buf
        while True:
            ident = _vint(buf, at, keep_marker=True)
            if ident is None:
                break
            size = _vint(buf, at + ident[1], keep_marker=False)
            if size is None:
                break
            head = ident[1] + size[1]
            if ident[0] in _MASTERS:  # step inside: its children follow
                out.append((head, 0.0))
                at += head
                continue
            if size[0] < 0:
                raise ValueError("WebM element of unknown size that is not a container")
            end = at + head + size[0]
            if end > len(buf):
                break
            body = bytes(buf[at + head : end])
            seconds = 0.0
            if ident[0] in (_SIMPLE_BLOCK, _BLOCK):
                track = _vint(bytearray(body), 0, keep_marker=False)
                toc = head + (track[1] if track is not None else 0) + 3
                if track is not None and end - at > toc + 1:
                    seconds = _opus_seconds(body[toc - head :])
                    trimmed = min(self._skip, seconds)
                    self._skip -= trimmed
                    seconds -= trimmed
                    # Its time is carried by the bytes after its TOC byte, evenly: a client
                    # holding part of the block reads the same (``partial``).
                    out.append((toc + 1, 0.0))
                    out.append((end - at - toc - 1, seconds))
                    at = end
                    continue
            elif ident[0] == _CODEC_PRIVATE and body.startswith(b"OpusHead") and len(body) >= 12:
                self._skip = int.from_bytes(body[10:12], "little") / 48000
            out.append((end - at, seconds))
            at = end
        return out, at


def timer_for(fmt: str) -> ByteTimer | None:
    """A timer for ``fmt``'s output, or None where the audio fed is what the bytes carry
    (PCM, µ-law) or the format is not read here."""
    if fmt == "mp3":
        return Mp3Timer()
    if fmt == "webm":
        return WebmTimer()
    return None
