"""Redis killed (SIGKILL) and restarted with AOF `appendfsync always`: every message the gateway
acknowledged (202) is still there and becomes a complaint."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest
import redis as redis_sync
from msgspec.structs import replace

from tests.conftest import APP, SUPERVISOR, app_plugins, free_port, gateway_client, run_worker

pytestmark = pytest.mark.integration


def start_redis(port: int, directory) -> subprocess.Popen:
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)],
                            stdout=subprocess.DEVNULL)
    for _ in range(200):
        try:
            if redis_sync.Redis(port=port).ping():
                return proc
        except redis_sync.ConnectionError:
            time.sleep(0.02)
    raise AssertionError("redis-server did not start")


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
