"""The gateway's HTTP app: Litestar, with the plugins' direct routes (``plugins.direct``) answered
before it for plain requests.

A message from the payment app spends more of the gateway's CPU in the framework (routing, the
middleware stack, request and response objects, the handler's signature: ~0.14 ms a request on
the 2-core machine, bench/cost.py --bare) than in its own handling. A direct route skips that
part: same handler steps, same answers, same exception handlers, same response bytes. Any
request that is not plain goes to the framework's route as before.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from litestar import Litestar, Request
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.response.base import ASGIResponse

from plugins.auth import admit
from plugins.direct import ClientGone, DirectHandler, DirectRequest


class _Direct(NamedTuple):
    handler: DirectHandler
    roles: frozenset[str] | None  # the ordinary route's ``opt["roles"]``: checked before the handler
    on_error: dict[Any, Any]  # the ordinary route's exception handlers (app, router and route)


class GatewayApp(Litestar):
    """``Litestar`` whose ``direct`` routes (``(METHOD, /path)`` -> the handler, with what the
    ordinary route of the same method and path guards and answers errors with) answer plain
    requests (``plain``) first."""

    direct: dict[tuple[str, str], _Direct] = {}
    max_body_bytes = 0

    def use_direct(self, routes: dict[str, DirectHandler], max_body_bytes: int) -> None:
        """Answer ``routes`` (``"METHOD /path"`` -> handler) directly from now on; each must be beside
        an ordinary route of the same method and exact path (no path parameters), which answers
        the requests that are not plain and whose roles and exception handlers the direct route
        takes."""
        ordinary = self.route_handler_method_map
        direct = {}
        for key, handler in routes.items():
            method, _, path = key.partition(" ")
            method = method.upper()
            if "{" in path:
                raise ValueError(f"direct route {key!r}: a direct route's path has no parameters")
            route = ordinary.get(path, {}).get(method)
            if route is None:
                raise ValueError(f"direct route {key!r} has no ordinary route of the same method and path")
            roles = route.opt.get("roles")
            direct[(method, path)] = _Direct(handler, frozenset(roles) if roles is not None else None,
                                             route.resolve_exception_handlers())
        self.direct, self.max_body_bytes = direct, max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.direct:
            route = self.direct.get((scope["method"], scope["path"]))
            if route is not None and plain(scope, self.max_body_bytes):
                scope["app"] = scope["litestar_app"] = self  # (as Litestar's own __call__ sets them)
                scope.setdefault("state", {})
                await self._answer_direct(route, scope, receive, self._wrap_send(send=send, scope=scope))
                return
        await super().__call__(scope, receive, send)

    async def _answer_direct(self, route: _Direct, scope: Any, receive: Any, send: Any) -> None:
        try:  # the role check first, as the ordinary route's guard
            principal = admit(self.state.authenticator, scope, route.roles) if route.roles is not None else None
            answer = await route.handler(DirectRequest(scope, receive, principal))
            response = ASGIResponse(body=answer.body, status_code=answer.status, media_type=answer.media_type,
                                    headers=answer.headers)
        except ClientGone:
            return
        except Exception as exc:  # answered as the ordinary route would: by its exception handlers
            on_error = _handler_for(route.on_error, exc)
            if on_error is None:
                raise
            request: Request[Any, Any, Any] = Request(scope, receive)
            response = on_error(request, exc).to_asgi_response(None, request)
        await response(scope, receive, send)


def own_direct(plugin_name: str, mount: Any, prefix: str) -> dict[str, DirectHandler]:
    """A plugin's direct routes (``mount.direct``), each checked to be beside a handler of the same
    mount, of the same method and path (its ordinary route; mounted under ``prefix``)."""
    own = {(method, _joined(prefix, path)) for handler in mount.handlers if isinstance(handler, HTTPRouteHandler)
           for path in handler.paths for method in handler.http_methods}
    for key in mount.direct:
        method, _, path = key.partition(" ")
        if (method.upper(), path) not in own:
            raise ValueError(f"plugin {plugin_name}: direct route {key!r} is not beside a route of its own")
    return dict(mount.direct)


def _joined(prefix: str, path: str) -> str:
    return "/" + "/".join(part for part in f"{prefix}/{path}".split("/") if part)


def _handler_for(handlers: dict[Any, Any], exc: Exception) -> Any:
    """The exception handler Litestar would choose: by status code for an ``HTTPException``, else
    the first class of the exception's MRO that has one, else the 500 handler."""
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    found = next((handlers[kind] for kind in type(exc).__mro__ if kind in handlers), None)
    return found if found is not None or isinstance(exc, HTTPException) else handlers.get(500)


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
            if length is not None or not value.isdigit() or len(value) > 18:
                return False
            length = int(value)
        elif name == b"transfer-encoding":
            return False
    return length is not None and length <= max_body_bytes


__all__ = ["GatewayApp", "own_direct", "plain"]
