"""A route answered without the web framework: for the one or two paths that carry every
customer message (the payment app's ``POST /v1/messages``), where the framework's own work per
request (routing, middleware, request and response objects, the handler's signature) costs more
than the route's.

A plugin offers one beside its ordinary route (``RouteMount.direct``, keyed ``"POST /v1/messages"``):
``async def handler(request: DirectRequest) -> DirectResponse``. The gateway sends a request there
only when it is plain: that method and exact path, a ``Content-Length`` within the body limit and
no other transfer coding; any other request (chunked, too large, a path with a trailing slash)
goes to the ordinary route, which must answer the same. The ordinary route's ``opt["roles"]``
are checked first (``request.principal``: the caller; ``None`` for a route without roles, such as
a webhook, which checks its signature itself). A ``ProblemError`` or any other exception the
handler raises is answered by the ordinary route's exception handlers.

Internal: a plugin imports these from ``plugins.kit``; the layout here may change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from plugins.auth import Principal
from plugins.requests import header, too_large


@dataclass
class DirectResponse:
    """What a direct route answers: ``body`` already encoded."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


class ClientGone(Exception):
    """The client went away before its whole body arrived: nothing to answer."""


class DirectRequest:
    """One request to a direct route: its ASGI scope, its headers, its body and its caller
    (``principal``: admitted by the ordinary route's roles; ``None`` for a route without roles)."""

    __slots__ = ("scope", "_receive", "principal")

    def __init__(self, scope: Any, receive: Callable[[], Awaitable[Any]], principal: Principal | None) -> None:
        self.scope = scope
        self._receive = receive
        self.principal = principal

    def header(self, name: bytes) -> str | None:
        """The first value of header ``name`` (lower case), as ``plugins.requests.header``."""
        return header(self.scope, name)

    async def body(self, limit: int) -> bytes:
        """The whole body; 413 once it is over ``limit`` bytes (as ``plugins.requests.read_body``)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)


DirectHandler = Callable[[DirectRequest], Awaitable[DirectResponse]]

__all__ = ["ClientGone", "DirectHandler", "DirectRequest", "DirectResponse"]
