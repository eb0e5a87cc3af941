"""pytest fixtures for testing code against the local LMNT server.

Enable them with ``pytest_plugins = ["videosdk.plugins.lmnt.testing"]`` in your root
``conftest.py``.  The fixtures are declared with ``pytest_asyncio.fixture`` so they work in
pytest-asyncio's strict and auto modes alike:

* ``lmnt_server``: a :class:`~videosdk.plugins.lmnt.server.LocalLMNTServer` on 127.0.0.1 with
  the deterministic tone engine; point your client at ``lmnt_server.ws_url`` /
  ``lmnt_server.http_url``, inspect ``lmnt_server.sessions``, set ``lmnt_server.faults``.
* ``lmnt_tls_server``: the same over TLS with a throwaway CA (needs ``trustme``);
  ``lmnt_tls_server.client_ssl_context`` trusts it.

Outside fixtures, ``await start_local_server(**kwargs)`` returns a started server (stop it
with ``await server.stop()``).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from .server import LocalLMNTServer, ToneEngine

__all__ = ["lmnt_server", "lmnt_tls_server", "make_tls_contexts", "start_local_server"]


async def start_local_server(**kwargs: Any) -> LocalLMNTServer:
    """Start a :class:`LocalLMNTServer` (tone engine unless ``engine=`` is given)."""
    kwargs.setdefault("engine", ToneEngine())
    server = LocalLMNTServer(**kwargs)
    await server.start()
    return server


def make_tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) SSL contexts from a fresh throwaway CA, valid for the loopback names.

    ``trustme`` is imported here, not at module import, so only TLS users need it.
    """
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "::1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


@pytest_asyncio.fixture
async def lmnt_server() -> AsyncIterator[LocalLMNTServer]:
    """A local LMNT server with the tone engine, on a free port, for one test."""
    server = await start_local_server()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def lmnt_tls_server() -> AsyncIterator[LocalLMNTServer]:
    """A local LMNT server over TLS; ``client_ssl_context`` trusts its certificate."""
    server_ctx, client_ctx = make_tls_contexts()
    server = await start_local_server(ssl_context=server_ctx)
    server.client_ssl_context = client_ctx
    try:
        yield server
    finally:
        await server.stop()
