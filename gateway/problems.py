"""Errors as RFC 9457 problem details: a stable ``code``, a human ``detail``, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError as RedisResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from router.redis_pool import redis_in_transition, transition_code
from plugins.problems import ProblemError, problem_response
from router.store import Conflict, NotFound

log = logging.getLogger("gateway.http")

def _on_problem(_: Request, exc: ProblemError) -> Response[bytes]:
    return problem_response(
        exc.status, exc.code, exc.detail, title=exc.title, field=exc.field, headers=exc.headers, extra=exc.extra
    )


def _on_http(_: Request, exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    if isinstance(exc, ValidationException):
        return problem_response(400, "invalid_request", str(exc.detail))
    code = {
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "payload_too_large",
        415: "unsupported_media_type",
        429: "rate_limited",
    }.get(status, "http_error")
    if isinstance(exc, NotFoundException):
        code = "not_found"
    headers = {k: v for k, v in (exc.headers or {}).items()}
    return problem_response(status, code, str(exc.detail), headers=headers)


def _on_not_found(_: Request, exc: NotFound) -> Response[bytes]:
    return problem_response(404, exc.code, str(exc))


def _on_conflict(_: Request, exc: Conflict) -> Response[bytes]:
    return problem_response(409, exc.code, str(exc))


def _on_redis_down(_: Request, exc: Exception) -> Response[bytes]:
    log.error("storage unavailable: %s", type(exc).__name__)
    return problem_response(
        503, "storage_unavailable", "Storage is unreachable; nothing was accepted. Retry later.",
        headers={"Retry-After": "5"},
    )


def _on_redis_error(request: Request, exc: RedisResponseError) -> Response[bytes]:
    if redis_in_transition(exc):
        log.warning("storage in transition: %s", transition_code(exc))  # the code, never the command
        return problem_response(
            503, "storage_unavailable", "Storage is changing hands; nothing was accepted. Retry shortly.",
            headers={"Retry-After": "1"},
        )
    return _on_unexpected(request, exc)


def _on_unexpected(_: Request, exc: Exception) -> Response[bytes]:
    log.exception("unhandled error: %s", type(exc).__name__)
    return problem_response(500, "internal_error", "Something went wrong on our side; it has been logged.")


exception_handlers: dict[Any, Any] = {
    ProblemError: _on_problem,
    HTTPException: _on_http,
    NotFound: _on_not_found,
    Conflict: _on_conflict,
    RedisConnectionError: _on_redis_down,
    RedisTimeoutError: _on_redis_down,
    RedisResponseError: _on_redis_error,
    OSError: _on_redis_down,
    Exception: _on_unexpected,
}


def body_limit_middleware(max_bytes: int) -> Any:
    """ASGI middleware: a request whose Content-Length is over ``max_bytes`` is refused with 413
    before any handler runs, whether or not the route reads a body (routes that read one also
    refuse an over-long chunked body as they read it)."""
    import json

    def factory(app: Any) -> Any:
        async def middleware(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                for name, value in scope.get("headers", ()):
                    if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                        body = json.dumps({
                            "type": "https://complaint-gateway.dev/problems/payload-too-large",
                            "title": "Payload too large", "status": 413, "code": "payload_too_large",
                            "detail": f"The body is larger than {max_bytes} bytes."}).encode()
                        await send({"type": "http.response.start", "status": 413, "headers": [
                            (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
                        await send({"type": "http.response.body", "body": body})
                        return
            await app(scope, receive, send)

        return middleware

    return factory
