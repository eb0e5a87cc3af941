"""``allocate``: how a neural engine shares out frames for a ``speed`` (exact total, the
model's own choice at speed 1, at least a frame per phoneme while the total allows)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lmnt_local.server.engines.durations import allocate

raw_durations = st.lists(st.floats(0.0, 30.0), min_size=1, max_size=60)
speeds = st.floats(0.25, 2.0)


@settings(max_examples=200, deadline=None)
@given(raw_durations, speeds)
def test_the_total_is_the_speed_one_total_divided_by_speed(raw: list[float], speed: float) -> None:
    weights = np.array(raw)
    natural = np.maximum(1, np.round(weights)).astype(np.int64)
    frames = allocate(weights, natural, speed)
    assert int(frames.sum()) == round(natural.sum() / speed)
    assert frames.min() >= (1 if round(natural.sum() / speed) >= natural.size else 0)


@given(raw_durations)
def test_speed_one_keeps_the_models_own_durations(raw: list[float]) -> None:
    natural = np.maximum(1, np.round(np.array(raw))).astype(np.int64)
    assert np.array_equal(allocate(np.array(raw), natural, 1.0), natural)


def test_longer_phonemes_keep_more_frames_and_masked_ids_stay_silent() -> None:
    raw = np.array([0.5, 8.0, 2.0, 0.0, 12.0])
    natural = np.array([1, 8, 2, 0, 12])
    fast = allocate(raw, natural, 2.0)
    assert fast.sum() == 12 and fast[3] == 0
    assert fast[4] > fast[1] > fast[2] >= fast[0] >= 1
    slow = allocate(raw, natural, 0.25)
    assert slow.sum() == 92 and slow[3] == 0 and slow[4] > slow[1]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.just(0.0), st.floats(0.0, 5.0)), min_size=1, max_size=60), speeds)
def test_piper_style_zero_durations_stay_zero(raw: list[float], speed: float) -> None:
    """Piper's masked ids have a raw duration of 0 and ``ceil`` keeps them at 0 frames."""
    weights = np.array(raw)
    natural = np.ceil(weights).astype(np.int64)
    frames = allocate(weights, natural, speed)
    assert int(frames.sum()) == round(natural.sum() / speed)
    assert not frames[natural == 0].any()
