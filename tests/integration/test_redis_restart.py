"""Redis killed (SIGKILL) and restarted with AOF `appendfsync always`: every message the gateway
acknowledged (202) is still there and becomes a complaint; a worker running through the restart
stays up and takes the next message."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess

import pytest
import redis as redis_sync
from msgspec.structs import replace

from router.worker import create_worker
from tests.conftest import APP, SUPERVISOR, app_plugins, eventually, free_port, gateway_client, run_worker
from tests.redisha import poll

pytestmark = pytest.mark.integration


def start_redis(port: int, directory) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)],
                            stdout=subprocess.DEVNULL)
    poll(redis_sync.Redis(port=port).ping, "redis-server answers", every=0.02)
    return proc


async def test_acknowledged_messages_survive_a_redis_crash(settings, tmp_path):
    port = free_port()
    proc = start_redis(port, tmp_path)
    own = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0", contact_rate_per_minute=0)
    plugins = app_plugins()
    acknowledged = []
    try:
        async with gateway_client(own, plugins) as client:
            for n in range(200):
                r = await client.post("/v1/messages", json={"user_id": f"crash{n}", "text": f"refund please #{n}"},
                                      headers=APP)
                assert r.status_code == 202
                acknowledged.append(r.json()["message_id"])
        proc.send_signal(signal.SIGKILL)  # no shutdown, no final fsync
        proc.wait()
        proc = start_redis(port, tmp_path)
        r = redis_sync.Redis(port=port)
        assert all(r.exists(f"{own.redis_prefix}msg:{mid}") for mid in acknowledged)
        assert r.zcard(f"{own.redis_prefix}pending") == 200
        async with gateway_client(own, plugins) as client:
            await run_worker(own, plugins)
            states = [(await client.get(f"/v1/messages/{mid}", headers=APP)).json()["status"] for mid in acknowledged]
            assert states == ["processed"] * 200
            listed = (await client.get("/v1/complaints", params={"limit": 200}, headers=SUPERVISOR)).json()["items"]
            assert len(listed) == 200
    finally:
        proc.terminate()
        proc.wait(10)


async def test_a_worker_running_through_a_redis_crash_and_restart_stays_up(settings, tmp_path):
    """The worker's Redis is SIGKILLed while it waits for work and comes back with its data: the
    same worker process (connection refused, reset, the data still loading) takes the next
    message."""
    port = free_port()
    proc = start_redis(port, tmp_path)
    own = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0", contact_rate_per_minute=0)
    plugins = app_plugins()
    worker = create_worker(own, handle_signals=False, plugins=plugins)
    running = asyncio.create_task(worker.main())
    admin = redis_sync.Redis(port=port)
    try:
        async with gateway_client(own, plugins) as client:
            async def taken(mid: str) -> bool:
                if running.done():
                    return True  # stop polling: the assertion below says why
                state = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
                return state.get("status") == "processed"

            async def send(user: str) -> str:
                r = await client.post("/v1/messages", json={"user_id": user, "text": "refund please"}, headers=APP)
                assert r.status_code == 202, r.text
                return r.json()["message_id"]

            first = await send("before-crash")
            await eventually(lambda: taken(first), timeout=60)
            assert not running.done(), f"the worker ended: {running.exception()!r}"
            await asyncio.to_thread(poll, lambda: admin.info("clients")["blocked_clients"] >= 1,
                                    "the worker waits for work")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc = await asyncio.to_thread(start_redis, port, tmp_path)
            after = await eventually(lambda: _accepted(client), timeout=60)
            await eventually(lambda: taken(after), timeout=60)
            assert not running.done(), f"the worker ended: {running.exception()!r}"
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)  # jobs cut short by the disruption end as they may
        proc.terminate()
        proc.wait(30)


async def _accepted(client) -> str | None:
    """A message taken by the gateway (once the restarted Redis answers), else None."""
    r = await client.post("/v1/messages", json={"user_id": "after-crash", "text": "refund please",
                                               "client_message_id": "after-crash"}, headers=APP)
    return r.json()["message_id"] if r.status_code in (200, 202) else None
