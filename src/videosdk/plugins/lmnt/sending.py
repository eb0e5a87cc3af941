"""How a turn's text goes on the wire: coalesced, bounded, paced, and within a session budget.

The framework streams a reply as one item per sentence (or per token), and a long ``say()`` or
a book read aloud is hundreds of items at once.  Sending each as its own message trips any
server that limits messages per second (the local server allows 200; LMNT documented no limit
but had a ``rate_limit_error``), and one huge item trips a frame-size limit.  So:

* items queued at the moment of sending are **coalesced** into one message of at most
  ``MAX_MESSAGE_CHARS`` (an item alone bigger than that is cut after a sentence end or a space:
  LMNT accepts text split anywhere, and the server buffers it until a sentence is complete);
* messages are **paced** by a token bucket per connection, ``MESSAGE_BURST`` at once and
  ``MESSAGES_PER_SECOND`` after that, far under any limit seen, and while the sender waits
  for a token more items arrive and are coalesced, so a burst becomes a few large messages;
* a session carries at most ``SESSION_TEXT_BUDGET`` characters (the local server refuses more
  than 100 000 per session): a longer turn ends the session with ``eof``/``finish`` at a message
  boundary and goes on in a new one, which the turn does (see ``Turn.run``).

None of this delays the first message of a turn: the bucket starts full.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence

__all__ = [
    "MAX_MESSAGE_CHARS",
    "MESSAGES_PER_SECOND",
    "MESSAGE_BURST",
    "SESSION_TEXT_BUDGET",
    "SendPacer",
    "TextCursor",
]

#: Characters per text message.  JSON of 2 000 characters is at most ~12 KB even when every
#: character needs escaping, far under the local server's 64 KiB frame limit.
MAX_MESSAGE_CHARS = 2000
#: Sustained messages per second per connection (the local server allows 200).
MESSAGES_PER_SECOND = 50.0
#: Messages that may go out at once before pacing starts (so a normal turn is never delayed).
MESSAGE_BURST = 10
#: Characters one WebSocket session is given before the turn moves to a fresh session; below
#: the local server's 100 000 so that a message of up to ``MAX_MESSAGE_CHARS`` always fits.
SESSION_TEXT_BUDGET = 90_000

# Where a sentence ends inside a long item: the cut goes after the space that follows it.
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002][\"')\]\u00bb\u201d]*\s")


class SendPacer:
    """A token bucket: ``burst`` messages at once, then ``rate`` a second.

    Any one-second window holds at most ``burst + rate`` messages, which is what a server's
    sliding-window limit sees.
    """

    def __init__(self, rate: float = MESSAGES_PER_SECOND, burst: int = MESSAGE_BURST) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("SendPacer: rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self) -> None:
        """Wait until one more message may be sent, and count it."""
        for _ in range(1000):  # bounded: each pass waits for the missing fraction of a token
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return
            await asyncio.sleep((1.0 - self._tokens) / self.rate)
        self._tokens = 0.0  # unreachable in practice (a clock that never moves)


def _cut(text: str, limit: int) -> int:
    """Where to cut ``text`` so the first part has at most ``limit`` characters: after the last
    sentence end, else after the last space, else hard (a space-less run)."""
    window = text[: limit + 1]  # a space right after the limit still ends a sentence inside it
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() <= limit]
    if ends and ends[-1] > limit // 2:
        return ends[-1]
    space = max(window.rfind(" ", 0, limit), window.rfind("\n", 0, limit))
    return space + 1 if space > 0 else limit


class TextCursor:
    """Reads a live list of feed items (text, or a flush marker) as messages to send.

    ``position`` is (item index, offset into that item): a turn that moves to a new session
    resumes exactly where the previous one stopped, and can put back a message it took but
    did not send.
    """

    def __init__(
        self, items: Sequence[object], flush: object, position: tuple[int, int] = (0, 0)
    ) -> None:
        self._items = items
        self._flush = flush
        self.index, self.offset = position

    @property
    def position(self) -> tuple[int, int]:
        return self.index, self.offset

    @position.setter
    def position(self, value: tuple[int, int]) -> None:
        self.index, self.offset = value

    def pending(self) -> bool:
        return self.index < len(self._items)

    def take(self, max_chars: int = MAX_MESSAGE_CHARS) -> object:
        """The flush marker, or the text of the next message (``""`` if nothing is queued).

        Consecutive text items are joined while they fit; an item is only cut when it alone
        exceeds ``max_chars``, so messages end where the caller's items (sentences) end.
        """
        if not self.pending():
            return ""
        if self._items[self.index] is self._flush:
            self.index += 1
            return self._flush
        parts: list[str] = []
        size = 0
        while self.pending():
            item = self._items[self.index]
            if not isinstance(item, str):
                break
            rest = item[self.offset :]
            if size + len(rest) <= max_chars:
                parts.append(rest)
                size += len(rest)
                self.index, self.offset = self.index + 1, 0
                continue
            if not parts:  # one item longer than a message: cut it
                cut = _cut(rest, max_chars)
                parts.append(rest[:cut])
                self.offset += cut
            break
        return "".join(parts)
