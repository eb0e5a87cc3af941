"""Who awaits ``synthesize()``: what a failure before audio should do for that caller.

``FallbackTTS`` retries on a raise, the agent's ``SpeechGeneration`` must never be left waiting,
and anyone else is told by a raise; kept apart from the adapter as the one place that reads the
framework's call stack.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

_Caller = Literal["fallback", "agent", "direct"]
# What the items of the text stream are (see ``feed.TextFeed``).
TextShape = Literal["sentences", "tokens", "pieces"]


def _caller_of(tts: Any, frame: Any) -> tuple[_Caller, Any]:
    """Who awaits ``synthesize()``, which decides what a failure before audio should do; and the
    framework's ``SpeechGeneration`` running the turn, if one does.

    * ``"fallback"``: the framework's ``FallbackTTS``, with another provider to hand the turn
      to: raising is how it retries the same turn (and it reports the error itself).
    * ``"agent"``: the framework's ``SpeechGeneration`` with no fallback able to act (directly,
      or through a ``FallbackTTS`` whose other providers are used up): a raise would leave the
      agent stuck in THINKING (or make ``session.start()`` fail for a greeting), so the failure
      is emitted and the turn returns; the agent goes back to IDLE and keeps listening.
    * ``"direct"``: anything else (user code, ``stream_synthesize``, ``TTSAudioCache``): emit
      and raise, so the caller learns of it.

    The caller is the frame awaiting this coroutine, read once when the call starts.
    """
    owner = _self_of(frame)
    providers = getattr(owner, "providers", None)
    if isinstance(providers, list) and tts in providers and hasattr(owner, "_switch_provider"):
        speech = _self_of(frame.f_back)
        speech = speech if type(speech).__name__ == "SpeechGeneration" else None
        index = getattr(owner, "_current_index", None)
        if isinstance(index, int) and index < len(providers) - 1:
            return "fallback", speech
        return ("agent" if speech is not None else "direct"), speech
    if type(owner).__name__ == "SpeechGeneration":
        return "agent", owner
    return "direct", None


def _self_of(frame: Any) -> Any:
    return frame.f_locals.get("self") if frame is not None else None


def _end_first_audio_wait(speech: Any, callback: Any) -> None:
    """After a failure with text read and no audio, ``SpeechGeneration`` would wait 10 s for a
    first audio byte before ending the turn.  Its wait is ended without faking audio when its
    event is there; otherwise the first-audio callback is invoked (marks the agent SPEAKING
    for an instant) so the agent returns to IDLE at once."""
    event = getattr(speech, "_first_byte_event", None)
    if isinstance(event, asyncio.Event):
        event.set()
    elif callback is not None:
        task = asyncio.get_running_loop().create_task(callback())
        _CALLBACKS.add(task)
        task.add_done_callback(_CALLBACKS.discard)


_CALLBACKS: set[asyncio.Task[Any]] = set()


def text_shape(speech: Any, text: object) -> TextShape:
    """What the items of ``text`` are, as the caller hands them.

    * ``"sentences"``: the framework's sentence chunker's output (the default ``Pipeline``):
      whole sentences with the whitespace between them stripped.
    * ``"tokens"``: the LLM's own deltas, the ``Pipeline`` built with ``text_chunking=False``:
      already spaced as written, so they must reach the server verbatim ("5," + "000").  The
      server is then the chunker, and it starts a sentence the moment it is complete instead
      of when the framework's chunker sees the LLM's next token.
    * ``"pieces"``: anyone else's iterator (or a str): stripped sentences or tokens, unknown.
    """
    if speech is None or isinstance(text, str):
        return "pieces"
    session = getattr(getattr(speech, "agent", None), "session", None)
    pipeline = getattr(session, "pipeline", None)
    if pipeline is not None and hasattr(pipeline, "chunker") and pipeline.chunker is None:
        return "tokens"
    return "sentences"
