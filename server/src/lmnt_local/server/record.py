"""What the server saw and did on one WebSocket connection, for tests to assert on."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["SessionRecord"]


@dataclass(eq=False)
class SessionRecord:
    """One WebSocket connection, filled in while it runs; ``done`` is set when it has ended.

    ``init`` is the init frame as received, with the ``X-API-Key`` value masked as ``"***"``
    (None when the first frame was not a JSON object).  ``close_code`` is the code the server
    closed with, or the client's when the client closed first; 1006 when the TCP connection
    ended without a close frame (a drop fault, or a client that vanished).
    """

    request_id: str
    init: dict[str, Any] | None = None
    version: str | None = None
    texts: list[str] = field(default_factory=list)
    texts_truncated: bool = False
    commands: list[str] = field(default_factory=list)
    audio_bytes_sent: int = 0
    frames_sent: int = 0
    close_code: int | None = None
    closed_by: Literal["server", "client"] | None = None
    client_closed_early: bool = False
    error: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    ended_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _kept: int = field(default=0, repr=False)  # characters in ``texts``

    @property
    def text(self) -> str:
        """All text the client sent, concatenated."""
        return "".join(self.texts)

    def note_text(self, text: str, limit: int) -> None:
        """Keep ``text`` while the record holds fewer than ``limit`` characters."""
        if self.texts_truncated:  # full already: O(1), however many messages follow
            return
        room = limit - self._kept
        if len(text) <= room:
            self.texts.append(text)
            self._kept += len(text)
        else:
            if room > 0:
                self.texts.append(text[:room])
            self._kept = limit
            self.texts_truncated = True

    def closed(self, by: Literal["server", "client"], code: int | None) -> None:
        """Note who ended the connection; only the first call counts."""
        if self.closed_by is None:
            self.closed_by = by
            self.close_code = code
