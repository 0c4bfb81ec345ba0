"""The gateway's HTTP app: Litestar, with the plugins' direct routes (``plugins.direct``) answered
before it for plain requests.

A message from the payment app spends more of the gateway's CPU in the framework (routing, the
middleware stack, request and response objects, the handler's signature: ~0.14 ms a request on
the 2-core machine, bench/cost.py --bare) than in its own handling. A direct route skips that
part: same handler steps, same answers, same exception handlers, same response bytes. Any
request that is not plain goes to the framework's route as before.
"""

from __future__ import annotations

from typing import Any

from litestar import Litestar, Response
from litestar.response.base import ASGIResponse

from plugins.direct import ClientGone, DirectHandler, DirectRequest


class GatewayApp(Litestar):
    """``Litestar`` whose ``direct`` routes (``"METHOD /path"`` -> handler) answer plain requests
    (``plain``) first."""

    direct: dict[tuple[str, str], DirectHandler] = {}
    max_body_bytes = 0

    def use_direct(self, routes: dict[str, DirectHandler], max_body_bytes: int) -> None:
        """Answer ``routes`` directly from now on; each must be beside an ordinary route of the same
        method and path (which answers the requests that are not plain)."""
        ordinary = self.route_handler_method_map
        direct = {}
        for key, handler in routes.items():
            method, _, path = key.partition(" ")
            if method.upper() not in ordinary.get(path, {}):
                raise ValueError(f"direct route {key!r} has no ordinary route of the same method and path")
            direct[(method.upper(), path)] = handler
        self.direct, self.max_body_bytes = direct, max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.direct:
            handler = self.direct.get((scope["method"], scope["path"]))
            if handler is not None and plain(scope, self.max_body_bytes):
                await self._answer_direct(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _answer_direct(self, handler: DirectHandler, scope: Any, receive: Any, send: Any) -> None:
        try:
            answer = await handler(DirectRequest(scope, receive, self.state.authenticator))
            response = ASGIResponse(body=answer.body, status_code=answer.status, media_type=answer.media_type,
                                    headers=answer.headers)
        except ClientGone:
            return
        except Exception as exc:  # answered as the framework's route would: by our exception handlers
            response = self._problem(exc).to_asgi_response(None, None)  # type: ignore[arg-type]
        await response(scope, receive, send)

    def _problem(self, exc: Exception) -> Response[Any]:
        for kind in type(exc).__mro__:
            on_error = self.exception_handlers.get(kind)
            if on_error is not None:
                return on_error(None, exc)
        raise exc  # (none: an Exception handler is always registered)


def plain(scope: Any, max_body_bytes: int) -> bool:
    """A request a direct route may answer: its body's length declared (and within the limit),
    no other transfer coding, served at the root. Everything else is the framework's to answer
    (its own 413 for a declared length over the limit, its chunked body reading)."""
    if scope.get("root_path"):
        return False
    length = None
    for name, value in scope["headers"]:
        name = name.lower()
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return False
            length = int(value)
        elif name == b"transfer-encoding":
            return False
    return length is not None and length <= max_body_bytes


__all__ = ["GatewayApp", "plain"]
