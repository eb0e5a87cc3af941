"""Typed errors of the plugin.

One small hierarchy so callers (and the framework's ``FallbackTTS``, which retries on any
exception) can tell a permanent failure from a transient one without parsing messages.  Every
error carries the server's message and request id when the server gave them, and never the API
key: messages are built from server text and our own words only, and ``redact`` scrubs the key
from anything that might echo it.
"""

from __future__ import annotations

__all__ = [
    "LMNTAuthError",
    "LMNTConnectionError",
    "LMNTError",
    "LMNTProtocolError",
    "LMNTRateLimitError",
    "LMNTServerError",
    "LMNTTimeoutError",
    "redact",
]


class LMNTError(Exception):
    """Base of every error this plugin raises.

    ``retryable`` says whether trying the same request again may succeed (network trouble,
    5xx-like server errors) or is pointless (bad key, invalid request).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        request_id: str | None = None,
        server_message: str | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.server_message = server_message
        self.status = status
        self.error_type = error_type

    def scrub(self, secret: str | None) -> LMNTError:
        """Remove ``secret`` from every text this error carries (servers may echo the key)."""
        for name in ("message", "request_id", "server_message", "error_type"):
            value = getattr(self, name)
            if isinstance(value, str):
                setattr(self, name, redact(value, secret))
        self.args = tuple(redact(a, secret) if isinstance(a, str) else a for a in self.args)
        return self

    def __str__(self) -> str:
        return f"{self.message} (request_id={self.request_id})" if self.request_id else self.message


class LMNTConnectionError(LMNTError):
    """Could not reach the server, or the connection broke before the turn finished."""

    retryable = True


class LMNTTimeoutError(LMNTConnectionError):
    """Connecting, or waiting for the server's next frame, took longer than allowed."""


class LMNTAuthError(LMNTError):
    """The server refused the API key (401/403 at the handshake or an in-band auth error)."""


class LMNTServerError(LMNTError):
    """The server reported an error for this request.

    Retryable when it is the server's fault (internal error, overload, rate limit), not when the
    request itself was rejected.
    """

    def __init__(self, message: str, *, retryable: bool = False, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retryable = retryable


class LMNTRateLimitError(LMNTServerError):
    """The server said "too many requests" (``rate_limit_error``, HTTP 429, or a legacy
    ``rate limit`` message).

    Always retryable: the request was fine, only its timing was not.  The plugin paces what it
    sends so its own server never answers this; another LMNT-compatible server may count
    differently (per key, per account).  A retry waits at least ``retry_after`` seconds (the
    server's ``Retry-After`` when it gave one, else ``MIN_RETRY_AFTER``) and resends the turn's
    text coalesced and paced, never as the burst that was refused.
    """

    #: A rate limit is usually counted over a one-second window: waiting less is pointless.
    MIN_RETRY_AFTER = 1.0

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        kw.pop("retryable", None)
        super().__init__(message, retryable=True, **kw)
        self.retry_after = max(self.MIN_RETRY_AFTER, retry_after or 0.0)


class LMNTProtocolError(LMNTError):
    """The server sent something the protocol does not allow (bad JSON, unknown message)."""


def redact(text: str, secret: str | None) -> str:
    """Remove ``secret`` from ``text``: server messages and library errors may echo what we sent."""
    if secret and len(secret) >= 4 and secret in text:
        return text.replace(secret, "***")
    return text
