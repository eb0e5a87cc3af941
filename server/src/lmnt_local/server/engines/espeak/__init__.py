"""The offline speech engine: espeak-ng driven through ``ctypes``.

espeak-ng is the one engine that installs from PyPI alone (the ``espeakng-loader`` wheel carries
the library and its data), needs no model download, speaks ~100 languages and runs about 1000x
faster than real time. Its sound is robotic, but it is real speech with real word timings, which
is what a local stand-in for LMNT needs.

The library has process-wide state and is not re-entrant (two threads synthesizing at once crash
the process), so this package owns exactly one initialisation, one lock and one worker thread.
Every ``synthesize()`` call becomes an ``_Utterance`` that the worker speaks one sentence at a
time; sentences of concurrent calls interleave in FIFO order, so one long text cannot hold the
first sentence of another session hostage. The synth callback runs on the worker thread while
espeak is inside ``espeak_Synth``; it resamples what it gets and hands finished chunks to the
caller's event loop with ``call_soon_threadsafe``, so audio streams out while the rest of the
text is still being spoken.

Its parts: :mod:`.library` (libespeak-ng, its lock and worker thread), :mod:`.utterance`
(one call: word timings, pacing, chunks) and :mod:`.engine` (LMNT's voices and languages).

The bundled espeak-ng is GPL-3.0-or-later, which is why it is the optional ``[local]`` extra.
"""

from __future__ import annotations

from lmnt_local.server.engines.espeak.engine import LANGUAGE_VOICES, VOICE_VARIANTS, EspeakEngine
from lmnt_local.server.engines.espeak.library import _LOCK as _LOCK
from lmnt_local.server.engines.espeak.library import _locate_library as _locate_library
from lmnt_local.server.engines.espeak.utterance import _Utterance as _Utterance
from lmnt_local.server.text.segment import split_sentences

__all__ = ["LANGUAGE_VOICES", "VOICE_VARIANTS", "EspeakEngine", "split_sentences"]
