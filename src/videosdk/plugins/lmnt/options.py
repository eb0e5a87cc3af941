"""Checks on ``LMNTTTS`` options: the 1.0.30 ``ValueError``s for bad config, and ``ws_url`` policy.

Shared by the constructor and per-call overrides, kept apart from the adapter so the rules a
caller's configuration must meet are read in one place (the constructor's connection keywords
too: ``_check_connection_options``).
"""

from __future__ import annotations

import math
import re
import ssl as ssl_module
from typing import Any, Literal
from urllib.parse import urlsplit

from lmnt_local.protocol import FORMATS, LEGACY_VERSION, SAMPLE_RATES, TYPED_VERSIONS
from lmnt_local.protocol.hosts import INSECURE_ENV, insecure_allowed_by_env, is_private_host

from .errors import redact_url

_FormatType = Literal["pcm_s16le", "pcm_f32le", "ulaw", "mp3", "webm"]
_SampleRate = Literal[8000, 16000, 24000]
DEFAULT_FORMAT: _FormatType = "pcm_s16le"
LMNT_SAMPLE_RATE: _SampleRate = 24000
_LanguageCode = str
_LANGUAGE_RE = re.compile(r"^(auto|[a-z]{2,3}(-[A-Za-z0-9]{2,8})?)$")
_OVERRIDABLE = (
    "model", "language", "format", "sample_rate", "seed", "temperature", "top_p", "speed"
)  # fmt: skip
#: LMNT's documented range of ``speed`` (the local server enforces the same).
MIN_SPEED, MAX_SPEED = 0.25, 2.0


def _check_str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _check_number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number between {lo} and {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value!r}")
    return float(value)


def _validate(opts: dict[str, Any]) -> None:
    """The checks shared by the constructor and per-call overrides."""
    _check_str("voice", opts["voice"])
    _check_str("model", opts["model"])
    language = opts["language"]
    if not isinstance(language, str) or not _LANGUAGE_RE.match(language):
        raise ValueError(
            f"language must be 'auto' or an ISO 639-1 code such as 'en', got {language!r}"
        )
    if opts["format"] not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {opts['format']!r}")
    rate = opts["sample_rate"]
    if isinstance(rate, bool) or rate not in SAMPLE_RATES:
        raise ValueError(
            f"sample_rate must be one of {', '.join(map(str, SAMPLE_RATES))}; got {rate!r}"
        )
    seed = opts["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    _check_number("temperature", opts["temperature"], 0.0, 5.0)
    _check_number("top_p", opts["top_p"], 0.0, 1.0)
    if opts.get("speed") is not None:
        _check_number("speed", opts["speed"], MIN_SPEED, MAX_SPEED)


def _check_url(url: Any, allow_insecure: bool) -> str:
    """A ``ws://`` URL to a public host would send the key in clear text: refused unless asked.

    The decision is on the literal host (see ``hosts``): private addresses and cluster-style
    names pass, as does ``allow_insecure=True`` or ``LMNT_ALLOW_INSECURE=1`` (a deployment can
    allow it without a code change).
    """
    if not isinstance(url, str):
        raise ValueError(f"ws_url must be a ws:// or wss:// URL, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(
            f"ws_url must be a ws:// or wss:// URL with a host, got {redact_url(url)!r}"
        )
    insecure_ok = allow_insecure or insecure_allowed_by_env()
    if parts.scheme == "ws" and not insecure_ok and not is_private_host(parts.hostname):
        raise ValueError(
            f"ws_url {redact_url(url)!r} is plain ws:// to a public host: the API key would "
            "travel unencrypted. Use wss://, or, if this is intended, pass allow_insecure=True "
            f"or set {INSECURE_ENV}=1 (ws:// to loopback, private addresses and single-label or "
            ".local/.internal/.svc names is allowed without either)."
        )
    return url


def _check_connection_options(
    *,
    protocol_version: str,
    connect_timeout: float,
    receive_timeout: float,
    close_timeout: float,
    max_retries: int,
    retry_backoff: float,
    ssl: ssl_module.SSLContext | None,
    ca_file: str | None,
) -> ssl_module.SSLContext | None:
    """The constructor's checks on the keywords 1.0.30 did not have; returns the TLS context to
    use (one loaded from ``ca_file`` when no ``ssl`` is given)."""
    if protocol_version not in (LEGACY_VERSION, *TYPED_VERSIONS):
        raise ValueError(
            f"protocol_version must be one of {LEGACY_VERSION}, {', '.join(TYPED_VERSIONS)}; "
            f"got {protocol_version!r}"
        )
    timeouts = {
        "connect_timeout": connect_timeout,
        "receive_timeout": receive_timeout,
        "close_timeout": close_timeout,
    }
    for name, value in timeouts.items():
        _check_number(name, value, 0.001, 3600.0)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    _check_number("retry_backoff", retry_backoff, 0.0, 60.0)
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise ValueError("ssl must be an ssl.SSLContext or None")
    if ca_file is not None and ssl is None:
        try:
            ssl = ssl_module.create_default_context(cafile=ca_file)
        except (OSError, ssl_module.SSLError) as exc:
            raise ValueError(f"ca_file {ca_file!r} could not be loaded: {exc}") from None
    return ssl
