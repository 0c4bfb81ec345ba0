"""Errors as RFC 9457 problem details: a stable ``code``, a human ``detail``, never a traceback.

``ProblemError`` is what any handler (a channel plugin's included) raises to answer one; the
gateway's exception handlers (gateway/problems.py) turn it and every other error into the JSON.

Internal: a plugin imports what it needs of this module from ``plugins.kit`` (the one stable
module); the layout here may change.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response


PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemError(Exception):
    """Raise anywhere in a handler to answer a problem-details response."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or _TITLES.get(status, "Error")
        self.field = field
        self.headers = headers or {}
        self.extra = extra or {}


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    412: "Precondition failed",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    *,
    title: str | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response[bytes]:
    body: dict[str, Any] = {
        "type": f"https://complaint-gateway.dev/problems/{code.replace('_', '-')}",
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if field:
        body["field"] = field
    if extra:
        body.update(extra)
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def field_from_msgspec_error(message: str) -> str | None:
    """msgspec says '... - at `$.amount.value`' or 'Object missing required field `user_id`';
    clients want 'amount.value' / 'user_id'."""
    path = ""
    marker = "at `$"
    if marker in message:
        path = message.split(marker, 1)[1].rstrip("`").lstrip(".")
    if message.startswith(("Object missing required field", "Object contains unknown field")):
        name = message.split("`")[1]
        path = f"{path}.{name}" if path else name
    return path or None
