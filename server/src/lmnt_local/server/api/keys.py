"""Which API keys may use the server: the check every door (WebSocket, HTTP, guard) shares.

Apart from the WebSocket session because the HTTP endpoints and the connection guard ask it
too.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

__all__ = ["key_allowed"]


def key_allowed(key: str, api_keys: Collection[str] | None) -> bool:
    """Whether ``key`` may use the server: any non-empty key when no keys are configured.

    Every configured key is compared (constant time each), so timing does not reveal which
    key, or how much of one, matched.
    """
    if not key:
        return False
    if not api_keys:
        return True
    given = key.encode()
    matched = False
    for allowed in api_keys:
        matched |= hmac.compare_digest(given, allowed.encode())
    return matched
