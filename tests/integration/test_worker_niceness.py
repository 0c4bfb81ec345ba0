"""The worker can yield the CPU to a gateway on the same host: `python -m gateway worker` runs at
niceness GATEWAY_WORKER_NICE (0 by default: as started), and never lowers a niceness it was
started with (lowering needs privilege); ``GATEWAY_WORKER_NICE=idle`` puts every thread of it
under ``SCHED_IDLE``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import RESTARTED_WORKER_ENV, ROOT, make_env
from tests.desk import stop_processes, wait_until


def _niceness_of_a_running_worker(redis_url: str, prefix: str, var: Path, *, started_at: int = 0,
                                  policies: set[int] | None = None, **extra: str) -> int:
    env = {**os.environ, **make_env(redis_url, prefix, var), **RESTARTED_WORKER_ENV, **extra}
    command = [sys.executable, "-m", "gateway", "worker"]
    if started_at:
        command = ["nice", "-n", str(started_at), *command]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        r = redis.Redis.from_url(redis_url)
        wait_until(lambda: r.zcard(prefix + "workers"), timeout=60)  # its first heartbeat: started
        if policies is not None:  # (every thread's scheduling class: its threads inherit it, or were set)
            policies.update(os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{proc.pid}/task"))
        return os.getpriority(os.PRIO_PROCESS, proc.pid)
    finally:
        stop_processes(proc)
        r.delete(prefix + "workers")


@pytest.mark.skipif(os.getpriority(os.PRIO_PROCESS, 0) > 0, reason="the suite itself runs niced")
def test_the_worker_runs_at_its_niceness(redis_url: str, prefix: str, tmp_path: Path) -> None:
    assert _niceness_of_a_running_worker(redis_url, prefix, tmp_path / "a") == 0  # the default: as started
    assert _niceness_of_a_running_worker(redis_url, prefix, tmp_path / "b", GATEWAY_WORKER_NICE="10") == 10
    assert _niceness_of_a_running_worker(redis_url, prefix, tmp_path / "c", GATEWAY_WORKER_NICE="4") == 4
    # started nicer than asked, or asked for 0: left so
    assert _niceness_of_a_running_worker(redis_url, prefix, tmp_path / "d", started_at=15,
                                         GATEWAY_WORKER_NICE="10") == 15
    assert _niceness_of_a_running_worker(redis_url, prefix, tmp_path / "e", started_at=3) == 3


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_an_idle_worker_runs_under_sched_idle(redis_url: str, prefix: str, tmp_path: Path) -> None:
    idle: set[int] = set()
    _niceness_of_a_running_worker(redis_url, prefix, tmp_path / "a", policies=idle, GATEWAY_WORKER_NICE="idle")
    assert idle == {os.SCHED_IDLE}
    normal: set[int] = set()
    _niceness_of_a_running_worker(redis_url, prefix, tmp_path / "b", policies=normal, GATEWAY_WORKER_NICE="10")
    assert normal == {os.SCHED_OTHER}
