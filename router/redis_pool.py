"""The Redis connection pool every gateway and worker process uses.

Two things redis-py's own pool does not do:

- No per-checkout socket probe. redis-py 5 (the series arq allows) checks every connection it
  hands out by reading the socket under a zero timeout: a cancelled read per command, which cost
  a third of the intake path's time (bench/RESULTS.md). The same check is done here
  synchronously, on what the event loop has already buffered: a connection with unread data, or
  closed by the server, is reconnected.
- Redis Cluster, for a desk whose keys share one hash tag (``GATEWAY_REDIS_PREFIX={desk}:``,
  see README "Scaling out"). Every key of a desk lives in one slot, so every script and MULTI
  stays whole on one node and arq (which has no cluster client) works unchanged. The pool asks
  the node in ``REDIS_URL`` which master serves that slot (``CLUSTER SLOTS``) and connects
  there; when the slot moves (a failover, a resharding) the first ``MOVED`` reply repoints it,
  and when the master is gone it asks the other nodes it has seen. A plain Redis (``INFO
  cluster`` says ``cluster_enabled:0``) is used as is.

Redis Sentinel (``REDIS_URL=redis+sentinel://host:26379,host:26379/service``) is redis-py's own
Sentinel pool with the same checkout check.

Every connection packs its commands with hiredis's C packer: redis-py's asyncio connection
packs in Python (encoding each argument through isinstance checks), which was about a fifth
of the worker's CPU in a profile (bench/RESULTS.md, issue 21); its synchronous client already
uses hiredis for this. Replies are parsed by hiredis too (redis-py picks it when installed).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any
from urllib.parse import unquote

from hiredis import pack_command as hiredis_pack

from redis.asyncio import ConnectionPool, Redis
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError
from redis.exceptions import (AskError, BusyLoadingError, ClusterDownError, MasterDownError, MovedError, ReadOnlyError,
                              ResponseError, TryAgainError)
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("gateway.redis")


def hash_tag(prefix: str) -> str:
    """The ``{tag}`` of a key prefix, as Redis Cluster reads it ('' when there is none)."""
    start = prefix.find("{")
    end = prefix.find("}", start + 1) if start >= 0 else -1
    return prefix[start:end + 1] if start >= 0 and end > start + 1 else ""


# Redis's answers while a slot or a server changes hands, or while a server starts or is busy:
# the command was not executed, so the caller may run it again shortly. MOVED: the slot moved
# (the pool now points at the new master); UNBLOCKED: a blocking command (the worker's BLPOP)
# was ended because the server turned replica, or by CLIENT UNBLOCK; READONLY: written to a
# master that has just become a replica; MASTERDOWN: a replica lost its master; BUSY: a script
# runs long (never BUSYKEY, a real error).
REDIS_IN_TRANSITION = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS",
                       "UNBLOCKED", "BUSY")

# redis-py gives some of these replies a class of its own and drops the code from the text
# ("READONLY You can't write..." becomes ReadOnlyError("You can't write...")); the others are a
# ResponseError that starts with the code, or, inside a pipeline, is annotated "Command # n
# (...) of pipeline caused error: ('CODE ...',)" (or with double quotes when the text has an
# apostrophe); Redis 6 put a script's failed call after ": -CODE".
_TRANSITION_CLASSES: tuple[tuple[type[BaseException], str], ...] = (
    (ReadOnlyError, "READONLY"), (BusyLoadingError, "LOADING"), (TryAgainError, "TRYAGAIN"), (MovedError, "MOVED"),
    (AskError, "ASK"), (MasterDownError, "MASTERDOWN"), (ClusterDownError, "CLUSTERDOWN"))
_TRANSITION = re.compile(r"(?:^|: -)(" + "|".join(REDIS_IN_TRANSITION) + r")(?= |$|['\"])")
_PIPELINE = " of pipeline caused error: "


def transition_code(exc: BaseException) -> str:
    """The code of a Redis reply meaning "not now" ("READONLY", "UNBLOCKED", ...), or ''.
    Safe to log, unlike the reply's text (a pipeline's error quotes the command's arguments)."""
    for cls, code in _TRANSITION_CLASSES:
        if isinstance(exc, cls):
            return code
    if not isinstance(exc, ResponseError):
        return ""
    text = str(exc)
    if _PIPELINE in text:  # only the reply, never the quoted command (it holds customer text)
        text = text.rsplit(_PIPELINE, 1)[1].lstrip("(\"'")
    found = _TRANSITION.search(text)
    return found.group(1) if found is not None else ""


def redis_in_transition(exc: BaseException) -> bool:
    """An error reply saying the command was not run because the data is changing hands, a
    server is starting, or a blocking call was ended under it (also inside a pipeline)."""
    return bool(transition_code(exc))


def redis_unavailable(exc: BaseException) -> bool:
    """Redis unreachable (refused, reset, closed mid-answer, timed out, still loading its data),
    or in transition: try again shortly."""
    return (isinstance(exc, (RedisConnectionError, RedisTimeoutError, ConnectionError, EOFError))
            or redis_in_transition(exc))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _moved_to(exc: ResponseError) -> tuple[str, int] | None:
    """('host', port) of a ``MOVED <slot> <host>:<port>`` reply."""
    parts = str(exc).split()
    if len(parts) == 3 and parts[0] == "MOVED" and ":" in parts[2]:
        host, _, port = parts[2].rpartition(":")
        return host, int(port)
    return None


class ClusterPrefixError(RuntimeError):
    """The prefix has no hash tag, so a desk's keys would be spread over the cluster's slots."""


class _SlotConnection:
    """Mixed into the pool's connection class: tells the pool where a ``MOVED`` reply says the
    desk's slot now lives."""

    pool: "BufferCheckConnectionPool | None" = None

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except ResponseError as exc:
            where = _moved_to(exc)
            if where is not None and self.pool is not None:
                self.pool.repoint(*where, reason="MOVED")
            raise


class _HiredisPacking:
    """Mixed into the pool's connection class: a command is packed by hiredis (C) instead of
    redis-py's asyncio connection's Python packer; the same bytes, the same errors."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # a command name given with its first arguments ('CONFIG GET') is sent as separate words
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        try:
            return [hiredis_pack(args)]
        except TypeError as exc:  # a bool, None, ...: what redis-py's encoder refuses too
            raise DataError(str(exc)) from None


def _packing(base: type) -> type:
    return base if issubclass(base, _HiredisPacking) else type(base.__name__, (_HiredisPacking, base), {})


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


async def _ensure_fresh(connection: AbstractConnection) -> None:
    await connection.connect()
    if _has_stale_data(connection):
        await connection.disconnect()
        await connection.connect()


class BufferCheckConnectionPool(ConnectionPool):
    def __init__(self, *args: Any, follow_slot_of: str = "", **kwargs: Any) -> None:
        """``follow_slot_of``: a key (the desk's prefix) whose Redis Cluster slot this pool
        follows; '' = talk to the configured server only."""
        base = kwargs.get("connection_class", Connection)
        if not issubclass(base, Connection):  # a Unix socket: one server, no cluster
            follow_slot_of = ""
        if follow_slot_of:  # Connection or SSLConnection, taught to report MOVED
            kwargs["connection_class"] = type("SlotConnection", (_SlotConnection, base), {"pool": self})
        kwargs["connection_class"] = _packing(kwargs.get("connection_class", Connection))
        super().__init__(*args, **kwargs)
        self.prefix = follow_slot_of
        self.slot = key_slot(follow_slot_of.encode()) if follow_slot_of else None
        self._routed = not follow_slot_of
        self._route_lock = asyncio.Lock()
        self.cluster_nodes: list[tuple[str, int]] = []
        if follow_slot_of:
            self.cluster_nodes.append((self.connection_kwargs.get("host", "localhost"),
                                       int(self.connection_kwargs.get("port", 6379))))

    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        if not self._routed:
            await self.route()
        try:
            return await super().get_connection(*args, **kwargs)
        except (RedisConnectionError, OSError):
            if self.slot is None or not self.cluster_nodes:
                raise
            await self.route(force=True)  # the master may have died: ask the others who serves now
            return await super().get_connection(*args, **kwargs)

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        target = (self.connection_kwargs.get("host"), self.connection_kwargs.get("port"))
        current = (getattr(connection, "host", None), getattr(connection, "port", None))
        if self.slot is not None and current != target:  # made before the slot moved
            await connection.disconnect()
            connection.host, connection.port = target  # type: ignore[attr-defined]
        await _ensure_fresh(connection)

    def repoint(self, host: str, port: int, *, reason: str) -> None:
        """Send new connections (and old ones at their next checkout) to ``host:port``."""
        if (self.connection_kwargs.get("host"), self.connection_kwargs.get("port")) != (host, port):
            log.log(logging.WARNING if self._routed else logging.INFO,
                     "redis cluster: slot %s served by %s:%s (%s)", self.slot, host, port, reason)
            self.connection_kwargs["host"], self.connection_kwargs["port"] = host, port
        if (host, port) not in self.cluster_nodes:
            self.cluster_nodes.append((host, port))
        self._routed = True

    async def route(self, *, force: bool = False) -> None:
        """Find the master serving the slot, asking each known node in turn."""
        async with self._route_lock:
            if self._routed and not force:
                return
            last: Exception | None = None
            for host, port in list(self.cluster_nodes):
                options = {k: v for k, v in self.connection_kwargs.items() if k not in ("host", "port")}
                probe = Redis(host=host, port=port, single_connection_client=True, **options)
                try:
                    info = await probe.execute_command("INFO", "cluster")
                    if not (info or {}).get("cluster_enabled"):
                        self.slot, self._routed = None, True  # a plain Redis: nothing to follow
                        return
                    if not hash_tag(self.prefix):
                        raise ClusterPrefixError(
                            f"REDIS_URL is a Redis Cluster node: GATEWAY_REDIS_PREFIX ({self.prefix!r}) needs a "
                            "hash tag such as '{cg}:' so that a desk's keys share one slot")
                    owner = None
                    for start, end, *nodes in await probe.execute_command("CLUSTER", "SLOTS"):
                        for node in nodes:  # every node is someone to ask next time
                            address = (_text(node[0]) or host, int(node[1]))
                            if address not in self.cluster_nodes:
                                self.cluster_nodes.append(address)
                        if int(start) <= self.slot <= int(end):  # type: ignore[operator]
                            owner = (_text(nodes[0][0]) or host, int(nodes[0][1]))  # the master comes first
                    if owner is not None:
                        self.repoint(*owner, reason="CLUSTER SLOTS")
                        return
                    last = RedisConnectionError(f"no master serves slot {self.slot} yet")
                except (RedisConnectionError, OSError, ResponseError) as exc:
                    last = exc
                finally:
                    await probe.aclose()
            raise RedisConnectionError(f"redis cluster: cannot route slot {self.slot}: {last}")


class BufferCheckSentinelPool(SentinelConnectionPool):
    """redis-py's Sentinel pool (asks the sentinels for the master on every new connection, and
    drops a connection whose server turned replica), with the same cheap checkout check."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_class = _packing(self.connection_class)

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        await _ensure_fresh(connection)


SENTINEL_SCHEME = "redis+sentinel"


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, str | None, str | None]:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`` → (sentinels,
    service name, db, username, password). The password is the master's and its replicas'."""
    rest = url[len(SENTINEL_SCHEME) + 3:]
    auth, _, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not hosts or not parts:
        raise ValueError("REDIS_URL: redis+sentinel://host:port[,host:port]/service_name[/db]")
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        sentinels.append((host or item, int(port) if host else 26379))
    username, _, password = auth.partition(":") if ":" in auth else ("", "", auth)
    return (sentinels, unquote(parts[0]), int(parts[1]) if len(parts) > 1 else 0,
            unquote(username) or None, unquote(password) or None)


def make_pool(url: str, *, follow_slot_of: str = "", **options: Any) -> ConnectionPool:
    """The pool for ``REDIS_URL``: a Redis, a Redis Cluster node (following ``follow_slot_of``'s
    slot), or ``redis+sentinel://`` sentinels naming the master."""
    if url.startswith(SENTINEL_SCHEME + "://"):
        sentinels, service, db, username, password = parse_sentinel_url(url)
        timeouts = {k: v for k, v in options.items() if k in ("socket_connect_timeout", "socket_keepalive")}
        manager = Sentinel(sentinels, sentinel_kwargs=timeouts)  # sentinels without a password of their own
        return BufferCheckSentinelPool(service, manager, db=db, username=username, password=password, **options)
    if url.startswith("unix:"):  # (keep-alive is TCP's; a unix socket's connection takes no such option)
        options.pop("socket_keepalive", None)
    return BufferCheckConnectionPool.from_url(url, follow_slot_of=follow_slot_of, **options)


def redis_client(url: str, *, follow_slot_of: str = "", **kwargs: Any) -> Redis:
    """One pool per process. A connect timeout makes a dead Redis answer 503 at once; there is no
    per-read timeout, because redis-py implements it with a task per read (a fifth of the
    worker's time), and keep-alive finds a silently dead peer. ``follow_slot_of`` (the key
    prefix) makes the pool follow that key's slot on a Redis Cluster."""
    options: dict[str, Any] = {"socket_connect_timeout": 2, "socket_keepalive": True, "max_connections": 200}
    options.update(kwargs)
    return Redis(connection_pool=make_pool(url, follow_slot_of=follow_slot_of, **options))


async def route_now(client: Redis) -> None:
    """At start-up: find the desk's cluster node now, so that a prefix without a hash tag stops
    the process with a clear message instead of failing its first request. A Redis that is not
    up yet is left to the first command (the gateway answers 503 until then)."""
    pool = client.connection_pool
    if isinstance(pool, BufferCheckConnectionPool) and pool.slot is not None:
        try:
            await pool.route()
        except RedisConnectionError:
            pass


__all__ = ["make_pool", "parse_sentinel_url", "route_now", "BufferCheckConnectionPool", "ClusterPrefixError", "hash_tag", "redis_client", "redis_in_transition", "redis_unavailable", "transition_code"]
