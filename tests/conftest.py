"""Shared fixtures: a real Redis (the machine's, or one started here), a key prefix per test,
the gateway app on real HTTP plumbing, and a worker run in burst mode."""

from __future__ import annotations

import json

import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import pytest

from gateway.settings import load_settings

from plugins.settings import Settings
from gateway.testkit import cleanup_prefix, free_port, redis_for_tests  # noqa: F401  (free_port: used by tests)
from gateway.testkit import gateway_client, run_worker, stored_keys  # noqa: F401  (shared with integrators)

APP_KEY = "test-app-key-0001"
AGENT_TOKENS = {"alice": "test-agent-alice-0001", "bob": "test-agent-bob-00001"}
SUPERVISOR_TOKEN = "test-supervisor-0001"
ROOT = Path(__file__).resolve().parent.parent
#: One models directory for every test's gateway and worker (GATEWAY_MODELS_DIR): the default
#: categoriser is trained once (on a fresh clone, ~5 s), not by every worker a test starts.
TEST_MODELS_DIR = ROOT / "var" / "test-models"


@pytest.fixture(scope="session", autouse=True)
def categoriser_trained() -> None:
    """The shared models directory holds a default model before any worker starts (a worker
    would train it too, but a test polling a worker process must not wait on that)."""
    import fcntl

    from router.understanding import artefacts

    TEST_MODELS_DIR.mkdir(parents=True, exist_ok=True)
    with open(TEST_MODELS_DIR.parent / "test-models.lock", "w") as lock:  # (pytest -n: one session trains it)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if artefacts.current_version(TEST_MODELS_DIR) is None:
            artefacts.load_current(TEST_MODELS_DIR)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TEST_REDIS_URL, else the machine's Redis on 6379, else a redis-server started here."""
    with redis_for_tests(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"t{uuid.uuid4().hex[:10]}:"
    yield value
    cleanup_prefix(redis_url, value)


#: Worker processes that a test starts, kills and restarts many times to prove a process-level
#: promise (failover, kills, timers, hot reload) categorise with the keyword rules: loading the
#: learned model costs a worker ~3 s of CPU at start (bench/RESULTS.md), which those tests would pay
#: at every restart. The model's own path through a real `python -m gateway worker` is covered by
#: tests/integration/test_processes.py, and in-process by the categoriser's tests.
RESTARTED_WORKER_ENV = {"GATEWAY_CATEGORISER": "keywords"}


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
        "GATEWAY_MODELS_DIR": str(TEST_MODELS_DIR),
    }
    env.update(extra)
    return env


@pytest.fixture
def settings(redis_url: str, prefix: str, tmp_path: Path) -> Settings:
    return load_settings(make_env(redis_url, prefix, tmp_path / "var"))


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Any]:
    """A ``ComplaintStore`` on the test's own key prefix, with a connection of its own."""
    import redis.asyncio as aioredis

    from router.store import ComplaintStore

    r = aioredis.Redis.from_url(settings.redis_url)
    s = ComplaintStore(settings.redis_prefix)
    s.bind(r)
    yield s
    await r.aclose()


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


async def list_complaints(client: Any, **params: Any) -> list[dict[str, Any]]:
    """Every complaint a supervisor sees (up to 200), newest first."""
    r = await client.get("/v1/complaints", params={"limit": 200, **params}, headers=SUPERVISOR)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def eventually(check: Any, timeout: float = 10.0, every: float = 0.05) -> Any:
    """Await ``check()`` until it returns something true (returned), or fail after ``timeout``."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {getattr(check, '__name__', check)}")
        await asyncio.sleep(every)


async def run_worker_until(worker: Any, done: Any, timeout: float = 30.0) -> None:
    """Run an arq worker in this process until ``await done()`` is true (it fails if the worker
    ends first, or after ``timeout``), then stop it."""
    import asyncio

    running = asyncio.create_task(worker.main())
    try:
        async def check() -> Any:
            if running.done():
                raise AssertionError(f"the worker ended: {running.exception()!r}")
            return await done()

        await eventually(check, timeout=timeout)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)  # jobs cut short end as they may


def corpus_subset(path: Path, per_category: int) -> Path:
    """A small labelled file cut from our corpus (data/corpus): the first ``per_category`` records
    of each category, for tests that train a model quickly."""
    from router.understanding import corpus

    taken: dict[str, int] = {}
    lines = []
    for record in corpus.load_records(corpus.data_files()):
        if taken.get(record["category"], 0) < per_category:
            taken[record["category"]] = taken.get(record["category"], 0) + 1
            lines.append(json.dumps(record, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def redis_fault_proxy(redis_url: str) -> Iterator[Any]:
    """A fault-injecting TCP proxy (tests/faultproxy.py) in front of the test's Redis: connect
    through it to cut, stall or refuse Redis's answers."""
    from urllib.parse import urlparse

    from tests.faultproxy import FaultProxy

    where = urlparse(redis_url)
    if where.scheme != "redis":
        pytest.skip("the fault proxy stands in front of a TCP Redis")
    started = FaultProxy(where.port or 6379, upstream_host=where.hostname or "127.0.0.1").start()
    yield started
    started.stop()
