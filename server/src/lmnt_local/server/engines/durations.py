"""Neural models cut in two at their phoneme durations, so the engine decides how long each
phoneme lasts.

Both neural engines (Piper's VITS, hibari) predict a duration per phoneme, round it to whole
frames with a floor of one frame, and expand the phonemes to that many frames.  Passing
``speed`` into the model only divides the prediction before the rounding, so short phonemes
stay at their floor and the audio does not shorten as asked (Piper's ``speed`` 2.0 came out
1.65x faster).  Cut at the rounded-durations tensor, the model becomes an *encoder* (text to
raw durations and the features the decoder needs) and a *decoder* (features and whole-frame
durations to sound); between the two, :func:`allocate` shares exactly ``natural / speed``
frames among the phonemes in proportion to their raw durations.  The durations are then known
exactly, which also gives every word its time, and the two halves cost what the whole did.

The cut is made on the loaded graph in memory (:func:`split_model`); the files on disk are
never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Encoded", "SplitModel", "SplitSession", "allocate", "split_model"]


@dataclass(frozen=True, slots=True)
class SplitModel:
    """The two halves as serialized ONNX, and the tensor names that join them."""

    encoder: bytes
    decoder: bytes
    #: Encoder outputs fed to the decoder under the same names.
    features: tuple[str, ...]
    #: The encoder output holding the raw (unrounded, speed 1) duration of each phoneme id.
    raw: str
    #: The decoder input taking the whole-frame duration of each phoneme id.
    durations: str
    #: Graph inputs the decoder reads directly (e.g. Piper's noise ``scales``).
    decoder_inputs: tuple[str, ...]


def split_model(model: Any, *, raw: str, durations: str) -> SplitModel:
    """Cut an ``onnx.ModelProto`` at ``durations`` (the rounded tensor); ``raw`` is the
    unrounded tensor upstream of it, before any speed or length scale is applied."""
    from onnx.utils import Extractor

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    if durations not in producer or raw not in producer:
        raise ValueError(f"model has no tensor {durations!r} or {raw!r}: not the expected graph")
    # Nodes downstream of the durations: the decoder.
    downstream: set[int] = set()
    stack = [durations]
    while stack:
        for node in consumers.get(stack.pop(), []):
            if id(node) not in downstream:
                downstream.add(id(node))
                stack.extend(node.output)
    initializers = {init.name for init in graph.initializer}
    graph_inputs = {value.name for value in graph.input}
    features: set[str] = set()
    direct: set[str] = set()
    for node in graph.node:
        if id(node) not in downstream:
            continue
        for name in node.input:
            if not name or name == durations or name in initializers:
                continue
            if name in graph_inputs:
                direct.add(name)
                continue
            source = producer.get(name)
            if source is not None and id(source) not in downstream:
                if source.op_type != "Constant":
                    features.add(name)
    extractor = Extractor(model)
    outputs = [value.name for value in graph.output]
    encoder = extractor.extract_model(
        _inputs_reaching(producer, graph_inputs, [*features, raw]), [*sorted(features), raw]
    )
    decoder = extractor.extract_model([*sorted(features), durations, *sorted(direct)], outputs)
    return SplitModel(
        encoder.SerializeToString(),
        decoder.SerializeToString(),
        tuple(sorted(features)),
        raw,
        durations,
        tuple(sorted(direct)),
    )


def _inputs_reaching(
    producer: dict[str, Any], graph_inputs: set[str], outputs: Sequence[str]
) -> list[str]:
    """The graph inputs ``outputs`` depend on (onnxruntime requires a value for every input
    a graph declares, so the encoder declares only those: hibari's ``speed`` is not one)."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in graph_inputs:
            found.add(name)
        node = producer.get(name)
        if node is not None:
            stack.extend(n for n in node.input if n)
    return sorted(found)


def allocate(
    raw: npt.NDArray[np.floating[Any]], natural: npt.NDArray[Any], speed: float
) -> npt.NDArray[np.int64]:
    """Whole-frame durations summing to ``round(sum(natural) / speed)``, shared in proportion
    to ``raw``, each at least one frame while the total allows (else proportional from zero).

    ``natural`` is what the model itself would have chosen at speed 1; at speed 1 it is
    returned unchanged, so the voice sounds exactly as its authors made it.
    """
    natural = np.asarray(natural, dtype=np.int64)
    if speed == 1.0 or natural.size == 0:
        return natural
    weights = np.maximum(np.asarray(raw, dtype=np.float64).reshape(-1), 0.0)
    active = natural > 0  # masked (zero) ids stay zero
    if not active.any():
        return natural  # nothing voiced: nothing to scale (and no share to divide by)
    total = round(float(natural.sum()) / speed)
    floor = 1.0 if total >= int(active.sum()) else 0.0
    if not (weights[active].sum() > 0):
        weights = active.astype(np.float64)
    weights = np.where(active, weights / weights[active].sum(), 0.0)
    # Water-filling: phonemes whose share falls under the floor sit at it; the rest share what
    # is left in proportion to their raw durations.  Each round can only add to the floored set.
    floored = active & False
    for _ in range(int(active.sum()) + 1):
        free = active & ~floored
        left = total - floor * int(floored.sum())
        scale = left / weights[free].sum() if free.any() and weights[free].sum() > 0 else 0.0
        under = free & (scale * weights < floor)
        if not under.any():
            break
        floored |= under
    exact = np.where(floored, floor, np.where(active, scale * weights, 0.0))
    whole = np.floor(exact).astype(np.int64)
    missing = total - int(whole.sum())
    remainder = np.where(active, exact - whole, -np.inf)
    if missing > 0 and active.any():  # the largest remainders get the frames left over
        order = np.argsort(-remainder, kind="stable")[: int(active.sum())]
        whole[order] += missing // order.size
        whole[order[: missing % order.size]] += 1
    elif missing < 0:
        order = np.argsort(np.where(active, exact - whole, np.inf), kind="stable")
        for index in order:
            if missing == 0:
                break
            if whole[index] > floor:
                whole[index] -= 1
                missing += 1
    return whole


_ORT_TYPES = {"tensor(int64)": np.int64, "tensor(float)": np.float32, "tensor(int32)": np.int32}


class SplitSession:
    """The two halves loaded in onnxruntime; :meth:`run` is safe from several threads."""

    def __init__(self, split: SplitModel, options: Any) -> None:
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        self.split = split
        self.encoder = onnxruntime.InferenceSession(split.encoder, options, providers=providers)
        self.decoder = onnxruntime.InferenceSession(split.decoder, options, providers=providers)
        self.inputs = frozenset(value.name for value in self.encoder.get_inputs())
        wanted = {v.name: v.type for v in self.decoder.get_inputs()}[split.durations]
        self._dtype = _ORT_TYPES.get(wanted, np.float32)

    def run(
        self,
        feeds: dict[str, Any],
        durations_of: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.int64]],
    ) -> tuple[list[Any], npt.NDArray[np.int64]]:
        """Encoder, then ``durations_of(raw durations, flat)``, then decoder: (outputs,
        the durations used)."""
        encoded, chosen = self.encode(feeds, durations_of)
        return self.decode(encoded, chosen), chosen

    def encode(
        self,
        feeds: dict[str, Any],
        durations_of: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.int64]],
    ) -> tuple[Encoded, npt.NDArray[np.int64]]:
        """The encoder half and the durations chosen from its raw ones: all a decoder run
        needs, so the decoder can run later, or over part of the phonemes."""
        split = self.split
        names = [*split.features, split.raw]
        encoded = self.encoder.run(names, {k: v for k, v in feeds.items() if k in self.inputs})
        values = dict(zip(names, encoded, strict=True))
        raw = np.asarray(values.pop(split.raw))
        chosen = np.asarray(durations_of(raw.reshape(-1)), dtype=np.int64)
        for name in split.decoder_inputs:
            values[name] = feeds[name]
        return Encoded(values, raw.shape), chosen

    def decode(
        self,
        encoded: Encoded,
        durations: npt.NDArray[np.int64],
        window: tuple[int, int] | None = None,
    ) -> list[Any]:
        """The decoder half over phonemes ``window`` (``[begin, end)`` of the ids; default:
        all).  A window decodes only its phonemes' frames: features with one entry per
        phoneme (their last axis) are cut to it, the rest are passed whole."""
        count = int(durations.size)
        begin, end = window if window is not None else (0, count)
        if not 0 <= begin < end <= count:
            raise ValueError(f"window {begin}-{end} is outside the {count} phonemes")
        feeds: dict[str, Any] = {}
        for name, value in encoded.values.items():
            array = np.asarray(value)
            cut = window is not None and array.ndim > 1 and array.shape[-1] == count
            feeds[name] = np.ascontiguousarray(array[..., begin:end]) if cut else value
        shape = (*encoded.shape[:-1], end - begin)
        feeds[self.split.durations] = durations[begin:end].reshape(shape).astype(self._dtype)
        outputs: list[Any] = self.decoder.run(None, feeds)
        return outputs


@dataclass(frozen=True, slots=True)
class Encoded:
    """What the encoder half made of one phoneme sequence, ready for the decoder half."""

    values: dict[str, Any]
    #: The shape of the durations tensor (its last axis: one entry per phoneme id).
    shape: tuple[int, ...]
