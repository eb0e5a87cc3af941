"""What tests that start subprocesses or examples share: an environment no developer setting
leaks into, and a machine with no network but loopback."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


#: This checkout's two source trees, for child processes that must run this code.
SOURCES = (str(ROOT / "src"), str(ROOT / "server" / "src"))


def clear_lmnt_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's LMNT_WS_URL / LMNT_API_KEY must not redirect a test."""
    monkeypatch.delenv("LMNT_WS_URL", raising=False)
    monkeypatch.delenv("LMNT_API_KEY", raising=False)


def subprocess_env() -> dict[str, str]:
    """The environment for a child Python: no LMNT_* setting, this checkout's sources first
    (the plugin's ``src`` and the server distribution's ``server/src``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMNT_")}
    if "LMNT_VOICES_HOME" in os.environ:  # the empty voice directory conftest sets
        env["LMNT_VOICES_HOME"] = os.environ["LMNT_VOICES_HOME"]
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*SOURCES, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _loopback(host: Any) -> bool:
    if host in ("localhost", None):
        return True
    try:
        return ipaddress.ip_address(str(host).strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def refuse_non_loopback(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record, in the list returned) every DNS lookup or connection that is not to
    a loopback address, as a machine with no network would."""
    refused: list[Any] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            refused.append(address)
            raise OSError(f"test: network access to {address!r} refused")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _loopback(host):
            refused.append(host)
            raise OSError(f"test: DNS lookup of {host!r} refused")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return refused
