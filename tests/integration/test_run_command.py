"""`python -m gateway run` as `make run` starts it: embedded Redis with AOF under var/, dev
credentials printed, and a restart that keeps every case."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest
import redis

from tests.conftest import ROOT, free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs Debian's redis-server")]


def start_run(var_dir, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "REDIS_URL"))}
    env.update({"GATEWAY_VAR_DIR": str(var_dir), "GATEWAY_PLUGINS": str(ROOT / "plugins.toml")})
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(proc.stdout.read())


def stop_run(proc):
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_run_uses_embedded_redis_and_a_restart_keeps_cases(tmp_path):
    var_dir = tmp_path / "var"
    port = free_port()
    proc, base = start_run(var_dir, port)
    try:
        creds = json.loads((var_dir / "dev-credentials.json").read_text())
        app_key = creds["GATEWAY_APP_KEYS"].split(":", 1)[1]
        agent = creds["GATEWAY_AGENT_TOKENS"].split(",")[0].split(":", 1)[1]
        r = httpx.post(f"{base}/v1/messages", headers={"Authorization": f"Bearer {app_key}"},
                       json={"user_id": "u1", "text": "我被重复扣款了 ¥128.50"})
        assert r.status_code == 202
        mid = r.json()["message_id"]
        for _ in range(100):
            state = httpx.get(f"{base}/v1/messages/{mid}", headers={"Authorization": f"Bearer {app_key}"}).json()
            if state["status"] == "processed":
                break
            time.sleep(0.1)
        assert state["status"] == "processed"
        # the worker as started (GATEWAY_WORKER_NICE=idle is an opt-in: it slows routing, bench/RESULTS.md)
        children = {pid: open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
                    for pid in map(int, open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split())}
        worker = next(pid for pid, cmd in children.items() if b"worker" in cmd)
        server = next(pid for pid, cmd in children.items() if b"serve" in cmd)
        assert {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{worker}/task")} == {os.SCHED_OTHER}
        assert os.sched_getscheduler(server) == os.SCHED_OTHER
        # the embedded Redis's options (gateway/embedded_redis.py): durable, rewrites far apart,
        # expiry in short runs
        embedded = redis.Redis(port=int((var_dir / "redis" / "port").read_text()))
        try:
            config = {k: embedded.config_get(k)[k] for k in
                      ("appendonly", "appendfsync", "save", "auto-aof-rewrite-min-size", "hz")}
        finally:
            embedded.close()
        assert config == {"appendonly": "yes", "appendfsync": "always", "save": "",
                          "auto-aof-rewrite-min-size": str(256 * 1024 * 1024), "hz": "100"}
    finally:
        out = stop_run(proc)
    assert f"http://127.0.0.1:{port}" in out and app_key in out and "agent token" in out
    assert (var_dir / "redis" / "appendonlydir").exists()

    # stop the embedded Redis too: only the AOF on disk carries the case over
    from gateway.embedded_redis import stop_embedded_redis

    stop_embedded_redis(var_dir)
    time.sleep(0.5)
    proc, base = start_run(var_dir, port)
    try:
        complaint = httpx.get(f"{base}/v1/complaints/{state['complaint_id']}",
                              headers={"Authorization": f"Bearer {agent}"})
        assert complaint.status_code == 200
        assert complaint.json()["case_number"] == state["case_number"]
    finally:
        stop_run(proc)
        stop_embedded_redis(var_dir)
