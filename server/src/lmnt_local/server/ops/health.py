"""Liveness and readiness of one server process, as load balancers and orchestrators read them.

Two questions with different answers: *is the process alive* (restart it if not) and *should it
get new work* (take it out of rotation if not).  Liveness stays a constant answer that touches
nothing, so a busy server is never restarted for being busy; readiness is false until the
engine has loaded (a model may take seconds) and again from the moment a drain starts, so
HAProxy or a Kubernetes Service stops routing to a replica before it closes anything.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["Health"]


class Health:
    """The readiness state of a server, and the HTTP handlers that report it."""

    def __init__(self) -> None:
        self.loaded = False
        self.draining = False

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining

    @property
    def reason(self) -> str:
        if self.draining:
            return "draining"
        return "ready" if self.loaded else "loading"

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/livez", self.live)
        app.router.add_get("/readyz", self.readiness)

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readiness(self, request: web.Request) -> web.Response:
        status = 200 if self.ready else 503
        return web.json_response({"status": self.reason}, status=status)
