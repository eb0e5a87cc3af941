"""Driving the real framework track headlessly (see conftest for why)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
from videosdk.agents.room.output_stream import CustomAudioStreamTrack
from videosdk.agents.speech_generation import SpeechGeneration
from videosdk.agents.tts.tts import FlushMarker

TRACK_RATE = 24000
FRAME_BYTES = 960


def make_track(
    cls: type[CustomAudioStreamTrack] = CustomAudioStreamTrack, *, realtime: bool = False
) -> Any:
    track = cls(asyncio.get_running_loop())
    if not realtime:
        track._start = 0.0  # a start in the past: recv() never sleeps
    track._speaking_grace_period = 0.0
    return track


class Drain:
    """Pulls frames from a track as the WebRTC sender would, but as fast as they are ready.

    Only frames that carried queued audio are kept (the track's played counter moved), so the
    collected PCM is exactly what left the track for the listener, silences between chunks aside.
    """

    def __init__(self, track: Any) -> None:
        self.track = track
        self.frames: list[bytes] = []
        self.sizes: list[int] = []
        self._stop = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def _queued(self) -> bool:
        t = self.track
        return bool(t.frame_buffer) or len(t.audio_data_buffer) >= t.chunk_size

    async def _run(self) -> None:
        for _ in range(2_000_000):  # bounded; tests also bound by time
            if self._stop:
                return
            played = self.track._samples_played
            frame = await self.track.recv()
            # The track counts a frame as played only when it carried queued audio.
            if self.track._samples_played > played and frame is not None:
                arr = frame.to_ndarray().astype(np.int16).reshape(-1)
                self.frames.append(arr.tobytes())
                self.sizes.append(arr.size)
            await asyncio.sleep(0 if self._queued() else 0.001)

    @property
    def pcm(self) -> bytes:
        return b"".join(self.frames)

    async def stop(self) -> bytes:
        self._stop = True
        await asyncio.wait_for(self._task, 5)
        return self.pcm


def free_port() -> int:
    """A loopback port nothing listens on (connection refused), for failure tests."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def aiter_of(items: Iterable[Any], delay: float = 0.0) -> AsyncIterator[Any]:
    for item in items:
        if delay:
            await asyncio.sleep(delay)
        yield item


async def speak(tts: Any, text: Any, *, timeout: float = 10.0, track: Any = None) -> bytes:
    """One turn through the framework's real SpeechGeneration and track; returns played PCM."""
    track = track or make_track()
    sg = SpeechGeneration(tts=tts)
    sg.set_audio_track(track)
    tts.loop = asyncio.get_running_loop()
    done = asyncio.Event()
    sg.on("last_audio_byte", lambda _=None: done.set())
    drain = Drain(track)
    try:
        async with asyncio.timeout(timeout):
            await sg.synthesize(text)
            await done.wait()
    finally:
        pcm = await drain.stop()
    return pcm


__all__ = [
    "FRAME_BYTES",
    "TRACK_RATE",
    "Drain",
    "FlushMarker",
    "aiter_of",
    "free_port",
    "make_track",
    "speak",
]
