"""``REDIS_URL=unix://...`` (README: a Redis on the same host through its socket): the gateway
takes a message and a worker makes it a complaint, both through the socket (a TCP-only option,
keep-alive, once stopped every worker at its first command there)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import redis as redis_sync
from msgspec.structs import replace

from tests.conftest import APP, app_plugins, gateway_client, run_worker
from tests.redisha import poll

pytestmark = pytest.mark.integration


async def test_gateway_and_worker_through_a_unix_socket(settings, tmp_path):
    sock = tmp_path / "redis.sock"
    proc = subprocess.Popen([shutil.which("redis-server"), "--port", "0", "--unixsocket", str(sock), "--save", "",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        poll(redis_sync.Redis(unix_socket_path=str(sock)).ping, "redis-server answers", every=0.02)
        own = replace(settings, redis_url=f"unix://{sock}?db=0")
        plugins = app_plugins()
        async with gateway_client(own, plugins) as client:
            r = await client.post("/v1/messages", json={"user_id": "sock1", "text": "charged twice, refund"},
                                  headers=APP)
            assert r.status_code == 202, r.text
            mid = r.json()["message_id"]
            await run_worker(own, plugins)
            state = (await client.get(f"/v1/messages/{mid}", headers=APP)).json()
            assert state["status"] == "processed" and state["complaint_id"]
    finally:
        proc.terminate()
        proc.wait(10)
