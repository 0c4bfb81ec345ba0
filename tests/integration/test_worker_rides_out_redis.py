"""A worker keeps going whatever Redis answers while it fails over or restarts.

The worker waits for work in a ``BLPOP`` on its wake-up list. When the Redis it talks to turns
replica (a Cluster or Sentinel failover), Redis ends every blocked command with ``UNBLOCKED
force unblock from blocking operation, instance state changed (master -> replica?)``; ``CLIENT
UNBLOCK <id> ERROR`` ends one the same way. Both are done here for real, on a real Redis, and the
worker must still be there afterwards and take the next message.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from gateway.testkit import cleanup_prefix
from router.worker import create_worker
from tests.conftest import APP, app_plugins, eventually, gateway_client, make_env
from tests.redisha import RedisNodes, distinct_ports
from gateway.settings import load_settings

pytestmark = pytest.mark.integration


def local_addresses(worker: Any) -> set[str]:
    """"host:port" of every connection the worker's Redis pool holds (as CLIENT LIST names them)."""
    if worker._pool is None:  # main() has not made it yet
        return set()
    pool = worker._pool.connection_pool
    found = set()
    for conn in [*pool._in_use_connections, *pool._available_connections]:
        writer = getattr(conn, "_writer", None)
        if writer is not None and writer.get_extra_info("sockname"):
            host, port = writer.get_extra_info("sockname")[:2]
            found.add(f"{host}:{port}")
    return found


async def blocked_wake_up(admin: aioredis.Redis, worker: Any) -> int | None:
    """The client id of the worker's BLPOP on its wake-up list, while it is blocked there."""
    mine = local_addresses(worker)
    for client in await admin.client_list():
        if client.get("cmd") == "blpop" and client.get("addr") in mine and client.get("flags", "").find("b") >= 0:
            return int(client["id"])
    return None


async def processed(client: Any, mid: str) -> bool:
    state = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
    return state["status"] == "processed"


async def send(client: Any, user: str) -> str:
    resp = await client.post("/v1/messages", json={"user_id": user, "text": "my card payment was declined"},
                             headers=APP)
    assert resp.status_code == 202, resp.text
    return resp.json()["message_id"]


async def test_a_wake_up_blpop_ended_by_client_unblock_error_does_not_end_the_worker(settings):
    # the BLPOP waits up to 30 s for a wake-up: only the unblock ends it within the test
    settings = replace(settings, worker_poll_seconds=30.0)
    plugins = app_plugins()
    worker = create_worker(settings, handle_signals=False, plugins=plugins)
    running = asyncio.create_task(worker.main())
    admin = aioredis.from_url(settings.redis_url, decode_responses=True)
    try:
        first = await eventually(lambda: blocked_wake_up(admin, worker), timeout=30)
        # what redis-py makes of it: a ResponseError "UNBLOCKED client unblocked via CLIENT UNBLOCK"
        assert await admin.client_unblock(first, error=True)
        # back in a BLPOP of its own (it polls again after a second), or ended: whichever comes first
        await eventually(lambda: _either(running, blocked_wake_up(admin, worker)), timeout=30)
        assert not running.done(), f"the worker ended: {running.exception()!r}"
        async with gateway_client(settings, plugins) as client:
            mid = await send(client, "unblocked-1")
            await eventually(lambda: _either(running, processed(client, mid)), timeout=30)
            assert not running.done(), f"the worker ended: {running.exception()!r}"
            assert await processed(client, mid)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)  # jobs cut short by the disruption end as they may
        await admin.aclose()


async def _either(task: asyncio.Task, check: Any) -> Any:
    """The check's answer, or ("ended",) once ``task`` has finished (so a poll stops at once)."""
    if task.done():
        check.close()
        return ("ended",)
    return await check


@pytest.fixture
def own_redis(tmp_path):
    """Two redis-servers of this test's own: ``main`` (the worker's) and ``other``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed (make test installs it)")
    nodes = RedisNodes(tmp_path / "nodes", binary)
    main, other = distinct_ports(2)
    nodes.spawn(main)
    nodes.spawn(other)
    try:
        yield nodes, main, other
    finally:
        nodes.kill_all()


async def test_the_worker_rides_out_its_redis_turning_replica_and_back(own_redis, tmp_path):
    """``REPLICAOF`` on the worker's Redis: its BLPOP ends with "UNBLOCKED ... (master ->
    replica?)", its writes meet READONLY while it is a replica, and once it is a master again
    the same worker process takes the next message."""
    nodes, main, other = own_redis
    url = f"redis://127.0.0.1:{main}/0"
    settings = replace(load_settings(make_env(url, f"t{uuid.uuid4().hex[:8]}:", tmp_path / "var")),
                       worker_poll_seconds=30.0)
    plugins = app_plugins()
    worker = create_worker(settings, handle_signals=False, plugins=plugins)
    running = asyncio.create_task(worker.main())
    admin = aioredis.from_url(url, decode_responses=True)
    try:
        await eventually(lambda: blocked_wake_up(admin, worker), timeout=30)
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(other))  # the failover's first half

        async def in_sync() -> bool:
            info = await admin.info("replication")
            return info.get("master_link_status") == "up"

        await eventually(lambda: _either(running, in_sync()), timeout=30)
        assert not running.done(), f"the worker ended when its Redis turned replica: {running.exception()!r}"
        # while it is a replica, the worker's BLPOP meets READONLY (it is a write command)
        await eventually(lambda: _either(running, _readonly_seen(nodes, main)), timeout=30)
        assert not running.done(), f"the worker ended on READONLY: {running.exception()!r}"
        await admin.execute_command("REPLICAOF", "NO", "ONE")  # promoted again
        async with gateway_client(settings, plugins) as client:
            mid = await send(client, "promoted-1")
            await eventually(lambda: _either(running, processed(client, mid)), timeout=30)
            assert not running.done(), f"the worker ended: {running.exception()!r}"
            assert await processed(client, mid)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)  # jobs cut short by the disruption end as they may
        await admin.aclose()
        cleanup_prefix(url, settings.redis_prefix)


async def _readonly_seen(nodes: RedisNodes, port: int) -> bool:
    """Redis counts the error replies it gave by code (INFO errorstats)."""
    stats = await asyncio.to_thread(nodes.client(port).info, "errorstats")
    return stats.get("errorstat_READONLY", {}).get("count", 0) > 0
