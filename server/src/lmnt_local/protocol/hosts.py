"""Hosts: where a key may travel over clear-text ``ws://`` (decided on the URL's literal host,
never DNS), and why a connection to one failed, in words a user can act on.

The key must not cross the open internet unencrypted, but the main self-hosted case is a server
on the same private network (``ws://tts:8765`` in compose or Kubernetes), where TLS is usually
terminated elsewhere or not used at all.  The rule therefore looks only at what the user wrote:
resolving the name would make the decision depend on the resolver of the moment (and send
traffic just to decide), while a literal address or a cluster-style name says where it points.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os

__all__ = [
    "INSECURE_ENV",
    "connect_failure_reason",
    "insecure_allowed_by_env",
    "is_loopback",
    "is_private_host",
]

INSECURE_ENV = "LMNT_ALLOW_INSECURE"
_TRUE = frozenset({"1", "true", "yes", "on"})

# Private by definition: loopback, RFC 1918, link-local, RFC 4193 unique local, IPv6 link-local.
# Deliberately not everything ``ipaddress`` calls private (0.0.0.0/8, 240.0.0.0/4, documentation
# ranges...): those are not where anybody runs a speech server, and 0.0.0.0 means "any address".
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)
# Names that by convention never resolve on the public internet.
_PRIVATE_SUFFIXES = (".local", ".internal", ".svc", ".localhost")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(host.strip("[]").split("%")[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    addr = _address(host)
    return addr is not None and addr.is_loopback


def is_private_host(host: str | None) -> bool:
    """True if ``host`` as written names this machine or a private network.

    Accepted: loopback, RFC 1918, link-local, fc00::/7 addresses; single-label names (``tts``,
    a compose or cluster service); names under ``.local``, ``.internal``, ``.svc`` (which covers
    ``.svc.cluster.local`` too) and ``.localhost``.  Anything else, including names that merely
    look local (``localhost.example.com``, ``10.0.0.1.nip.io``), is public.
    """
    if not host:
        return False
    if is_loopback(host):
        return True
    addr = _address(host)
    if addr is not None:
        return any(addr in net for net in _PRIVATE_NETWORKS)
    name = host.lower().rstrip(".")
    if not name or name.replace(".", "").isdigit():
        return False  # an incomplete dotted address ("10.1"), not a name
    if "." not in name:
        return True
    return name.endswith(_PRIVATE_SUFFIXES)


def insecure_allowed_by_env() -> bool:
    """The explicit switch: ``LMNT_ALLOW_INSECURE=1`` (or true/yes/on) allows any ``ws://`` host."""
    return os.getenv(INSECURE_ENV, "").strip().lower() in _TRUE


def connect_failure_reason(exc: BaseException) -> str:
    """Why a connection could not be made, in words a user can act on.

    aiohttp's own text names its connection key ("Cannot connect to host h:p ssl:default
    [Connect call failed ...]"), which reads as a TLS problem even for a plain ``ws://`` URL;
    the operating system's reason ("Connection refused", "Name or service not known") is what
    the user needs, and the caller already names the URL.
    """
    os_error = getattr(exc, "os_error", None)
    if os_error is None and isinstance(exc, OSError):
        os_error = exc
    if isinstance(os_error, OSError):
        if os_error.errno is not None and os_error.errno > 0:
            with contextlib.suppress(ValueError):
                return os.strerror(os_error.errno)
        if os_error.strerror:
            return os_error.strerror
        if str(os_error):
            return str(os_error)
    return str(exc) or type(exc).__name__
