"""What the framework's audio track can tell us: audio still queued on it, and a playback clock.

The track is the framework's; these read its counters defensively (any may be missing), which
is how words are announced as they are heard and stale announcements are trimmed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _queued_samples(track: Any) -> int | None:
    """Samples of audio waiting on the framework's track (queued and paused), if it can tell."""
    rate = getattr(track, "sample_rate", None)
    if not isinstance(getattr(track, "_samples_played", None), int) or not isinstance(rate, int):
        return None
    samples = getattr(track, "samples", rate // 50)
    queued = len(getattr(track, "frame_buffer", ())) * samples
    queued += len(getattr(track, "_paused_frames", ())) * samples
    queued += len(getattr(track, "audio_data_buffer", b"")) // 2
    return int(queued)


def _playback_clock(track: Any) -> Callable[[], float] | None:
    """Seconds of the coming turn's audio the track has played, if the track can tell.

    The framework's track counts frames it played (``_samples_played``); audio already queued
    when the turn starts plays first, so it is subtracted.
    """
    played0 = getattr(track, "_samples_played", None)
    rate = getattr(track, "sample_rate", None)
    queued = _queued_samples(track)
    if not isinstance(played0, int) or not isinstance(rate, int) or rate <= 0 or queued is None:
        return None

    def played() -> float:
        return float(track._samples_played - played0 - queued) / rate

    return played
