"""Real desk processes for tests: `python -m gateway serve` and `python -m gateway worker` on a
fresh key prefix and a free port, as `make run` starts them (without the embedded Redis), and the
poll every process test waits with."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from tests.conftest import ROOT, cleanup_prefix, free_port, make_env


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05):
    """``predicate()``'s first truthy value, polled until ``timeout`` (then AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@contextmanager
def desk_processes(redis_url: str, var: Path, **extra_env: str) -> Iterator[tuple[str, Path]]:
    """`gateway serve` and `gateway worker` on a fresh key prefix; yields (base URL, log dir)."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, **make_env(redis_url, prefix, var / "var"), "GATEWAY_PUBLIC_URL": base, **extra_env}
    logs = var / "logs"
    logs.mkdir(parents=True)
    procs = [subprocess.Popen([sys.executable, "-m", "gateway", *cmd], env=env, cwd=ROOT,
                              stdout=open(logs / f"{cmd[0]}.log", "wb"), stderr=subprocess.STDOUT)
             for cmd in (["serve", "--port", str(port)], ["worker"])]

    def ready() -> bool:
        try:
            return httpx.get(f"{base}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        try:
            wait_until(ready, timeout=30)
        except AssertionError:
            raise AssertionError("the desk did not become ready:\n" + "\n".join(
                (logs / n).read_text(errors="replace")[-3000:] for n in ("serve.log", "worker.log"))) from None
        yield base, logs
    finally:
        stop_processes(*procs)
        cleanup_prefix(redis_url, prefix)


def stop_processes(*procs: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate, then kill what has not ended within ``timeout`` s."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
