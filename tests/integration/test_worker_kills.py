"""Workers SIGKILLed again and again while messages flow: every acknowledged message becomes
exactly one complaint with one acknowledgement, and jobs orphaned by a killed worker are taken
up again (here within seconds: the job timeout is 3 s)."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time

import pytest
import redis as redis_sync

from router.store import decode_complaint
from tests.conftest import APP, RESTARTED_WORKER_ENV, ROOT, make_env

pytestmark = pytest.mark.integration
MESSAGES = 400


def test_killed_workers_lose_nothing_and_repeat_nothing(redis_url, prefix, tmp_path):
    (tmp_path / "plugins.toml").write_text("[plugins.app]\nenabled = true\n")
    env = make_env(redis_url, prefix, tmp_path / "var", GATEWAY_PLUGINS=str(tmp_path / "plugins.toml"),
                   GATEWAY_JOB_TIMEOUT_SECONDS="3", GATEWAY_CONTACT_RATE_PER_MINUTE="0", GATEWAY_LOG_LEVEL="WARNING")
    r = redis_sync.Redis.from_url(redis_url)

    def worker():
        return subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env={**env, **RESTARTED_WORKER_ENV}, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def send_all():
        from litestar.testing import AsyncTestClient

        from gateway.app import create_app
        from gateway.settings import load_settings

        ids = []
        async with AsyncTestClient(app=create_app(load_settings(env))) as client:
            for n in range(MESSAGES):
                resp = await client.post("/v1/messages", json={"user_id": f"kill{n}", "text": f"refund please {n}"},
                                         headers=APP)
                assert resp.status_code == 202
                ids.append(resp.json()["message_id"])
                if n % 50 == 0:
                    await asyncio.sleep(0.2)  # let the killing happen while messages flow
        return ids

    workers = [worker(), worker()]
    kills = 0
    rng = random.Random(3)
    try:
        import threading

        stop = threading.Event()

        def killer():
            nonlocal kills
            while not stop.is_set():
                time.sleep(rng.uniform(0.4, 0.9))
                i = rng.randrange(len(workers))
                workers[i].send_signal(signal.SIGKILL)
                workers[i].wait()
                workers[i] = worker()
                kills += 1

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        acknowledged = asyncio.run(send_all())
        time.sleep(2)
        stop.set()
        thread.join()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = sum(1 for mid in acknowledged if r.hget(f"{prefix}msg:{mid}", "status") == b"processed")
            if done == MESSAGES:
                break
            time.sleep(0.25)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(15)
    assert kills >= 4
    statuses = [r.hget(f"{prefix}msg:{mid}", "status") for mid in acknowledged]
    assert statuses.count(b"processed") == MESSAGES, f"{statuses.count(b'processed')} of {MESSAGES} processed"
    complaints = [decode_complaint(r.get(k)) for k in r.scan_iter(match=f"{prefix}complaint:*")]
    assert len(complaints) == MESSAGES  # exactly one each
    assert all(sum(1 for x in c.replies if x.kind == "ack") == 1 for c in complaints)
    assert len({c.case_number for c in complaints}) == MESSAGES
