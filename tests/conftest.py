"""Shared fixtures: a real Redis (the machine's, or one started here), a key prefix per test,
the gateway app on real HTTP plumbing, and a worker run in burst mode."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest
import redis as redis_sync
from arq.constants import job_key_prefix

from gateway.settings import Settings, load_settings

APP_KEY = "test-app-key-0001"
AGENT_TOKENS = {"alice": "test-agent-alice-0001", "bob": "test-agent-bob-00001"}
SUPERVISOR_TOKEN = "test-supervisor-0001"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(url: str) -> bool:
    try:
        return bool(redis_sync.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL, else the machine's Redis on 6379, else a redis-server started here."""
    url = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if _ping(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit("no Redis on 127.0.0.1:6379 and no redis-server binary (run `make test`)", returncode=3)
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _ping(url):
            break
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(5)


def cleanup_prefix(url: str, prefix: str) -> None:
    client = redis_sync.Redis.from_url(url)
    queue = prefix + "arq:queue"
    for job_id in client.zrange(queue, 0, -1):
        client.delete(job_key_prefix.encode() + job_id)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"t{uuid.uuid4().hex[:10]}:"
    yield value
    cleanup_prefix(redis_url, value)


def make_env(redis_url: str, prefix: str, var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "REDIS_URL": redis_url,
        "GATEWAY_REDIS_PREFIX": prefix,
        "GATEWAY_APP_KEYS": f"app:{APP_KEY}",
        "GATEWAY_AGENT_TOKENS": ",".join(f"{k}:{v}" for k, v in AGENT_TOKENS.items()),
        "GATEWAY_SUPERVISOR_TOKENS": f"sam:{SUPERVISOR_TOKEN}",
        "GATEWAY_VAR_DIR": str(var_dir),
        "GATEWAY_PLUGINS": str(ROOT / "plugins.toml"),
        "GATEWAY_PLUGINS_AUTOLOAD": "0",
    }
    env.update(extra)
    return env


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return load_settings(make_env(redis_url, prefix, tmp_path / "var"))


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


APP = auth(APP_KEY)
ALICE = auth(AGENT_TOKENS["alice"])
BOB = auth(AGENT_TOKENS["bob"])
SUPERVISOR = auth(SUPERVISOR_TOKEN)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Any]:
    """The real app over ASGI (real routing, real Redis), no network socket."""
    from litestar.testing import AsyncTestClient

    from gateway.app import create_app

    app = create_app(settings)
    async with AsyncTestClient(app=app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def drain(settings: Settings) -> Any:
    """Run a worker in burst mode until the queue is empty; returns jobs completed."""
    from router.worker import create_worker

    async def run() -> int:
        worker = create_worker(settings, burst=True, handle_signals=False)
        try:
            await worker.main()
        finally:
            await worker.close()
        return worker.jobs_complete

    return run


@contextlib.asynccontextmanager
async def gateway_client(settings: Settings, plugins: Any, public_url: str | None = None) -> AsyncIterator[Any]:
    """The app with the given plugins (and the public URL providers sign against)."""
    from litestar.testing import AsyncTestClient
    from msgspec.structs import replace

    from gateway.app import create_app

    if public_url:
        settings = replace(settings, public_url=public_url)
    async with AsyncTestClient(app=create_app(settings, plugins=plugins), raise_server_exceptions=False) as c:
        yield c


def app_plugins(*extra: Any) -> Any:
    """The app channel plus the given plugin objects (named extra0, extra1, ...)."""
    from adapters.app import AppChannel
    from plugins.manager import GatewayPlugins

    plugins = GatewayPlugins()
    plugins.register("app", AppChannel())
    for n, plugin in enumerate(extra):
        plugins.register(f"extra{n}", plugin)
    plugins.check()
    return plugins


async def run_worker(settings: Settings, plugins: Any) -> int:
    """A worker with the given plugins, in burst mode, until the queue is empty."""
    from router.worker import create_worker

    worker = create_worker(settings, burst=True, handle_signals=False, plugins=plugins)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker.jobs_complete


async def stored_keys(settings: Settings) -> list[str]:
    """Every key under the test's prefix, and arq's job keys (to prove a refused request stored
    nothing)."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(settings.redis_url)
    try:
        keys = [k.decode() async for k in r.scan_iter(match=settings.redis_prefix + "*")]
        keys += [k.decode() async for k in r.scan_iter(match=job_key_prefix + "*")]  # arq's jobs are global
        return sorted(keys)
    finally:
        await r.aclose()
