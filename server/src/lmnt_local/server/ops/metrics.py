"""Prometheus metrics of the local server, with ``prometheus-client``.

Each server gets its own registry, so several servers in one process (tests, benchmarks) never
collide.  Under ``lmnt-local serve --workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR``
before it starts the workers; ``prometheus-client`` then keeps values in shared files and any
worker answers ``/metrics`` with the sum over all of them, so a scrape through a load balancer
sees the whole machine, not whichever worker the kernel picked.

API keys never become label values: a key is named by its configured name (limits file) or by
``key_`` + 8 hex digits of its SHA-256, stable across replicas and useless for recovering it;
past the first 64 unnamed keys of a process, by ``other`` (the series count stays bounded).

Exposure is the operator's choice: ``LMNT_METRICS_KEY`` makes ``/metrics`` answer only
``Authorization: Bearer <key>``; ``LMNT_METRICS=off`` removes the route.  The shipped HAProxy
configuration refuses ``/metrics`` from outside either way (scrape the replicas directly).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess

__all__ = [
    "SPEECH_ENDPOINTS",
    "ServerMetrics",
    "SpeechMeter",
    "key_label",
    "meter_of",
    "metrics_exposure",
]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: The HTTP speech routes, LMNT's and OpenAI's: the only values of the ``endpoint`` label (any
#: other path is never metered, so a scanner's random paths cannot grow the label set).
SPEECH_ENDPOINTS: Final = frozenset(("/v1/ai/speech/bytes", "/v1/ai/speech", "/v1/audio/speech"))


def key_label(key: str) -> str:
    """A short, stable, non-reversible name for a key with no configured name."""
    return "key_" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:8]


class ServerMetrics:
    """The server's instruments; the session and the middleware update them."""

    def __init__(self, *, key: str | None = None, exposed: bool = True) -> None:
        #: When set, ``/metrics`` answers only ``Authorization: Bearer <key>`` (401 otherwise).
        self.key = key or None
        #: False: no ``/metrics`` route at all (the instruments still count).
        self.exposed = exposed
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.active_sessions = Gauge(
            "lmnt_active_sessions",
            "WebSocket sessions open now",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.sessions = Counter("lmnt_sessions", "WebSocket sessions accepted", registry=r)
        self.queue_depth = Gauge(
            "lmnt_queue_depth",
            "Synthesis units waiting for the engine, over all sessions",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.ttfa = Histogram(
            "lmnt_time_to_first_audio_seconds",
            "From the first text of a turn to its first audio frame",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.rtf = Histogram(
            "lmnt_real_time_factor",
            "Engine time per second of audio, per synthesis unit (below 1: faster than real time)",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=r,
        )
        self.characters = Counter(
            "lmnt_characters",
            "Characters of text accepted for synthesis, by key name",
            ["key"],
            registry=r,
        )
        self.errors = Counter(
            "lmnt_errors",
            "Errors and refusals, by type (LMNT error types, plus transport-level ones)",
            ["type"],
            registry=r,
        )

        self.http_requests = Counter(
            "lmnt_http_speech_requests",
            "HTTP speech requests answered, by endpoint and status code",
            ["endpoint", "code"],
            registry=r,
        )
        self.http_ttfb = Histogram(
            "lmnt_http_speech_time_to_first_byte_seconds",
            "From an HTTP speech request's arrival to its first audio byte (the whole body for "
            "JSON answers), successful requests only",
            ["endpoint"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=r,
        )
        self.http_characters = Counter(
            "lmnt_http_speech_characters",
            "Characters of text accepted for HTTP speech, by endpoint",
            ["endpoint"],
            registry=r,
        )

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def meter(self, request: web.Request) -> SpeechMeter | None:
        """Start metering ``request`` if it is HTTP speech (handlers find it with
        :func:`meter_of`); the caller ends it with :meth:`SpeechMeter.done`."""
        if request.method != "POST" or request.path not in SPEECH_ENDPOINTS:
            return None
        meter = SpeechMeter(self, request.path)
        request[_METER_KEY] = meter
        return meter

    def render(self) -> bytes:
        """The exposition text: this server's registry, or all workers' in multiprocess mode."""
        path = os.environ.get(_MULTIPROC_ENV)
        if path:
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    async def handler(self, request: web.Request) -> web.Response:
        if self.key is not None and not _bearer_matches(request, self.key):
            return web.json_response(
                {"error": "/metrics needs Authorization: Bearer <LMNT_METRICS_KEY>"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        body = self.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def add_to(self, app: web.Application) -> None:
        if self.exposed:
            app.router.add_get("/metrics", self.handler)


def _bearer_matches(request: web.Request, key: str) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    return hmac.compare_digest(given, key.encode())


def metrics_exposure(environ: Mapping[str, str] | None = None) -> tuple[str | None, bool]:
    """``(key, exposed)`` from ``LMNT_METRICS_KEY`` and ``LMNT_METRICS`` (``on``/``off``)."""
    env = os.environ if environ is None else environ
    mode = env.get("LMNT_METRICS", "on").strip().lower() or "on"
    if mode not in ("on", "off"):
        raise ValueError(f"$LMNT_METRICS must be on or off, got {mode!r}")
    return env.get("LMNT_METRICS_KEY", "").strip() or None, mode == "on"


class SpeechMeter:
    """One HTTP speech request's figures: status, error type, first byte, characters.

    The middleware starts and ends it (so refusals made before the handler count too); the
    handler reports what only it sees: its first audio byte, the error type it answered with,
    the characters it accepted.  Without a server (``metrics`` None) it records nothing.
    """

    __slots__ = ("_endpoint", "_error", "_first", "_metrics", "_start")

    def __init__(self, metrics: ServerMetrics | None, endpoint: str) -> None:
        self._metrics = metrics
        self._endpoint = endpoint
        self._start = time.monotonic()
        self._first = False
        self._error: str | None = None

    def first_byte(self) -> None:
        if not self._first:
            self._first = True
            if self._metrics is not None:
                seconds = time.monotonic() - self._start
                self._metrics.http_ttfb.labels(self._endpoint).observe(seconds)

    def fail(self, kind: str) -> None:
        """The handler answered an error of this type (counted in ``lmnt_errors`` once)."""
        if self._error is None:
            self._error = kind
            if self._metrics is not None:
                self._metrics.error(kind)

    def characters(self, n: int) -> None:
        if self._metrics is not None and n > 0:
            self._metrics.http_characters.labels(self._endpoint).inc(n)

    def done(self, status: int) -> None:
        if self._metrics is None:
            return
        if status < 400:
            self.first_byte()  # a whole-body answer: its first byte is its only one
        self._metrics.http_requests.labels(self._endpoint, str(status)).inc()


_METER_KEY: Final = web.RequestKey("lmnt_speech_meter", SpeechMeter)


def meter_of(request: web.Request) -> SpeechMeter:
    """The request's meter, or one that records nothing (routes mounted without the server)."""
    meter = request.get(_METER_KEY)
    return meter if meter is not None else SpeechMeter(None, "")


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (called by the supervisor in multiprocess mode)."""
    path = os.environ.get(_MULTIPROC_ENV)
    if path:
        _multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
