"""HTTP error answers in the shape each LMNT API version used, and the key check of the REST API.

Clients of API 1.0 (no ``lmnt-version`` header, or ``1.0``: VideoSDK 1.0.30, LiveKit, old SDKs)
saw FastAPI's bodies: ``{"detail": "Not Found"}``, ``{"detail": [{"loc", "msg", "type"}]}`` for
validation, and ``{"error": "Invalid API key"}`` for keys.  From 1.1 on the SDKs parse one
envelope, ``{"error": {"type": <slug>, "message": ...}}`` with a ``request-id`` header, and map
the status code to an exception class.  Every REST handler answers errors through
:func:`error_response`, so the two shapes never mix within one version.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any

from aiohttp import web

from lmnt_local.protocol import TYPED_VERSIONS, VERSIONS
from lmnt_local.server.api.keys import key_allowed
from lmnt_local.server.ops.logs import request_id as current_request_id

__all__ = [
    "ApiError",
    "api_version",
    "error_response",
    "refusal",
    "request_id",
]


def request_id(request: web.Request) -> str:
    """The request's ``req_…`` id for the ``request-id`` header: the one the server's middleware
    gave it (and its log lines carry, see :mod:`.logs`), else a fresh one."""
    return current_request_id.get() or f"req_{uuid.uuid4().hex}"


def api_version(request: web.Request) -> str:
    """The request's ``lmnt-version`` header; an unknown value is answered as legacy 1.0."""
    version = request.headers.get("lmnt-version", "1.0").strip()
    return version if version in VERSIONS else "1.0"


class ApiError(Exception):
    """An error a handler answers with; ``field`` makes it a 1.0 validation error (422 list)."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        field: str | None = None,
        kind: str = "value_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.field = field
        self.kind = kind
        self.headers = dict(headers or {})

    @classmethod
    def invalid(cls, field: str, message: str, kind: str = "value_error") -> ApiError:
        """A request field LMNT's validation would refuse: 422 in every version."""
        return cls(422, "invalid_request_error", message, field=field, kind=kind)

    def response(self, request: web.Request) -> web.Response:
        return error_response(
            request,
            self.status,
            self.error_type,
            str(self),
            field=self.field,
            kind=self.kind,
            headers=self.headers,
        )


def error_response(
    request: web.Request,
    status: int,
    error_type: str,
    message: str,
    *,
    field: str | None = None,
    kind: str = "value_error",
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """``message`` in the body shape of the request's API version (module docstring)."""
    rid = request_id(request)
    body: Any
    if api_version(request) in TYPED_VERSIONS:
        body = {"error": {"type": error_type, "message": message}}
    elif field is not None:
        body = {"detail": [{"loc": ["body", field], "msg": message, "type": kind}]}
    elif status in (404, 405) or error_type == "not_found_error":
        body = {"detail": message}
    else:
        body = {"error": message}
    all_headers = {"request-id": rid, **(headers or {})}
    return web.json_response(body, status=status, headers=all_headers)


def refusal(request: web.Request, api_keys: Collection[str] | None) -> web.Response | None:
    """LMNT's answer to a missing (401) or wrong (403) ``X-API-Key``; None when it is allowed."""
    key = request.headers.get("X-API-Key", "")
    if key_allowed(key, api_keys):
        return None
    status, kind = (401, "authentication_error") if not key else (403, "permission_error")
    return error_response(request, status, kind, "Invalid API key")
