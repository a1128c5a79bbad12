"""Limits checked before any work: an ASGI middleware in front of the routes.

In this order, before a route (or FastAPI's body parsing) sees the request:

1. Header bytes over ``MAX_HEADER_BYTES``: 431.
2. ``/v1`` routes: a valid key (a team key; an admin key on ``/v1/admin``), else 401 — so
   a caller without a key never has its body read or parsed, and never sees a validation
   message. The routes still resolve the team themselves (and spend its rate-limit token).
3. A body on a ``/v1`` route whose ``Content-Type`` is given and is not JSON: 415.
4. ``Content-Length`` over ``max_body_bytes``: 413 at once, nothing read (a client sending
   ``Expect: 100-continue`` never even sends its body).
5. The body, read here with a running byte count: 413 as soon as the count passes the limit
   (a chunked 100 MB body is never buffered), 408 when the whole body has not arrived within
   ``body_read_timeout_s`` (a slow-drip client holds no request slot for long).
6. JSON nested deeper than ``MAX_JSON_DEPTH`` (no request of this API needs more than a few
   levels): 400, before a parser could recurse into it.

Only then is the request passed on, its body replayed from the buffer. Every refusal is the
JSON error body of ``service.errors``; the connection is closed after one that left part of the
body unread (the server cannot reuse it).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from email.message import Message
from typing import Any

import numpy as np

from service.errors import ServiceError, error_response

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIMessage = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[ASGIMessage]]
Send = Callable[[ASGIMessage], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Authenticate = Callable[[str, str | None], None]

MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers at most (uvicorn's h11 refuses larger ones itself, as a 400)."""
MAX_JSON_DEPTH = 32
"""Deepest JSON nesting accepted; a select body needs five levels."""

API_PREFIX = "/v1"
ADMIN_PREFIX = "/v1/admin"

# A JSON string (escapes included), as one regex match: removed before counting brackets, so
# that brackets inside target text do not count. Unrolled loop: linear, no backtracking.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


class _ClientGone(Exception):
    """The client disconnected while its body was being read."""


def is_json_media_type(content_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json`` (parameters ignored)."""
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def nested_deeper_than(body: bytes, limit: int) -> bool:
    """Whether a JSON text nests arrays and objects more than ``limit`` levels deep.

    Linear in the body and in C (regex, numpy): strings are cut out first so that brackets in
    text do not count. Not a parse: for an invalid text the answer is some bound, and the JSON
    parser refuses the text afterwards anyway.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # fewer openings than levels
    bare = np.frombuffer(_JSON_STRING.sub(b"", body), dtype=np.uint8)
    steps = np.isin(bare, _OPEN).astype(np.int64) - np.isin(bare, _CLOSE).astype(np.int64)
    return steps.size > 0 and int(np.cumsum(steps).max()) > limit


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ServiceError(400, "Content-Length must be a non-negative integer")
    return int(value)


def _declares_body(scope: Scope) -> bool:
    """A chunked body, or a Content-Length above 0 (a malformed one counts as a body)."""
    if "chunked" in (_header(scope, b"transfer-encoding") or "").lower():
        return True
    try:
        return bool(_content_length(scope))
    except ServiceError:
        return True


class RequestLimits:
    """The ASGI middleware described in the module docstring.

    Args:
        app: The application behind it.
        authenticate: ``(path, Authorization header) -> None``, raising ``ServiceError``
            (401) for a key that may not use ``path``; called for every ``/v1`` path.
        max_body_bytes: Largest request body accepted.
        body_read_timeout_s: Time allowed for the whole body to arrive.
    """

    def __init__(
        self,
        app: ASGIApp,
        authenticate: Authenticate,
        max_body_bytes: int,
        body_read_timeout_s: float,
    ):
        self.app = app
        self.authenticate = authenticate
        self.max_body_bytes = max_body_bytes
        self.body_read_timeout_s = body_read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await self._check(scope, receive)
        except _ClientGone:
            return
        except ServiceError as exc:
            response = error_response(exc.status, exc.message, exc.retry_after)
            if _declares_body(scope):
                # Its body is unread, or refused: the connection cannot carry another request.
                response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        if body is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _check(self, scope: Scope, receive: Receive) -> bytes | None:
        """Runs checks 1-6; the body read (None when the request has none)."""
        header_bytes = len(scope.get("raw_path") or b"") + sum(
            len(key) + len(value) + 4 for key, value in scope.get("headers", ())
        )
        if header_bytes > MAX_HEADER_BYTES:
            raise ServiceError(431, f"request headers exceed {MAX_HEADER_BYTES} bytes")
        path: str = scope.get("path", "")
        api = path == API_PREFIX or path.startswith(API_PREFIX + "/")
        if api:
            self.authenticate(path, _header(scope, b"authorization"))

        length = _content_length(scope)
        if not _declares_body(scope):
            return None
        content_type = _header(scope, b"content-type")
        if api and content_type is not None and not is_json_media_type(content_type):
            raise ServiceError(415, f"request body must be application/json, not {content_type!r}")
        if length is not None and length > self.max_body_bytes:
            raise ServiceError(413, self._too_large())
        body = await self._read_body(receive)
        if nested_deeper_than(body, MAX_JSON_DEPTH):
            raise ServiceError(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return body

    def _too_large(self) -> str:
        return f"request body exceeds {self.max_body_bytes} bytes"

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, counted while it arrives.

        Raises:
            ServiceError: 413 past the size limit, 408 past the time limit.
            _ClientGone: the client disconnected.
        """
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_read_timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except asyncio.TimeoutError:
                raise ServiceError(
                    408, f"request body not received within {self.body_read_timeout_s:g} s"
                ) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ServiceError(413, self._too_large())
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered body once, then waits on the real one."""
    sent = False

    async def replay() -> ASGIMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
