"""What a WebSocket session does with each client message before any synthesis: buffer its text
and count its rate, each at a cost that does not grow with what came before.

The unflushed text of a session may reach ``max_text_chars`` (100,000) in thousands of small
messages; concatenating and rescanning it on every message made each one cost O(buffer), and
four such sessions kept the event loop busy enough to starve health checks.  The buffer here
keeps its pieces in a list and looks for a sentence end only in the new text plus a short tail
of the old (a sentence end is decided by the characters around its mark), so a message costs
O(its own text).  Where the sentence rule lives is unchanged
(:func:`..protocol.split_complete_sentences`).

The message rate counts messages per second of *arrival*.  The server only sees a message when
its event loop gets round to reading it, so after the loop was late (a slow engine call, a
burst of other sessions) every message queued meanwhile is read at once; counted at reading
time they looked like a burst and the session was cut.  :class:`LoopLag` measures how late the
loop has recently been, and :class:`MessageRate` widens its one-second window by that much.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from lmnt_local.protocol import split_complete_sentences

__all__ = ["FirstMessage", "LoopLag", "MessageRate", "TextBuffer"]

#: Characters of already-buffered text rescanned with each new piece.  Whether a sentence ends
#: is decided by a few characters around its mark (closers, whitespace, the abbreviation or
#: number before it, an open tag): far fewer than this.
_CONTEXT = 256


class TextBuffer:
    """Unflushed text; :meth:`append` returns the sentences the new text completed."""

    __slots__ = ("_blank", "_pieces", "_size", "_tail")

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self._size = 0
        self._tail = ""  # the last _CONTEXT characters of the buffer
        self._blank = True  # whitespace only (or empty)

    def __len__(self) -> int:
        return self._size

    @property
    def blank(self) -> bool:
        """No text to speak: empty or whitespace only (O(1))."""
        return self._blank

    def append(self, text: str) -> list[str]:
        """Add ``text``; return the complete sentences now ready (exact slices, in order)."""
        if not text:
            return []
        window = self._tail + text
        sentences, rest = split_complete_sentences(window, keep_whitespace=True)
        if not sentences:
            self._pieces.append(text)
            self._size += len(text)
            self._tail = window[-_CONTEXT:]
            self._blank = self._blank and not text.strip()
            return []
        # The first sentence also holds everything before the window.
        head_len = self._size - len(self._tail)
        if head_len > 0:
            head = "".join(self._pieces)[:head_len]
            sentences[0] = head + sentences[0]
        self._pieces = [rest] if rest else []
        self._size = len(rest)
        self._tail = rest[-_CONTEXT:]
        self._blank = not rest.strip()
        return sentences

    def take(self) -> str:
        """All the buffered text, leaving the buffer empty."""
        text = "".join(self._pieces)
        self.clear()
        return text

    def clear(self) -> None:
        self._pieces = []
        self._size = 0
        self._tail = ""
        self._blank = True


class LoopLag:
    """How late the event loop has been lately (seconds), sampled by a light ticker task."""

    def __init__(self, interval: float = 0.1, memory: float = 5.0) -> None:
        self._interval = interval
        self._memory = memory
        self._samples: deque[tuple[float, float]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._due = 0.0  # when the ticker should run next: a late loop is late past it now

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._tick(), name="local-server-loop-lag"
            )

    def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def _tick(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self._due = expected = time.monotonic() + self._interval
                await asyncio.sleep(self._interval)
                now = time.monotonic()
                late = now - expected
                if late > self._interval:
                    self._samples.append((now, late))
                while self._samples and self._samples[0][0] < now - self._memory:
                    self._samples.popleft()

    def recent(self) -> float:
        """The longest lateness seen in the last ``memory`` seconds, or the current one.

        The current one counts because messages queued during a stall are read before the
        ticker gets its turn (a read from a non-empty queue does not yield to the loop).
        """
        now = time.monotonic()
        worst = max((late for at, late in self._samples if at >= now - self._memory), default=0)
        current = now - self._due if self._task is not None and self._due else 0.0
        return min(self._memory, max(0.0, worst, current))


class MessageRate:
    """At most ``per_second`` messages per second, over a window widened by the loop's lag."""

    __slots__ = ("_arrivals", "_lag", "_per_second")

    def __init__(self, per_second: int, lag: LoopLag | None = None) -> None:
        self._per_second = per_second
        self._lag = lag
        self._arrivals: deque[float] = deque()

    def admit(self) -> bool:
        """Count one message; False when the client is over the rate."""
        now = time.monotonic()
        window = 1.0 + (self._lag.recent() if self._lag is not None else 0.0)
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals and arrivals[0] <= now - window:
            arrivals.popleft()
        return len(arrivals) <= self._per_second * window


class FirstMessage:
    """Watches the raw bytes of a WebSocket connection until its first message is complete.

    Before the init frame (and its key) a client can make aiohttp's reader buffer a partial
    message of up to 16 times ``max_frame_bytes``; 200 such connections held over 100 MB.  An
    init frame is never bigger than ``max_frame_bytes`` (the session refuses it otherwise), so
    the guard lets the first message be at most ``limit`` bytes, frame headers included:
    :meth:`feed` says ``"over"`` as soon as a frame header announces more (nothing of it is
    buffered), ``"done"`` once the first message is complete (the watch ends: frames a client
    pipelines after its init are the session's business), else ``"more"``.
    """

    __slots__ = ("_fin", "_head", "_limit", "_seen", "_skip")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen = 0  # bytes of the first message so far (headers and payloads)
        self._skip = 0  # payload bytes of the current frame still to come
        self._head = bytearray()  # a frame header being read
        self._fin = False  # the frame being read ends its message

    def feed(self, data: bytes) -> str:
        at = 0
        while at < len(data):
            if self._skip:
                step = min(self._skip, len(data) - at)
                self._skip -= step
                at += step
                if not self._skip and self._fin:
                    return "done"
                continue
            self._head.append(data[at])
            at += 1
            size = self._frame_size()
            if size is None:
                continue  # the header is not complete yet
            self._seen += len(self._head) + size
            if self._seen > self._limit:
                return "over"
            self._fin = bool(self._head[0] & 0x80)
            self._head.clear()
            self._skip = size
            if not size and self._fin:
                return "done"
        return "more"

    def _frame_size(self) -> int | None:
        """The payload size once the header in ``_head`` is complete (mask key included)."""
        head = self._head
        if len(head) < 2:
            return None
        mask = 4 if head[1] & 0x80 else 0
        short = head[1] & 0x7F
        extra = {126: 2, 127: 8}.get(short, 0)
        if len(head) < 2 + extra + mask:
            return None
        if extra:
            return int.from_bytes(head[2 : 2 + extra], "big")
        return short
