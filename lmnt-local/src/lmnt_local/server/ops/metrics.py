"""Prometheus metrics of the local server, with ``prometheus-client``.

Each server gets its own registry, so several servers in one process (tests, benchmarks) never
collide.  Under ``lmnt-local serve --workers N`` the supervisor sets ``PROMETHEUS_MULTIPROC_DIR``
before it starts the workers; ``prometheus-client`` then keeps values in shared files and any
worker answers ``/metrics`` with the sum over all of them, so a scrape through a load balancer
sees the whole machine, not whichever worker the kernel picked.

API keys never become label values: a key is named by its configured name (limits file) or by
``key_`` + 8 hex digits of its SHA-256, stable across replicas and useless for recovering it.
"""

from __future__ import annotations

import hashlib
import os

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

__all__ = ["ServerMetrics", "key_label"]

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def key_label(key: str) -> str:
    """A short, stable, non-reversible name for a key with no configured name."""
    return "key_" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:8]


class ServerMetrics:
    """The server's instruments; the session and the middleware update them."""

    def __init__(self) -> None:
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

    def error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> bytes:
        """The exposition text: this server's registry, or all workers' in multiprocess mode."""
        path = os.environ.get(_MULTIPROC_ENV)
        if path:
            registry = CollectorRegistry()
            _multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    async def handler(self, request: web.Request) -> web.Response:
        body = self.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/metrics", self.handler)


def mark_process_dead(pid: int) -> None:
    """Drop a dead worker's live gauges (called by the supervisor in multiprocess mode)."""
    path = os.environ.get(_MULTIPROC_ENV)
    if path:
        _multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
