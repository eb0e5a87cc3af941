"""Signal helpers shared by the audio tests: make a tone, then measure what came back.

All PCM here is mono signed 16-bit little-endian bytes, the plugin's output format.  The
measurements are deliberately codec-agnostic: pitch from the spectrum of the non-silent part,
and duration from the first to the last sample above a threshold, so a codec's leading delay
or trailing padding shows up as an offset, not as a wrong duration.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

__all__ = [
    "active_span",
    "duration",
    "estimate_pitch",
    "median_pitch",
    "pitch_track",
    "rms",
    "s16_array",
    "sine_s16",
    "time_limit",
]

FULL_SCALE = 32768.0


def sine_s16(freq: float, seconds: float, rate: int, amp: float = 0.5) -> bytes:
    """``seconds`` of a sine at ``freq`` Hz and ``amp`` of full scale, starting at phase 0."""
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float64) / rate
    samples = np.rint(amp * 32767.0 * np.sin(2.0 * math.pi * freq * t))
    return samples.astype("<i2").tobytes()


def s16_array(pcm_bytes: bytes) -> npt.NDArray[np.int16]:
    """The samples of s16le bytes (a trailing odd byte is ignored)."""
    return np.frombuffer(pcm_bytes, dtype="<i2", count=len(pcm_bytes) // 2)


def duration(pcm_bytes: bytes, rate: int) -> float:
    """Total length in seconds, silence included."""
    return len(pcm_bytes) // 2 / rate


def active_span(pcm_bytes: bytes, rate: int, threshold: float = 0.02) -> tuple[float, float]:
    """(start, end) in seconds of the part louder than ``threshold`` of full scale.

    ``start`` is the first sample above the threshold, ``end`` is just past the last one, so
    ``end - start`` of an undamaged 1 s tone is 1 s give or take a sample.  (0.0, 0.0) when
    nothing is above the threshold.
    """
    x = np.abs(s16_array(pcm_bytes).astype(np.int32))
    loud = np.flatnonzero(x > threshold * FULL_SCALE)
    if loud.size == 0:
        return (0.0, 0.0)
    return (float(loud[0]) / rate, float(loud[-1] + 1) / rate)


def estimate_pitch(pcm_bytes: bytes, rate: int) -> float:
    """Dominant frequency in Hz of the non-silent part.

    Hann-windowed, zero-padded FFT, then a parabola through the log magnitudes around the peak:
    accurate to well under 0.1 Hz for a clean tone of a fraction of a second, far tighter than
    the 1 % the tests allow, and immune to a codec's leading delay because silence is cut off.
    """
    start, end = active_span(pcm_bytes, rate)
    x = s16_array(pcm_bytes)[round(start * rate) : round(end * rate)].astype(np.float64)
    if x.size < 16:
        raise ValueError("not enough non-silent audio to estimate a pitch")
    x = (x - x.mean()) * np.hanning(x.size)
    n_fft = 1 << (4 * x.size - 1).bit_length()
    spectrum = np.abs(np.fft.rfft(x, n_fft))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if 0 < k < spectrum.size - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2.0 * b + c
        offset = 0.5 * (a - c) / denom if denom != 0 else 0.0
    else:
        offset = 0.0
    return float((k + offset) * rate / n_fft)


def rms(x: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


def pitch_track(x: npt.NDArray[Any], rate: int) -> npt.NDArray[np.float64]:
    """Autocorrelation pitch of the loud 40 ms frames, 60-400 Hz (speech, not tones)."""
    x = x.astype(np.float64)
    size, hop = int(0.04 * rate), int(0.02 * rate)
    lo, hi = int(rate / 400), int(rate / 60)
    out = []
    for i in range(0, len(x) - size, hop):
        frame = x[i : i + size]
        if rms(frame) < 500:
            continue
        frame = frame - frame.mean()
        ac = np.correlate(frame, frame, "full")[size - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            out.append(rate / lag)
    return np.array(out)


def median_pitch(pcm_bytes: bytes, rate: int) -> float:
    """Median voice pitch in Hz of s16le speech (a female voice sits at ~165-255 Hz)."""
    return float(np.median(pitch_track(s16_array(pcm_bytes), rate)))


F = TypeVar("F", bound=Callable[..., Any])


def time_limit(seconds: float = 2.0) -> Callable[[F], F]:
    """Fail a (sync) test that runs longer than ``seconds`` instead of hanging the suite.

    The body runs in a daemon thread; on timeout the thread is abandoned and the test fails
    with a clear message.  Works on top of ``pytest.mark.parametrize`` and hypothesis.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> None:
            outcome: list[BaseException | None] = []

            def run() -> None:
                try:
                    fn(*args, **kwargs)
                except BaseException as exc:  # re-raised on the test's thread
                    outcome.append(exc)
                else:
                    outcome.append(None)

            worker = threading.Thread(target=run, name=f"time_limit:{fn.__name__}", daemon=True)
            worker.start()
            worker.join(seconds)
            if worker.is_alive():
                pytest.fail(f"{fn.__name__} did not finish within {seconds:g} s", pytrace=False)
            if outcome and outcome[0] is not None:
                raise outcome[0]

        return wrapper  # type: ignore[return-value]

    return decorate
