"""Per-key limits of a shared deployment: concurrent sessions and characters per minute.

One team's runaway agent must not starve the others, so each API key gets a cap on open
sessions (WebSocket sessions plus HTTP speech requests in flight) and a character budget that
refills continuously (a token bucket of ``chars_per_minute`` that refills at
``chars_per_minute / 60`` per second: bursts up to a minute's worth, then the steady rate).
A refusal is LMNT's own: ``rate_limit_error`` on the WebSocket (then close 1008), HTTP 429 with
``Retry-After`` on the REST endpoints.

Configuration, by file or environment (the environment wins over the file's defaults)::

    # limits.toml  (LMNT_LIMITS_FILE=limits.toml, or lmnt-local serve --limits limits.toml)
    [default]                  # every key without its own entry
    max_sessions = 8
    chars_per_minute = 60000

    [keys.support-bot]         # the name is what metrics and logs show instead of the key
    key_env = "SUPPORT_BOT_KEY"  # or key = "..." (a file with keys must not be world-readable)
    max_sessions = 64
    chars_per_minute = 600000

    LMNT_KEY_MAX_SESSIONS=8  LMNT_KEY_CHARS_PER_MINUTE=60000

The file can also be the server's allow-list: with ``only_listed_keys = true`` at its top
(before any table), a key without a ``[keys.NAME]`` entry is refused as a wrong key is (the
WebSocket's ``Invalid API key`` and close, HTTP 403, OpenAI's 401), whatever its limits; keys
given with ``--api-key`` are accepted too.  A team's key is then revoked by deleting its
entry and restarting (or rolling) the server.

State is per process: with ``--workers N`` or several replicas the effective limit is up to N
times the configured one, unless the balancer pins a key to one replica (docs/deploy.md).
"""

from __future__ import annotations

import math
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmnt_local.server.ops.metrics import key_label

__all__ = ["MAX_KEY_LABELS", "OTHER_KEYS", "CharsRefused", "KeyLimit", "KeyLimits", "LimitsConfig"]

#: Keys tracked at once before idle entries (no session, full bucket) are forgotten: a server
#: that accepts any key must not grow a record per random key it is sent.
_MAX_TRACKED = 4096
#: Unnamed keys with a metrics label of their own, per process; later ones are "other".
MAX_KEY_LABELS = 64
OTHER_KEYS = "other"


@dataclass(frozen=True, slots=True)
class KeyLimit:
    """Limits of one key; None means unlimited."""

    max_sessions: int | None = None
    chars_per_minute: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_sessions", "chars_per_minute"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"limits: {name} must be an integer, got {value!r}")
            if value is not None and value <= 0:
                raise ValueError(f"limits: {name} must be > 0, got {value}")


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """The default limit and named per-key overrides (``keys`` maps a key to its name, limit)."""

    default: KeyLimit = KeyLimit()
    keys: Mapping[str, tuple[str, KeyLimit]] = field(default_factory=dict)
    #: The keys of ``keys`` are the only ones accepted (module docstring).
    only_listed: bool = False

    def __post_init__(self) -> None:
        if self.only_listed and not self.keys:
            raise ValueError("limits: only_listed_keys = true needs at least one [keys.NAME]")

    @property
    def allowed_keys(self) -> frozenset[str] | None:
        """The allow-list, or None when any key the server accepts is allowed."""
        return frozenset(self.keys) if self.only_listed else None

    @property
    def active(self) -> bool:
        d = self.default
        limited = d.max_sessions is not None or d.chars_per_minute is not None
        return bool(self.keys) or limited or self.only_listed

    @classmethod
    def load(
        cls, path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> LimitsConfig:
        """From ``path`` (or ``$LMNT_LIMITS_FILE``), then ``LMNT_KEY_*`` variables on top."""
        env = os.environ if environ is None else environ
        path = path or env.get("LMNT_LIMITS_FILE") or None
        config = cls._from_file(Path(path), env) if path else cls()
        default = config.default
        overrides: dict[str, Any] = {}
        for var, name in (
            ("LMNT_KEY_MAX_SESSIONS", "max_sessions"),
            ("LMNT_KEY_CHARS_PER_MINUTE", "chars_per_minute"),
        ):
            raw = env.get(var, "").strip()
            if raw:
                try:
                    overrides[name] = int(raw)
                except ValueError:
                    raise ValueError(f"{var} must be an integer, got {raw!r}") from None
        if overrides:
            merged = {
                "max_sessions": default.max_sessions,
                "chars_per_minute": default.chars_per_minute,
                **overrides,
            }
            default = KeyLimit(**merged)
        return cls(default, config.keys, config.only_listed)

    @classmethod
    def _from_file(cls, path: Path, env: Mapping[str, str]) -> LimitsConfig:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"limits file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"limits file {path}: invalid TOML: {exc}") from None
        unknown = set(data) - {"default", "keys", "only_listed_keys"}
        if unknown:
            raise ValueError(f"limits file {path}: unknown section(s) {sorted(unknown)}")
        only_listed = data.get("only_listed_keys", False)
        if not isinstance(only_listed, bool):
            raise ValueError(f"limits file {path}: only_listed_keys must be true or false")
        default = _limit(data.get("default", {}), f"{path} [default]")
        keys: dict[str, tuple[str, KeyLimit]] = {}
        entries = data.get("keys", {})
        if not isinstance(entries, dict):
            raise ValueError(f"limits file {path}: [keys] must be a table of named keys")
        for name, entry in entries.items():
            where = f"{path} [keys.{name}]"
            if not isinstance(entry, dict):
                raise ValueError(f"limits file {where}: must be a table")
            entry = dict(entry)
            key = entry.pop("key", None)
            key_env = entry.pop("key_env", None)
            if key_env is not None:
                key = env.get(str(key_env))
                if not key:
                    raise ValueError(f"limits file {where}: ${key_env} is not set")
            if not isinstance(key, str) or not key:
                raise ValueError(f'limits file {where}: needs key = "..." or key_env = "VAR"')
            keys[key] = (str(name), _limit(entry, where))
        try:
            return cls(default, keys, only_listed)
        except ValueError as exc:
            raise ValueError(f"limits file {path}: {str(exc).removeprefix('limits: ')}") from None


def _limit(entry: Any, where: str) -> KeyLimit:
    if not isinstance(entry, dict):
        raise ValueError(f"limits file {where}: must be a table")
    unknown = set(entry) - {"max_sessions", "chars_per_minute"}
    if unknown:
        raise ValueError(f"limits file {where}: unknown setting(s) {sorted(unknown)}")
    try:
        return KeyLimit(entry.get("max_sessions"), entry.get("chars_per_minute"))
    except ValueError as exc:
        raise ValueError(f"limits file {where}: {str(exc).removeprefix('limits: ')}") from None


@dataclass(frozen=True, slots=True)
class CharsRefused:
    """A character budget refusal: the message, and seconds to wait (None: never fits)."""

    message: str
    retry_after: float | None


class _KeyState:
    __slots__ = ("sessions", "tokens", "updated")

    def __init__(self, tokens: float, now: float) -> None:
        self.sessions = 0
        self.tokens = tokens
        self.updated = now


class KeyLimits:
    """The running counters of one server process."""

    def __init__(self, config: LimitsConfig | None = None) -> None:
        self.config = config or LimitsConfig()
        self._state: dict[str, _KeyState] = {}
        self._labels: set[str] = set()

    def name_of(self, key: str) -> str:
        """What metrics call ``key``: its configured name, else a short hash, else "other".

        The label set must stay bounded whatever keys clients send (a server that accepts any
        key would grow one series per key, without limit): the first
        :data:`MAX_KEY_LABELS` unnamed keys this process counted get their own hash, every
        later one shares the label ``other``.
        """
        entry = self.config.keys.get(key)
        if entry is not None:
            return entry[0]
        label = key_label(key)
        labels = self._labels
        if label in labels:
            return label
        if len(labels) < MAX_KEY_LABELS:
            labels.add(label)
            return label
        return OTHER_KEYS

    def limit_of(self, key: str) -> KeyLimit:
        entry = self.config.keys.get(key)
        return entry[1] if entry is not None else self.config.default

    def open_session(self, key: str) -> str | None:
        """Count a session of ``key``; the refusal message when it is at its cap."""
        limit = self.limit_of(key)
        state = self._get(key, limit)
        if limit.max_sessions is not None and state.sessions >= limit.max_sessions:
            return f"too many concurrent sessions for this API key (limit {limit.max_sessions})"
        state.sessions += 1
        return None

    def close_session(self, key: str) -> None:
        state = self._state.get(key)
        if state is not None and state.sessions > 0:
            state.sessions -= 1

    def take_chars(self, key: str, n: int) -> CharsRefused | None:
        """Spend ``n`` characters of the key's budget; why not (and how long to wait) if short.

        Callers spend only for a request already validated and authenticated, so a refused or
        malformed request costs the key nothing.  A request larger than the whole budget is
        refused with no wait: no wait would make it fit.
        """
        limit = self.limit_of(key)
        per_minute = limit.chars_per_minute
        if per_minute is None or n <= 0:
            return None
        if n > per_minute:
            return CharsRefused(
                f"request of {n} characters is too large for this API key's limit of "
                f"{per_minute} characters per minute; send it in smaller parts",
                None,
            )
        state = self._get(key, limit)
        now = time.monotonic()
        state.tokens = min(per_minute, state.tokens + (now - state.updated) * per_minute / 60)
        state.updated = now
        if n > state.tokens:
            wait = max(1.0, math.ceil((n - state.tokens) * 60 / per_minute))
            return CharsRefused(
                f"character rate limit exceeded for this API key; retry in {wait:g} s", wait
            )
        state.tokens -= n
        return None

    def _get(self, key: str, limit: KeyLimit) -> _KeyState:
        state = self._state.get(key)
        if state is None:
            if len(self._state) >= _MAX_TRACKED:
                self._forget_idle()
            now = time.monotonic()
            state = self._state[key] = _KeyState(float(limit.chars_per_minute or 0), now)
        return state

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key, state in list(self._state.items()):
            if state.sessions == 0 and now - state.updated > 60:
                del self._state[key]
        if len(self._state) >= _MAX_TRACKED:  # still full: forget every key with no session
            for key, state in list(self._state.items()):
                if state.sessions == 0:
                    del self._state[key]
