"""What the server remembers per API key: characters used, starred voices, edited voice metadata.

LMNT kept these per account; the local server has no accounts, so the key stands for one.  The
memory is bounded whatever clients do: at most ``max_keys`` keys are remembered (least recently
used forgotten first; with no configured key set any key is accepted, so the key space is
open), and a key holds at most one edit and one star per installed voice, each field capped.
Keys are held as SHA-256 digests, so no key sits in memory in clear beyond its request and none
can reach a repr or a log line from here.

The book is per process and in memory (a restart forgets it).  Under ``serve --workers N``, or
several replicas behind a balancer, each process keeps its own: usage, stars and edits seen by
one request depend on which process answered it.  Every answer built from it says so with the
header ``x-lmnt-local-state-scope: process`` (docs/deploy.md); sharing it would need a store
the server does not otherwise need, for data no agent relies on.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from lmnt_local.server.api.errors import refusal

__all__ = ["LOCAL_CHARACTER_LIMIT", "AccountBook", "AccountRoutes"]

#: ``plan.character_limit`` of the local plan: there is no quota, so the largest value any
#: client's int type holds (2**31 - 1) says "unlimited" without special-casing zero or null.
LOCAL_CHARACTER_LIMIT: Final = 2**31 - 1
#: Longest name and description kept by an edit, and most tags / longest tag: the caps that
#: keep one key's edits small.
_MAX_NAME: Final = 100
_MAX_DESCRIPTION: Final = 1000
_MAX_TAGS: Final = 20
_MAX_TAG: Final = 50


@dataclass
class _Account:
    characters: int = 0
    starred: set[str] = field(default_factory=set)
    edits: dict[str, dict[str, Any]] = field(default_factory=dict)


class AccountBook:
    """Per-key state with bounded memory (see the module docstring)."""

    def __init__(self, max_keys: int = 1024) -> None:
        if max_keys <= 0:
            raise ValueError("AccountBook.max_keys must be > 0")
        self._max_keys = max_keys
        self._accounts: OrderedDict[bytes, _Account] = OrderedDict()

    def __len__(self) -> int:
        return len(self._accounts)

    def __repr__(self) -> str:
        return f"AccountBook(keys={len(self._accounts)}, max_keys={self._max_keys})"

    def _get(self, key: str) -> _Account:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        account = self._accounts.get(digest)
        if account is None:
            account = self._accounts[digest] = _Account()
            while len(self._accounts) > self._max_keys:
                self._accounts.popitem(last=False)
        else:
            self._accounts.move_to_end(digest)
        return account

    def add_usage(self, key: str, characters: int) -> None:
        """Count characters of text the key had spoken (WebSocket and HTTP alike)."""
        if characters > 0:
            self._get(key).characters += characters

    def usage(self, key: str) -> int:
        return self._get(key).characters

    def starred(self, key: str) -> frozenset[str]:
        return frozenset(self._get(key).starred)

    def edits(self, key: str, voice_id: str) -> Mapping[str, Any]:
        return self._get(key).edits.get(voice_id, {})

    def update(self, key: str, voice_id: str, fields: Mapping[str, Any]) -> None:
        """Apply a validated ``PUT /v1/ai/voice/{id}`` body (see :func:`validate_update`)."""
        account = self._get(key)
        changes = dict(fields)
        starred = changes.pop("starred", None)
        if starred is True:
            account.starred.add(voice_id)
        elif starred is False:
            account.starred.discard(voice_id)
        if changes:
            account.edits.setdefault(voice_id, {}).update(changes)


def validate_update(body: Any) -> dict[str, Any]:
    """The fields of a voice update, type-checked and capped; ``ValueError`` names the field."""
    if not isinstance(body, dict):
        raise ValueError("body: Input should be a valid dictionary")
    fields: dict[str, Any] = {}
    for name, cap in (("name", _MAX_NAME), ("description", _MAX_DESCRIPTION), ("gender", 50)):
        if name in body:
            value = body[name]
            if not isinstance(value, str) or len(value) > cap:
                raise ValueError(f"{name}: Input should be a string of at most {cap} characters")
            fields[name] = value
    if "starred" in body:
        if not isinstance(body["starred"], bool):
            raise ValueError("starred: Input should be a valid boolean")
        fields["starred"] = body["starred"]
    if "tags" in body:
        tags = body["tags"]
        if (
            not isinstance(tags, list)
            or len(tags) > _MAX_TAGS
            or not all(isinstance(t, str) and len(t) <= _MAX_TAG for t in tags)
        ):
            raise ValueError(
                f"tags: Input should be a list of at most {_MAX_TAGS} strings "
                f"of at most {_MAX_TAG} characters"
            )
        fields["tags"] = list(tags)
    return fields


class AccountRoutes:
    """``GET /v1/account``: the local plan and the characters this key had spoken."""

    def __init__(self, book: AccountBook, api_keys: Collection[str] | None) -> None:
        self._book = book
        self._api_keys = api_keys

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/account", self.account)

    async def account(self, request: web.Request) -> web.Response:
        refused = refusal(request, self._api_keys)
        if refused is not None:
            return refused
        used = self._book.usage(request.headers["X-API-Key"])
        plan = {
            "type": "local",
            "character_limit": LOCAL_CHARACTER_LIMIT,
            "commercial_use_allowed": True,
        }
        return web.json_response({"plan": plan, "usage": {"characters": used}})
