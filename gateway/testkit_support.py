"""The test kit's machinery (the pytest fixtures and the conformance suite are built on it):
finding a Redis, settings under a key prefix of their own, the real app over ASGI, a burst
worker, the keys a gateway stored, and a fake provider API that records what a sender sends.
Integrators import these names from ``gateway.testkit``."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

TESTKIT_APP_KEY = "testkit-app-key-0001"
TESTKIT_AGENT = ("agent", "testkit-agent-0001")
TESTKIT_SUPERVISOR = ("sup", "testkit-supervisor-0001")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- Redis and settings ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@contextlib.contextmanager
def redis_for_tests(workdir: Path) -> Iterator[str]:
    """TEST_REDIS_URL / REDIS_URL, else the machine's Redis on 6379, else a redis-server here."""
    for url in (os.environ.get("TEST_REDIS_URL"), os.environ.get("REDIS_URL"), "redis://127.0.0.1:6379/0"):
        if url and redis_answers(url):
            yield url
            return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit("no Redis on 127.0.0.1:6379 and no redis-server binary", returncode=3)
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if redis_answers(url):
            break
        time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(5)


def cleanup_prefix(url: str, prefix: str) -> None:
    """Remove every key under ``prefix``, and the arq jobs its queue still names."""
    import redis

    from router.store import Keys

    client = redis.Redis.from_url(url)
    for job_id in client.zrange(Keys(prefix).arq_queue, 0, -1):
        client.delete(Keys.arq_job(job_id.decode()))
    keys = list(client.scan_iter(match=_glob_escape(prefix) + "*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


def testkit_env(redis_url: str, prefix: str, var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url, "GATEWAY_REDIS_PREFIX": prefix, "GATEWAY_APP_KEYS": f"app:{TESTKIT_APP_KEY}",
        "GATEWAY_AGENT_TOKENS": f"{TESTKIT_AGENT[0]}:{TESTKIT_AGENT[1]}",
        "GATEWAY_SUPERVISOR_TOKENS": f"{TESTKIT_SUPERVISOR[0]}:{TESTKIT_SUPERVISOR[1]}",
        "GATEWAY_VAR_DIR": str(var_dir), "GATEWAY_PLUGINS_AUTOLOAD": "0",
        "GATEWAY_PUBLIC_URL": "https://gateway.example.test",
        # a channel's tests need no learned model: loading one costs a worker ~3 s of CPU, and
        # training the default into a fresh directory ~10 s (most of a test's time before)
        "GATEWAY_CATEGORISER": "keywords",
    }
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def gateway_client(settings: Any, plugins: Any, public_url: str | None = None) -> AsyncIterator[Any]:
    """The real app (real routing, real Redis) with the given plugins, over ASGI."""
    from litestar.testing import AsyncTestClient
    from msgspec.structs import replace

    from gateway.app import create_app

    if public_url:
        settings = replace(settings, public_url=public_url)
    async with AsyncTestClient(app=create_app(settings, plugins=plugins), raise_server_exceptions=False) as c:
        yield c


async def run_worker(settings: Any, plugins: Any) -> int:
    """A worker with the given plugins, in burst mode, until the queue is empty."""
    from router.worker import create_worker

    worker = create_worker(settings, burst=True, handle_signals=False, plugins=plugins)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker.jobs_complete


async def stored_keys(settings: Any) -> list[str]:
    """Every key under the settings' prefix, and arq's keys of the jobs its queue names (to prove
    nothing was stored). Only this gateway's own keys: other test runs sharing the Redis (their
    own prefixes, their own jobs) do not show."""
    import redis.asyncio as aioredis

    from router.store import ARQ_JOB_PREFIXES, Keys

    prefix = settings.redis_prefix
    desk = Keys(prefix)
    r = aioredis.from_url(settings.redis_url)
    try:
        keys = {k.decode() async for k in r.scan_iter(match=_glob_escape(prefix) + "*")}
        job_ids = [j.decode() for j in await r.zrange(desk.arq_queue, 0, -1)]
        named = [p + job_id for job_id in job_ids for p in ARQ_JOB_PREFIXES]
        if named:
            async with r.pipeline(transaction=False) as pipe:
                for key in named:
                    pipe.exists(key)
                keys.update(key for key, there in zip(named, await pipe.execute()) if there)
        # with a Redis Cluster hash tag ({...}, read as Redis reads it), this prefix's job ids
        # start with it: their keys are found even once the queue no longer names them
        tag = desk.tag
        for p in ARQ_JOB_PREFIXES if tag else ():
            keys.update([k.decode() async for k in r.scan_iter(match=_glob_escape(p + tag) + "*")])
        return sorted(keys)
    finally:
        await r.aclose()


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a Redis SCAN MATCH pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


# -- a fake provider API --------------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: The status the fake answered with (0 while it is still answering).
    status: int = 0

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, Any, str]
Handler = Callable[[Call, "re.Match[str]"], Answer]


@dataclass
class FakeApi:
    """A provider's REST API on loopback: records every request, answers from the handlers you
    give it (``route``), or the faults you queue (``fail_next``: (status, body) per request)."""

    routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    fail_next: list[tuple[int, Any]] = field(default_factory=list)

    def route(self, method: str, pattern: str, handler: Handler) -> "FakeApi":
        self.routes.append((method, re.compile(pattern + "$"), handler))
        return self

    def start(self) -> "FakeApi":
        fake = self

        class RequestHandler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                call = Call(method, split.path, {k: v[0] for k, v in parse_qs(split.query).items()},
                            dict(self.headers), body)
                fake.calls.append(call)
                if fake.fail_next:
                    status, answer = fake.fail_next.pop(0)
                    return self._send(call, status, answer, "application/json")
                for route_method, pattern, handler in fake.routes:
                    match = pattern.match(split.path)
                    if route_method == method and match:
                        return self._send(call, *handler(call, match))
                self._send(call, 404, {"error": "no such route"}, "application/json")

            def _send(self, call: Call, status: int, body: Any, content_type: str) -> None:
                call.status = status
                data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), RequestHandler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for the next poll: 0.5 s by default, at the end of every test
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts_to(self, pattern: str) -> list[Call]:
        """Every POST whose path matches ``pattern``, answered or failed, in order."""
        return [c for c in self.calls if c.method == "POST" and re.search(pattern, c.path)]
