"""The playground page at ``/``: hear every voice and watch the words, in a browser, offline.

The page is plain HTML/JS/CSS shipped as package data in ``static/`` (no build step, no CDN)
and read through :mod:`importlib.resources`, so it is served the same from a checkout, an
editable install or a wheel.  It talks to this server only through the public API that agents
use (the voice list and the typed WebSocket stream), so what it shows is what a client gets.

The one thing the page cannot learn without a request that would fail is whether the server
wants a particular key; the HTML carries that flag so the page asks for a key up front instead
of provoking a 401 first.  The key itself never reaches a URL (see ``static/playground.js``).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from aiohttp import web

__all__ = ["add_playground"]

_PACKAGE = __name__.rpartition(".")[0]
_STATIC = "static"
#: Served file name -> Content-Type; nothing else under ``/playground/`` exists.
_ASSETS = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
_KEY_FLAG = "{{KEY_REQUIRED}}"
#: Same-origin everything: the page must work with no network, so it may load nothing else.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@cache
def _asset(name: str) -> str:
    return (resources.files(_PACKAGE) / _STATIC / name).read_text(encoding="utf-8")


def add_playground(app: web.Application, *, key_required: bool) -> None:
    """Register ``GET /`` and its assets; ``key_required`` when only listed keys are accepted."""
    page = _asset("index.html").replace(_KEY_FLAG, "true" if key_required else "false")

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=_HEADERS)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = _ASSETS.get(name)
        if kind is None:
            raise web.HTTPNotFound()
        return web.Response(body=_asset(name).encode(), headers={**_HEADERS, "Content-Type": kind})

    app.router.add_get("/", index)
    app.router.add_get("/playground/{name}", asset)
