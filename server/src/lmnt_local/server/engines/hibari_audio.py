"""hibari's sound from its decoder's frames, and a turn's first sentence in two steps.

The model's decoder turns phonemes (with their durations) into five spectral parts and an F0
curve per 12.5 ms frame; :func:`synth` (hibari's own vocoder, :mod:`hibari.dsp`) makes the
waveform from them.  Both are local in time: the decoder's convolutions reach about 1 s
either side of a frame (six dilated kernel-7 layers and eight plain ones: 81 frames), the
vocoder two frames.  Measured at a seam 0.9 s in: with 0.4 s of decoder context the frames
next to it differed from the sentence decoded at once by up to 4.7 dB (20 ms windows), with
0.6 s and more by no more than the int8 model's own rounding (it quantizes each run's
tensors by their range, so any two runs differ a little everywhere: up to ~1.5 dB in speech).

So a long sentence need not be rendered whole before the listener hears it.  For the first
sentence of a turn (nothing queued yet: every millisecond is heard as latency) the encoder runs
over the *whole* sentence (its durations, hence its prosody and its word times, are the
sentence's own), the decoder over the first second plus 0.6 s of context and the vocoder
over the first second, which is sent; the rest is decoded afterwards and the vocoder continues the
same signal: same pulse phase, same noise, the frames before the seam unchanged, so there is
no cut to hear: no pause, no level step, no prosody reset (a text cut after the first phrase
had all three, see #22).  Its cost: the first second decoded twice, about a third more CPU for
that one sentence (``benchmarks/first_sentence_steps.py``).

Noise is drawn frame by frame (frame-major) so that a vocoder run over the first frames draws
exactly the noise a run over all of them draws there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lmnt_local.server.engines.durations import Encoded, SplitSession

__all__ = ["Seam", "plan_seam", "synth", "two_steps"]

#: Samples per vocoder frame (12.5 ms at 24 kHz) and per duration step (two frames).
FRAME = 300
STEP = 600
#: The first step's audio: about one second, then the seam at the next phoneme boundary.
FIRST_SAMPLES = 24000
#: No seam unless at least this much audio follows it (1.5 s: a shorter sentence renders
#: whole about as fast as its first step, which decodes 1 s past the seam).
MIN_REST_SAMPLES = 36000
#: Decoder context, in duration steps of 25 ms, after the seam for the first step (0.6 s) and
#: before it for the rest (1 s: the reach of the decoder's convolutions, so the rest is the
#: sentence decoded at once).  Measured over nine agent sentences (largest level difference
#: from the sentence decoded at once, 20 ms windows within 0.15 s of the seam): 0.2 s after
#: the seam 1.6-7.6 dB, 0.4 s 0.6-4.7 dB, 0.6 s 0.3-1.7 dB, 1 s 0.3-1.5 dB; the first step's
#: cost grows with it.
AFTER_STEPS = 24
BEFORE_STEPS = 40
#: Vocoder frames before the seam frame that the first step leaves to the second: both runs
#: make the same samples up to here (the inverse STFT reaches two frames either side, the
#: pulse train's interpolation one, and its end padding two more).
SAFE_FRAMES = 8


def synth(outputs: Sequence[npt.NDArray[np.float32]], rng: np.random.Generator) -> Any:
    """hibari's vocoder (:func:`hibari.dsp.synth`) with its noise drawn frame-major:
    ``outputs`` are the decoder's ``lh, th, ln, lr, phi`` (each ``[601, F]``) and ``f0``
    (``[F]``); the result is ``F * 300`` float32 samples at 24 kHz."""
    from hibari import dsp

    lh, th, ln, lr, phi, f0 = outputs
    bins, frames = lh.shape
    spec = dsp.stft(dsp.pulses(f0), frames)
    rot = np.empty(lh.shape, np.complex64)
    angle = np.tanh(th)
    angle *= np.pi
    np.cos(angle, out=rot.real)
    np.sin(angle, out=rot.imag)
    rot *= dsp.ex(lh)
    spec *= rot
    noise = rng.standard_normal((frames, 2 * bins), dtype=np.float32).view(np.complex64).T
    spec += noise * dsp.ex(ln)
    np.cos(phi, out=rot.real)
    np.sin(phi, out=rot.imag)
    rot *= dsp.ex(lr)
    spec += rot
    return dsp.ola(spec)


@dataclass(frozen=True, slots=True)
class Seam:
    """Where a sentence's audio is cut between the two steps: phoneme windows (indices into
    the ids) for the decoder, vocoder frames for the samples."""

    first_end: int  # the first step decodes ids [0, first_end): the seam plus context
    rest_begin: int  # the second step decodes ids [rest_begin, end): context before the seam
    frame: int  # the seam's vocoder frame
    rest_frame: int  # the vocoder frame where the second step's decoding starts

    @property
    def sample(self) -> int:
        """Where the first step's samples end and the second step's begin (24 kHz)."""
        return (self.frame - SAFE_FRAMES) * FRAME


def plan_seam(steps: npt.NDArray[np.int64]) -> Seam | None:
    """The seam for a sentence of these phoneme durations (in 25 ms steps), or ``None`` when
    the sentence is too short to gain from two steps."""
    edges = np.concatenate(([0], np.cumsum(steps)))
    phoneme = int(np.searchsorted(edges, FIRST_SAMPLES / STEP))  # the seam is at its start
    if phoneme >= steps.size or (int(edges[-1]) - int(edges[phoneme])) * STEP < MIN_REST_SAMPLES:
        return None
    seam = int(edges[phoneme])
    first_end = min(int(steps.size), int(np.searchsorted(edges, seam + AFTER_STEPS)))
    rest_begin = max(0, int(np.searchsorted(edges, seam - BEFORE_STEPS, side="right")) - 1)
    return Seam(first_end, rest_begin, 2 * seam, 2 * int(edges[rest_begin]))


def two_steps(
    model: SplitSession,
    encoded: Encoded,
    steps: npt.NDArray[np.int64],
    seam: Seam,
    seed: Sequence[int],
) -> tuple[npt.NDArray[np.float32], Callable[[], npt.NDArray[np.float32]]]:
    """The first step's samples now, and the function that makes the rest: together, every
    sample of the sentence once, in order, as one continuous signal."""
    head = [
        np.asarray(o[0])[..., : seam.frame]
        for o in model.decode(encoded, steps, (0, seam.first_end))
    ]
    first = synth(head, np.random.default_rng(list(seed)))[: seam.sample]

    def rest() -> npt.NDArray[np.float32]:
        outputs = model.decode(encoded, steps, (seam.rest_begin, int(steps.size)))
        tail = [np.asarray(o[0])[..., seam.frame - seam.rest_frame :] for o in outputs]
        whole = [np.concatenate((h, t), axis=-1) for h, t in zip(head, tail, strict=True)]
        return np.asarray(synth(whole, np.random.default_rng(list(seed)))[seam.sample :])

    return np.asarray(first), rest
