"""The worker and the HTTP server settle their heap once started (router/heap.py): what start-up
built is frozen out of the collector's walks, and the first generation is collected less often.
Checked in processes of their own, started as in production: freezing is for a process's entry
point only, never for this test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from router.heap import FIRST_GENERATION
from tests.conftest import RESTARTED_WORKER_ENV, ROOT, make_env
from tests.desk import stop_processes, wait_until


def test_the_http_servers_entry_module_settles_the_heap(redis_url: str, prefix: str, tmp_path: Path) -> None:
    env = {**os.environ, **make_env(redis_url, prefix, tmp_path / "var")}
    out = subprocess.run(
        [sys.executable, "-c", ("import gc, json, gateway.asgi; "
                                "print(json.dumps([gc.get_freeze_count(), gc.get_threshold()[0]]))")],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    frozen, first = json.loads(out.stdout.strip().splitlines()[-1])
    assert frozen > 10_000  # the modules and the app
    assert first == FIRST_GENERATION


def test_a_started_worker_settles_its_heap_after_its_start_up(redis_url: str, prefix: str, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {**os.environ, **make_env(redis_url, prefix, tmp_path / "var"), **RESTARTED_WORKER_ENV,
           "GATEWAY_LOG_LEVEL": "INFO", "GATEWAY_LOG_FORMAT": "json"}
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                                stdout=sink, stderr=subprocess.STDOUT)
    try:
        def settled() -> list[str]:
            assert proc.poll() is None, log.read_text()
            return [line for line in log.read_text().splitlines() if "heap settled" in line]

        lines = wait_until(settled, timeout=60)
        order = [json.loads(line)["msg"] for line in log.read_text().splitlines()
                 if line.startswith("{") and line.endswith("}")]  # (complete lines: it is still writing)
        started = next(i for i, m in enumerate(order) if m.startswith("worker ") and m.endswith(" started"))
        assert started < next(i for i, m in enumerate(order) if m.startswith("heap settled"))
        assert f"first generation every {FIRST_GENERATION}" in lines[0]
    finally:
        stop_processes(proc)
