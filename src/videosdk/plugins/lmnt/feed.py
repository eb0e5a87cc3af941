"""The caller's text stream, read once: ``TextFeed`` and how a turn lets go of it.

The framework hands ``synthesize()`` an async iterator it owns, so text can be read only once.
``TextFeed`` reads it exactly once and remembers every item, which lets a retry on a fresh
connection resend what was already pulled; ``FeedRelease`` names the ways a turn may stop
reading it.  Kept apart from ``turn`` so the stream's rules sit in one room.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Literal

from .callers import TextShape

logger = logging.getLogger("videosdk.plugins.lmnt")


FLUSH = object()  # a flush request in the feed

# Punctuation after which the framework's sentence chunker cuts; chunks arrive stripped, so a
# space must be put back there.  The end marks of scripts written without a space after them
# (Devanagari, Arabic, Urdu, CJK) are included: the server treats the space as a separator.
_JOIN_AFTER = frozenset(
    ".!?,;:\u2026\"')]\u00bb\u201d\u2019\u0964\u0965\u061f\u06d4\u3002\uff01\uff1f"
)


def has_word(text: str) -> bool:
    """Whether ``text`` holds something to say: a letter or digit of any script."""
    return any(ch.isalnum() for ch in text)


def join_chunk(previous: str, chunk: str) -> str:
    """Put back the space the sentence chunker stripped between two sentences.

    "Sure." + "Here is" must reach the server as "Sure. Here is", while a token stream split
    mid-word ("Hel" + "lo") must stay glued: only a chunk boundary that follows punctuation and
    has no whitespace on either side gets a space.
    """
    if not previous or not chunk or previous[-1].isspace() or chunk[0].isspace():
        return chunk
    if previous[-1] == "." and chunk[0].islower():
        return chunk  # a token split after its period: "example." + "com"
    if previous[-1] in ".," and previous[-2:-1].isdigit() and chunk[0].isdigit():
        return chunk  # a number split after its separator: "$5." + "50", "1," + "000"
    if previous[-1] in _JOIN_AFTER:
        return " " + chunk
    return chunk


def end_sentence(chunk: str) -> str:
    """A chunk from the framework's sentence chunker, with the space it stripped put back
    *after* it.

    After an end mark (or other punctuation the chunker cuts after) the space belongs there;
    sending it with the sentence tells the server the sentence is complete now, rather than
    when the next one arrives (which can be a whole LLM tool call later).  Any other chunk end
    is left to :func:`join_chunk`, so a cut inside a word, or between two letters of a script
    without spaces (the chunker's idle cut in Chinese or Thai), stays glued.
    """
    if not chunk or chunk[-1].isspace():
        return chunk
    if chunk[-1] not in _JOIN_AFTER:
        # Not a sentence's end: a cut between words is joined as before (``join_chunk``), and
        # pieces of a word handed through the framework ("Hel" + "lo") stay glued.
        return chunk
    return chunk + " "


# How a turn lets go of the caller's text stream (see ``TextFeed.aclose``).
#   "cancel":  interrupt() or the caller's own cancellation: a pending read is cancelled.
#   "release": the turn raises so someone else (FallbackTTS) reads on: a pending read is allowed
#              to finish (nobody may call ``__anext__`` on a generator that is still running).
#   "detach":  the turn failed and returns to a caller that owns the stream: read no more, and
#              leave a pending read to finish on its own.
#   "drain":   the turn failed inside the framework's SpeechGeneration and nobody else will read
#              the stream: read it to its end, discarding, so the producers behind it (the LLM
#              collector and its bounded queue, the sentence chunker) are never left blocked.
FeedRelease = Literal["cancel", "release", "detach", "drain"]

_DETACHED: set[asyncio.Task[Any]] = set()  # reads left to finish after their turn returned


async def settle(task: asyncio.Task[Any]) -> None:
    """Wait for a task we stopped, whatever it ends with, without swallowing our own cancel.

    ``suppress(BaseException)`` around such an await would also eat a ``CancelledError`` meant
    for the caller (it can arrive a few loop iterations after ``interrupt()``); the caller must
    always see it.
    """
    try:
        await task
    except BaseException:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class TextFeed:
    """Reads the caller's text once, keeping every item so a retry can replay it."""

    def __init__(self, source: str | AsyncIterator[Any], *, shape: TextShape = "pieces") -> None:
        self._source = source
        self._shape = shape  # see ``callers.text_shape``
        self.items: list[object] = []  # str or FLUSH
        self.done = False
        self.has_words = False  # a letter or digit has arrived
        self._held = ""  # blanks and punctuation before the first word
        self._changed = asyncio.Event()
        self._tail = ""
        self._task: asyncio.Task[None] | None = None
        self._stop = False
        self._discard = False  # draining after a failure: what is read is dropped
        self.received = 0  # non-empty text items pulled from the caller
        self.ended = False  # the caller's stream was read to its end: nothing left for others

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pull(), name="lmnt-text")

    @property
    def started(self) -> bool:
        return self._task is not None

    def _add_text(self, text: str) -> None:
        if self._discard or not text:
            return
        if self._shape != "tokens":  # an LLM's deltas are spaced as written
            text = join_chunk(self._tail, text)
        if self._shape == "sentences":
            text = end_sentence(text)
        self._tail = text
        if not self.has_words:
            # Until a letter or digit arrives nothing is sent: a turn of only blanks or
            # punctuation ("...", "?!") is an empty turn on every engine and leaves its
            # connection unused; what came before the first word is sent with it.
            if not has_word(text):
                self._held += text
                return
            text, self._held = (self._held + text).lstrip(), ""
            self.has_words = True
        self.items.append(text)
        self._changed.set()

    async def _pull(self) -> None:
        try:
            if isinstance(self._source, str):
                self.received = 1  # (not ``ended``: a str can be handed on whole)
                self._add_text(self._source)
                return
            source = aiter(self._source)
            while not self._stop:
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    self.ended = True
                    break
                if isinstance(item, str):
                    if item:
                        self.received += 1
                    self._add_text(item)
                elif type(item).__name__ == "FlushMarker":
                    if (
                        not self._discard
                        and self.has_words
                        and (not self.items or self.items[-1] is not FLUSH)
                    ):
                        self.items.append(FLUSH)
                        self._changed.set()
                elif item is not None:
                    logger.debug("LMNT: ignoring a %s in the text stream", type(item).__name__)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("LMNT: the text stream raised; speaking what was received")
        finally:
            self.done = True
            self._changed.set()

    async def wait(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    async def aclose(self, how: FeedRelease = "cancel", abort: asyncio.Event | None = None) -> None:
        """Stop reading the caller's stream, as ``how`` says (see ``FeedRelease``).

        The stream belongs to the framework.  Cancelling a pending ``__anext__`` throws into the
        generator chain and ends it: the framework's sentence pipe then cancels its producer,
        nothing drains the orchestrator's bounded LLM queue, the LLM collector blocks on it while
        holding ``llm_lock``, and every later turn waits on that lock.  So a read is cancelled
        only when the caller cancels or interrupts; after a failure it is left to finish.
        """
        if how == "drain":
            self._discard = True
            self.items.clear()
            self.start()  # also a stream never read: nobody else will read it
        task = self._task
        if how == "drain" and task is not None and not task.done():
            _DETACHED.add(task)
            task.add_done_callback(_DETACHED.discard)
            return
        self._stop = True
        if task is None or task.done():
            return
        if how == "detach" or how == "drain":
            _DETACHED.add(task)
            task.add_done_callback(_DETACHED.discard)
            return
        try:
            if how == "release":
                waits: set[asyncio.Future[Any]] = {task}
                stop = None
                if abort is not None:  # interrupt() must not wait for the caller's next item
                    stop = asyncio.get_running_loop().create_task(abort.wait())
                    waits.add(stop)
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if stop is not None:
                        stop.cancel()
        finally:  # interrupted or cancelled meanwhile: the reader must not outlive the turn
            if not task.done():
                task.cancel()
                await settle(task)
