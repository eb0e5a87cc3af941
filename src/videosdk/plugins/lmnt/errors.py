"""Typed errors of the plugin.

One small hierarchy so callers (and the framework's ``FallbackTTS``, which retries on any
exception) can tell a permanent failure from a transient one without parsing messages.  Every
error carries the server's message and request id when the server gave them, and never the API
key: messages are built from server text and our own words only, and ``redact`` scrubs the key
from anything that might echo it.
"""

from __future__ import annotations

import re

__all__ = [
    "LMNTAuthError",
    "LMNTConnectionError",
    "LMNTError",
    "LMNTProtocolError",
    "LMNTRateLimitError",
    "LMNTServerError",
    "LMNTTimeoutError",
    "redact",
    "redact_url",
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


# A key shorter than this is masked only as a whole token where a key is carried (URL userinfo
# and query, ``key=value``, headers, JSON fields), never as a part of other words: a short one
# such as the keyless CLI's placeholder ``local`` is an ordinary word, and blanking it garbles
# ``ws://localhost`` and ``unable to get local issuer certificate``.  Real LMNT keys are 32
# characters.
MIN_FREE_TEXT_KEY = 8
_MASK = "***"
# Characters that may be part of a key: a key is redacted only where it stands as a whole token,
# so ``local`` never blanks part of ``localhost``.
_TOKEN = r"[A-Za-z0-9_\-]"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s@?#'\"]+)@")
_QUERY_VALUE = re.compile(r"(?P<head>[?&;][^=&\s#'\"?;]+=)(?P<value>[^&\s#'\";]+)")
_KEYED_VALUE = re.compile(
    r"(?P<head>\b(?:x-api-key|api[_-]?key|apikey|token|access[_-]?token|secret|password|passwd)"
    r"\b[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;&}]+)",
    re.IGNORECASE,
)
_AUTHORIZATION = re.compile(
    r"(?P<head>\bauthorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic|token)\s+)?)"
    r"(?P<value>[^\s\"',;]+)",
    re.IGNORECASE,
)


def _mask(match: re.Match[str]) -> str:
    # Punctuation that ends a sentence or a clause is the message's, not the value's.
    value = match.group("value")
    tail = value[len(value.rstrip(":,.)]")) :] if value.rstrip(":,.)]") else ""
    return match.group("head") + _MASK + tail


def redact_url(url: str) -> str:
    """``url`` safe to show: userinfo and every query value replaced by ``***``.

    ``wss://user:pass@host/path?token=abc`` -> ``wss://***@host/path?token=***``: the reader
    still sees which host and which parameters, never the credentials.
    """
    return redact(url)


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with every credential removed: server messages and library errors may echo what
    we sent.

    Whatever ``secret`` is, credentials where they are carried (URL userinfo and query values,
    ``api_key=``/``token=``/``X-API-Key:``/``Authorization:`` values) are masked.  ``secret``
    itself is masked wherever it occurs if it has at least ``MIN_FREE_TEXT_KEY`` characters;
    a shorter one only as a whole token in a key's place (shorter keys are words: see the
    constant).
    """
    if not text:
        return text
    text = _USERINFO.sub(lambda m: m.group("scheme") + _MASK + "@", text)
    text = _QUERY_VALUE.sub(_mask, text)
    text = _KEYED_VALUE.sub(_mask, text)
    text = _AUTHORIZATION.sub(_mask, text)
    if secret:
        quoted = re.escape(secret)
        if len(secret) >= MIN_FREE_TEXT_KEY:
            # Anywhere, even glued into another token (a server may echo ``req_<key>``): eight
            # or more characters of a key are not part of ordinary words.
            text = text.replace(secret, _MASK)
        else:
            # Short: only as a value, where a key goes (``: local``, ``="local"``).
            text = re.sub(rf"([:=]\s?[\"']?){quoted}(?!{_TOKEN})", rf"\g<1>{_MASK}", text)
    return text
