"""Who is calling: the roles a bearer credential stands for, and the guard every protected route
uses (``opt={"roles": [...]}`` on the handler). A channel that serves a public API path (the
payment app's ``/v1/messages``) guards it with these; the gateway checks the credentials
(``gateway/auth.py``'s ``Authenticator``, kept in ``app.state.authenticator``).

Internal: not part of the plugin kit (``plugins.kit``, the one stable module a plugin imports
from); the built-in channels that still use it are tied to this release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from plugins.problems import ProblemError
from plugins.requests import header

ROLE_APP = "app"
ROLE_AGENT = "agent"
ROLE_SUPERVISOR = "supervisor"


@dataclass(frozen=True)
class Principal:
    role: str
    id: str

    @property
    def actor(self) -> str:
        return f"{self.role}:{self.id}"


async def roles_guard(connection: ASGIConnection, handler: BaseRouteHandler) -> None:
    """Guard for every /v1 route: the handler's ``opt["roles"]`` lists who may call it."""
    principal = admit(connection.app.state.authenticator, connection.scope, handler.opt.get("roles", ()))
    connection.scope.setdefault("state", {})["principal"] = principal


def admit(authenticator: Any, scope: Any, allowed: Iterable[str]) -> Principal:
    """The caller of a request (``scope``: its ASGI scope), if its credential is one of the
    ``allowed`` roles; else the problem (401: no valid credential, 403: another role's).
    ``authenticator``: the gateway's (``gateway.auth.Authenticator``)."""
    principal: Principal = authenticator.principal(header(scope, b"authorization"))
    if principal.role not in allowed:
        raise ProblemError(403, "forbidden", f"A {principal.role} credential may not call this.")
    return principal


def principal_of(connection: ASGIConnection) -> Principal:
    return connection.scope["state"]["principal"]
