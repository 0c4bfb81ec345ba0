"""A Redis connection pool without redis-py's per-checkout socket probe.

redis-py 5 (the series arq allows) checks every connection it hands out by reading the socket
under a zero timeout: a cancelled read per command, which cost a third of the intake path's
time (bench/RESULTS.md). The same check is done here synchronously, on what the event loop has
already buffered: a connection with unread data, or closed by the server, is reconnected.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import AbstractConnection


def _has_stale_data(connection: AbstractConnection) -> bool:
    parser: Any = getattr(connection, "_parser", None)
    stream: Any = getattr(parser, "_stream", None)
    if stream is None:
        return False
    reader: Any = getattr(parser, "_reader", None)
    if reader is not None and hasattr(reader, "gets") and reader.gets() not in (False, NOT_ENOUGH_DATA):
        return True  # a whole unread reply is already parsed
    buffered = getattr(stream, "_buffer", None)
    return bool(buffered) or stream.at_eof()


class BufferCheckConnectionPool(ConnectionPool):
    async def ensure_connection(self, connection: AbstractConnection) -> None:
        await connection.connect()
        if _has_stale_data(connection):
            await connection.disconnect()
            await connection.connect()


def redis_client(url: str, **kwargs: Any) -> Redis:
    """One pool per process. A connect timeout makes a dead Redis answer 503 at once; there is no
    per-read timeout, because redis-py implements it with a task per read (a fifth of the
    worker's time), and keep-alive finds a silently dead peer."""
    options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_keepalive": True, "max_connections": 200}
    options.update(kwargs)
    pool = BufferCheckConnectionPool.from_url(url, **options)
    return Redis(connection_pool=pool)
