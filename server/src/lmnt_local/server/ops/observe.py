"""What a session reports to the rest of the server: limits to check, metrics to update.

The session calls these hooks at the few points that matter (init, text, audio, errors, end)
and stays ignorant of Prometheus and of per-key budgets; the default hooks do nothing, so a
session works the same without them.
"""

from __future__ import annotations

import time

from lmnt_local.server.ops.limits import KeyLimits
from lmnt_local.server.ops.metrics import ServerMetrics

__all__ = ["ServerHooks", "SessionHooks"]


class SessionHooks:
    """No limits, no metrics."""

    def opened(self, key: str) -> str | None:
        """The session's key is known: a refusal message when the key is at its session cap."""
        return None

    def text(self, chars: int) -> str | None:
        """Text arrived: the refusal message when the key's character budget cannot pay."""
        return None

    def queued(self, units: int) -> None:
        """Synthesis units were queued (positive) or taken by the engine (negative)."""

    def turn_end(self) -> None:
        """flush, reset or eof: the next text starts a new turn."""

    def audio(self) -> None:
        """An audio frame is ready for the wire."""

    def synthesized(self, audio_seconds: float, engine_seconds: float) -> None:
        """One unit was synthesized."""

    def error(self, kind: str) -> None:
        """The session answered an error of this type."""

    def closed(self, pending_units: int) -> None:
        """The session ended with ``pending_units`` never synthesized."""


class ServerHooks(SessionHooks):
    """Per-key limits and Prometheus metrics for one session."""

    def __init__(self, metrics: ServerMetrics, limits: KeyLimits) -> None:
        self._metrics = metrics
        self._limits = limits
        self._key: str | None = None
        self._name = ""
        self._turn_started: float | None = None
        self._in_turn = False
        metrics.active_sessions.inc()
        metrics.sessions.inc()

    def opened(self, key: str) -> str | None:
        refusal = self._limits.open_session(key)
        if refusal is None:
            self._key = key
            self._name = self._limits.name_of(key)
        return refusal

    def text(self, chars: int) -> str | None:
        if self._key is None or chars <= 0:
            return None
        refused = self._limits.take_chars(self._key, chars)
        if refused is None:
            self._metrics.characters.labels(self._name).inc(chars)
            if not self._in_turn:
                self._in_turn = True
                self._turn_started = time.monotonic()
            return None
        return refused.message

    def turn_end(self) -> None:
        self._in_turn = False

    def queued(self, units: int) -> None:
        self._metrics.queue_depth.inc(units)

    def audio(self) -> None:
        if self._turn_started is not None:
            self._metrics.ttfa.observe(time.monotonic() - self._turn_started)
            self._turn_started = None

    def synthesized(self, audio_seconds: float, engine_seconds: float) -> None:
        if audio_seconds > 0:
            self._metrics.rtf.observe(max(0.0, engine_seconds) / audio_seconds)

    def error(self, kind: str) -> None:
        self._metrics.error(kind)

    def closed(self, pending_units: int) -> None:
        if pending_units:
            self._metrics.queue_depth.dec(pending_units)
        self._metrics.active_sessions.dec()
        if self._key is not None:
            self._limits.close_session(self._key)
            self._key = None
