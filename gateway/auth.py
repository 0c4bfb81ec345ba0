"""Who may call what: the app's key, agent and supervisor tokens, as ``Authorization: Bearer``.

Tokens are compared by their SHA-256 digest, so lookup time says nothing about a token's
characters.
"""

from __future__ import annotations

import hashlib

from plugins.auth import ROLE_AGENT, ROLE_APP, ROLE_SUPERVISOR, Principal, principal_of, roles_guard
from plugins.problems import ProblemError
from plugins.settings import Settings


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        for role, creds in (
            (ROLE_APP, settings.app_keys),
            (ROLE_AGENT, settings.agent_tokens),
            (ROLE_SUPERVISOR, settings.supervisor_tokens),
        ):
            for cred in creds:
                self._by_digest[_digest(cred.token)] = Principal(role, cred.principal)

    def principal(self, authorization: str | None) -> Principal:
        if not authorization:
            raise ProblemError(
                401, "credentials_missing", "Send 'Authorization: Bearer <key or token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(
                401, "credentials_malformed", "The Authorization header must be 'Bearer <key or token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        found = self._by_digest.get(_digest(token.strip()))
        if found is None:
            raise ProblemError(
                401, "credentials_invalid", "That key or token is not valid.",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return found


__all__ = ["Authenticator", "Principal", "ROLE_AGENT", "ROLE_APP", "ROLE_SUPERVISOR", "principal_of", "roles_guard"]
