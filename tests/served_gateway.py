"""A real `gateway serve` and `gateway worker` pair on a free port, under a key prefix of its own
(removed afterwards): what a client generated from the OpenAPI document, or schemathesis, talks to."""

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

from gateway.testkit import cleanup_prefix
from tests.conftest import ROOT, free_port, make_env


@contextmanager
def served_gateway(redis_url: str, tmp: Path, **env_extra: str) -> Iterator[str]:
    """Yields the base URL once /health answers (30 s at most); the server's log is tmp/serve.log."""
    prefix = f"s{uuid.uuid4().hex[:8]}:"
    port = free_port()
    env = {**os.environ, **make_env(redis_url, prefix, tmp / "var"), "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "GATEWAY_CONTACT_RATE_PER_MINUTE": "0", "GATEWAY_LOG_LEVEL": "WARNING", **env_extra}
    procs = [subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "serve.log", "wb")),
             subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield base
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(15)
        cleanup_prefix(redis_url, prefix)
