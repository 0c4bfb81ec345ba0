"""The gateway on Redis Sentinel (a master, a replica, a Sentinel, started here), through
``REDIS_URL=redis+sentinel://…``: the master is SIGKILLed in the middle of the traffic, the
Sentinel promotes the replica, and with ``GATEWAY_REDIS_WAIT_REPLICAS=1`` every message the
gateway acknowledged is on the new master and becomes exactly one complaint."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from litestar.testing import AsyncTestClient

from gateway.app import create_app
from gateway.settings import load_settings
from tests.conftest import make_env
from tests.redisha import (FAILOVER_BOUND_S, RetryingChannel, complaints_per_message, local_sentinel, poll,
                           worker_processes)  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


async def test_master_killed_the_sentinel_promotes_the_replica_and_nothing_acknowledged_is_lost(tmp_path, worker_processes):
    with local_sentinel(tmp_path / "ha") as ha:
        prefix = f"s{uuid.uuid4().hex[:8]}:"
        (tmp_path / "plugins.toml").write_text("[plugins.app]\nenabled = true\n")
        env = make_env(ha.url, prefix, tmp_path / "var", GATEWAY_PLUGINS=str(tmp_path / "plugins.toml"),
                       GATEWAY_CONTACT_RATE_PER_MINUTE="0", GATEWAY_REDIS_WAIT_REPLICAS="1",
                       GATEWAY_REDIS_WAIT_MS="300")
        old_master = ha.master
        worker = worker_processes(env)  # works through the failover, finding the master through the Sentinel
        async with AsyncTestClient(app=create_app(load_settings(env)), raise_server_exceptions=False) as client:
            channel = RetryingChannel(client)
            until = time.monotonic() + 3 * FAILOVER_BOUND_S
            for n in range(20):
                await channel.send(n, until)
            ha.kill(old_master)

            def bring_back() -> None:  # the old master returns once the Sentinel has promoted the replica
                poll(lambda: ha.current_master() == ha.replica, "the Sentinel promoted the replica")
                ha.start(old_master)  # the Sentinel turns it into the new master's replica

            back = asyncio.create_task(asyncio.to_thread(bring_back))
            for n in range(20, 50):
                await channel.send(n, until)
            await back
            assert len(channel.acked) == 50, f"not all acknowledged in time: {channel.answers}"

        assert ha.current_master() == ha.replica
        r = ha.client(ha.replica)
        for n, mid in channel.acked.items():
            assert r.hget(f"{prefix}msg:{mid}", "status") is not None, f"acknowledged message {n} lost"

        def all_done() -> bool:
            return all(r.hget(f"{prefix}msg:{mid}", "status") == b"processed" for mid in channel.acked.values())

        await asyncio.to_thread(worker.wait_until, all_done)  # it never exited
        assert len(set(channel.acked.values())) == 50
        count, taken = complaints_per_message(r, prefix)
        assert count == 50  # fifty customers, fifty complaints: none lost
        assert sorted(taken) == sorted(channel.acked.values()) and set(taken.values()) == {1}  # none made twice
        assert channel.answers["not_replicated"] + channel.answers["storage_unavailable"] > 0
        print(f"answers while the master died and came back: {dict(channel.answers)}")
