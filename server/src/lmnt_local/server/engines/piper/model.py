"""One Piper voice in memory: its ONNX model cut at the phoneme durations, and one piece rendered.

Apart from the engine because this is the numeric part (phonemes to ids, model runs, durations
shared out at ``speed``, loudness, word times), which runs on the inference pool's threads while
the engine only picks the voice and streams the pieces.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime
import soxr
from piper import PiperVoice
from piper.config import PiperConfig
from piper.const import BOS, EOS, PAD

from lmnt_local.server.engines.base import WordTiming
from lmnt_local.server.engines.durations import SplitSession, allocate, split_model
from lmnt_local.server.engines.piper.voices import PiperVoiceFile
from lmnt_local.server.engines.pool import Rendered
from lmnt_local.server.text.segment import phoneme_owners, word_spans, word_times

log = logging.getLogger("lmnt_local.server")


class _Loaded:
    """A voice in memory: the model cut at its durations
    (:mod:`lmnt_local.server.engines.durations`), shared by every pool thread; a model whose
    graph is not the expected VITS one runs whole."""

    def __init__(self, file: PiperVoiceFile) -> None:
        config_dict = json.loads(file.config.read_text(encoding="utf-8"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # concurrency comes from the pool, one run per core
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.split: SplitSession | None = None
        model: str | bytes = str(file.model)
        try:
            import onnx

            graph = onnx.load(str(file.model))
            raw, durations = _duration_tensors(graph)
            self.split = SplitSession(split_model(graph, raw=raw, durations=durations), options)
        except ImportError:
            log.warning("onnx is not installed: word timings are estimated, speed approximate")
        except ValueError as exc:
            log.warning("Piper voice %s runs whole (%s): speed is approximate", file.id, exc)
        if self.split is not None:
            session = self.split.encoder  # PiperVoice's own runs are never used then
        else:
            session = onnxruntime.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        self.voice = PiperVoice(session=session, config=PiperConfig.from_dict(config_dict))
        self.config = self.voice.config
        self.rate = self.config.sample_rate

    def render(
        self,
        text: str,
        speed: float,
        seed: int | None,
        rate: int,
        speaker: int | None = None,
        gain: float | None = None,
    ) -> Rendered:
        """One piece: phonemes in context, one model run per phonemizer sentence, word times.

        Loudness is set per utterance, not per piece: the first piece of a call is scaled to
        full scale at its peak, and ``gain`` (the first piece's) carries on to the rest, so a
        sentence cut after its first phrase has no level jump made by normalisation (per-piece
        peak normalisation made one of 2-3 dB).  A later piece louder than the first is only
        limited at its peaks (not scaled down as a whole), so its loudness stays."""
        voice, cfg = self.voice, self.config
        spans = word_spans(text)
        sentences = [s for s in voice.phonemize(text) if s]
        words_alone = [
            [p for sentence in voice.phonemize(text[a:b]) for p in sentence] for a, b in spans
        ]
        spoken = [p for sentence in sentences for p in sentence]
        owners = phoneme_owners(spoken, words_alone)
        noise = (0.0, 0.0) if seed is not None else (cfg.noise_scale, cfg.noise_w_scale)
        audio: list[npt.NDArray[np.float32]] = []
        bounds: list[tuple[int, int]] = []  # per spoken phoneme: (start, end) native samples
        total = 0
        for phonemes in sentences:
            ids, segments = self._ids(phonemes)
            wave, per_id = self._run(ids, noise, speed, speaker)
            edges = np.concatenate(([0], np.cumsum(per_id)))
            if edges[-1] != wave.size:  # alignment missing: spread time evenly
                edges = np.linspace(0, wave.size, len(ids) + 1).astype(np.int64)
            position = 0
            for count in segments:
                bounds.append((total + int(edges[position]), total + int(edges[position + count])))
                position += count
            audio.append(wave)
            total += wave.size
        # bounds holds BOS and EOS segments per sentence; keep the phonemes' own.
        phoneme_bounds = _strip_markers(bounds, [len(s) for s in sentences])
        native = np.concatenate(audio) if audio else np.zeros(0, dtype=np.float32)
        peak = float(np.max(np.abs(native))) if native.size else 0.0
        used = (1.0 / peak if peak > 1e-8 else 0.0) if gain is None else gain
        native = _soft_limit(native * used)
        pcm16 = np.clip(native * 32767.0, -32767, 32767).astype(np.int16)
        if rate != self.rate and pcm16.size:
            pcm16 = np.asarray(soxr.resample(pcm16, self.rate, rate, quality="HQ"), dtype=np.int16)
        seconds = pcm16.size / rate
        in_seconds = [(a / self.rate, b / self.rate) for a, b in phoneme_bounds]
        times = word_times(spans, spoken, owners, in_seconds, seconds)
        words = [WordTiming(text[a:b], s, d) for (a, b), (s, d) in zip(spans, times, strict=True)]
        return Rendered(pcm16, words, used if gain is None and used > 0 else gain)

    def _ids(self, phonemes: list[str]) -> tuple[list[int], list[int]]:
        """Phoneme ids as piper builds them, and how many ids each of BOS, phonemes, EOS got."""
        id_map = self.config.phoneme_id_map
        pad = list(id_map.get(PAD, []))
        ids: list[int] = [*id_map[BOS], *pad]
        segments = [len(ids)]
        for phoneme in phonemes:
            mapped = list(id_map.get(phoneme, []))
            part = [*mapped, *pad] if mapped else []
            ids.extend(part)
            segments.append(len(part))
        ids.extend(id_map[EOS])
        segments.append(len(id_map[EOS]))
        return ids, segments

    def _run(
        self, ids: list[int], noise: tuple[float, float], speed: float, speaker: int | None
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """(audio, samples per id).  Split: the durations are the voice's own at speed 1,
        shared out to last exactly ``1 / speed`` as long.  Whole: ``speed`` divides the length
        scale, which the model's rounding to whole frames blunts."""
        length_scale = self.config.length_scale
        args: dict[str, Any] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([noise[0], length_scale, noise[1]], dtype=np.float32),
        }
        if self.config.num_speakers > 1:
            sid = speaker if speaker is not None else (self.config.default_speaker_id or 0)
            args["sid"] = np.array([sid], dtype=np.int64)
        hop = self.config.hop_length
        if self.split is not None:

            def durations(raw: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
                natural = np.ceil(raw * length_scale).astype(np.int64)
                return allocate(raw, natural, speed)

            result, frames = self.split.run(args, durations)
            wave = np.asarray(result[0], dtype=np.float32).reshape(-1)
            return wave, frames * hop
        args["scales"][1] = length_scale / speed
        result = self.voice.session.run(None, args)
        wave = np.asarray(result[0], dtype=np.float32).reshape(-1)
        return wave, np.zeros(0, dtype=np.int64)


_KNEE = 0.9


def _soft_limit(wave: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Peaks above the knee bend smoothly towards full scale instead of clipping."""
    over = np.abs(wave) > _KNEE
    if not over.any():
        return wave
    out = wave.copy()
    excess = (np.abs(wave[over]) - _KNEE) / (1.0 - _KNEE)
    out[over] = np.sign(wave[over]) * (_KNEE + (1.0 - _KNEE) * np.tanh(excess))
    return out


def _duration_tensors(graph: Any) -> tuple[str, str]:
    """(raw durations, rounded durations) of a Piper VITS graph: the one ``Ceil`` (whole
    frames) of ``Mul(w, length_scale)``, and ``w``."""
    producer = {out: node for node in graph.graph.node for out in node.output}
    ceils = [node for node in graph.graph.node if node.op_type == "Ceil"]
    if len(ceils) != 1:
        raise ValueError(f"{len(ceils)} Ceil nodes, expected 1")
    scaled = producer.get(ceils[0].input[0])
    if scaled is None or scaled.op_type != "Mul":
        raise ValueError("the durations are not a product with the length scale")
    return scaled.input[0], ceils[0].output[0]


def _strip_markers(bounds: list[tuple[int, int]], lengths: list[int]) -> list[tuple[int, int]]:
    kept: list[tuple[int, int]] = []
    position = 0
    for length in lengths:
        kept.extend(bounds[position + 1 : position + 1 + length])
        position += length + 2
    return kept
