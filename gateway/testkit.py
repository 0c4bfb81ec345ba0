"""The integrator's test kit: a pytest plugin (registered under ``pytest11`` as
``complaint_gateway``, so installing the gateway makes it available) with fixtures for a
Redis-backed gateway and worker, a fake provider API that records what a sender sends, and the
**channel conformance suite** a plugin runs against itself in one line::

    from gateway.testkit import ChannelConformance
    class TestMyChannel(ChannelConformance):
        probe = MyChannelProbe()      # how to talk to *your* channel (see ChannelProbe)

The suite checks what every channel must do: its routes mount, a request without a valid
signature is refused with nothing stored, a message becomes a complaint, the provider's retry
of the same message is harmless, the sender delivers an agent's reply, and a failing plugin
beside it does not stop it.

Fixtures: ``gw_redis_url`` (REDIS_URL / TEST_REDIS_URL, the local Redis on 6379, or a
``redis-server`` started for the session), ``gw_settings`` (gateway settings under a key prefix
of their own, removed after the test), ``fake_outbound`` (a started ``FakeApi``).
Helpers: ``gateway_client``, ``run_worker``, ``stored_keys``, ``FakeApi``.
"""

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
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from plugins.hookspecs import hookimpl

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
    }
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def gw_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_for_tests(tmp_path_factory.mktemp("gw-redis")) as url:
        yield url


@pytest.fixture
def gw_settings(gw_redis_url: str, tmp_path: Path) -> Iterator[Any]:
    from gateway.settings import load_settings

    prefix = f"kit{uuid.uuid4().hex[:10]}:"
    yield load_settings(testkit_env(gw_redis_url, prefix, tmp_path / "var"))
    cleanup_prefix(gw_redis_url, prefix)


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
                    return self._send(status, answer, "application/json")
                for route_method, pattern, handler in fake.routes:
                    match = pattern.match(split.path)
                    if route_method == method and match:
                        return self._send(*handler(call, match))
                self._send(404, {"error": "no such route"}, "application/json")

            def _send(self, status: int, body: Any, content_type: str) -> None:
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
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts_to(self, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == "POST" and re.search(pattern, c.path)]


@pytest.fixture
def fake_outbound() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    yield fake
    fake.stop()


# -- the conformance suite ------------------------------------------------------------------


@dataclass
class HttpRequest:
    """One request as the provider would send it."""

    method: str
    path: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.path + (f"?{urlencode(self.query)}" if self.query else "")


class ChannelProbe:
    """How the conformance suite talks to one channel. Override what your channel needs."""

    #: The plugin's name (its routes mount under /webhooks/<name> unless it names a prefix).
    name: str = ""
    #: The channel name its complaints carry.
    channel: str = ""
    #: The public URL providers sign against (where the signature covers the URL).
    public_url: str | None = None
    #: 2xx statuses a good request may get.
    accepted: tuple[int, ...] = (200, 202, 204)

    def plugin(self, fake: FakeApi) -> Any:
        """Your plugin object, configured to send to ``fake`` (a started FakeApi) instead of the
        provider. Add the routes your sender calls to ``fake`` here."""
        raise NotImplementedError

    def inbound(self, text: str, key: str) -> HttpRequest:
        """A valid, signed request carrying one customer message; ``key`` makes it unique (the
        suite sends the same key again to play a provider's retry)."""
        raise NotImplementedError

    def forged(self, request: HttpRequest) -> HttpRequest:
        """The same request with a wrong signature. Default: every header that looks like a
        signature or secret replaced."""
        headers = {k: ("0" * 64 if re.search(r"sign|secret|token|hmac", k, re.I) else v)
                   for k, v in request.headers.items()}
        query = {k: ("0" * 40 if re.search(r"sign", k, re.I) else v) for k, v in request.query.items()}
        return HttpRequest(request.method, request.path, request.body, headers, query)

    def sent_texts(self, fake: FakeApi) -> list[str]:
        """The texts the sender sent through ``fake`` (acknowledgements, replies), in order."""
        raise NotImplementedError

    async def delivered_texts(self, fake: FakeApi, client: Any, complaint_id: str) -> list[str]:
        """What reached the customer; by default what the sender sent through ``fake``. A channel
        whose "delivery" is storing the reply (the app) reads the complaint instead."""
        return self.sent_texts(fake)


class _Exploding:
    """A plugin that fails in every hook it can."""

    needs_personal_data = True

    @hookimpl
    def classify_message(self, message: Any) -> Any:
        raise RuntimeError("boom")

    @hookimpl
    def enrich_complaint(self, complaint: Any, message: Any) -> Any:
        raise RuntimeError("boom")

    @hookimpl
    def complaint_event(self, event: Any, complaint: Any) -> None:
        raise RuntimeError("boom")


class ChannelConformance:
    """Subclass with ``probe = YourProbe()``; pytest collects the tests below for your channel."""

    probe: ChannelProbe

    def _plugins(self, fake: FakeApi, *extra: Any) -> Any:
        from plugins.manager import GatewayPlugins

        plugins = GatewayPlugins()
        plugins.register(self.probe.name, self.probe.plugin(fake))
        for n, plugin in enumerate(extra):
            plugins.register(f"other{n}", plugin)
        plugins.check()
        return plugins

    async def _send(self, client: Any, request: HttpRequest) -> Any:
        return await client.request(request.method, request.url, content=request.body, headers=request.headers)

    async def _complaints(self, client: Any) -> list[dict[str, Any]]:
        r = await client.get("/v1/complaints", params={"limit": 200}, headers=bearer(TESTKIT_SUPERVISOR[1]))
        assert r.status_code == 200, r.text
        return [c for c in r.json()["items"] if c["channel"] == self.probe.channel]

    async def test_routes_mount(self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        plugins = self._plugins(fake_outbound)
        request = self.probe.inbound("route check", "mount")
        async with gateway_client(gw_settings, plugins, self.probe.public_url) as client:
            paths = {r.path for r in client.app.routes}
            assert any(request.path == p or request.path.startswith(p.split("{")[0]) for p in paths), \
                f"{request.path} is not among the mounted routes"
            assert plugins.errors[self.probe.name] == 0

    async def test_bad_signatures_are_refused_and_nothing_is_stored(self, gw_settings: Any,
                                                                    fake_outbound: FakeApi) -> None:
        plugins = self._plugins(fake_outbound)
        async with gateway_client(gw_settings, plugins, self.probe.public_url) as client:
            before = await stored_keys(gw_settings)
            r = await self._send(client, self.probe.forged(self.probe.inbound("forged message", "forged")))
            assert 400 <= r.status_code < 500, f"a forged request got {r.status_code}"
            assert await stored_keys(gw_settings) == before

    async def test_a_message_becomes_a_complaint_and_a_retry_is_harmless(self, gw_settings: Any,
                                                                          fake_outbound: FakeApi) -> None:
        plugins = self._plugins(fake_outbound)
        request = self.probe.inbound("I was charged twice, please refund", "retry")
        async with gateway_client(gw_settings, plugins, self.probe.public_url) as client:
            for _ in range(3):
                r = await self._send(client, request)
                assert r.status_code in self.probe.accepted, r.text
            await run_worker(gw_settings, plugins)
            complaints = await self._complaints(client)
            assert len(complaints) == 1, complaints
            assert "charged twice" in complaints[0]["messages"][0]["text"]

    async def test_the_sender_delivers_the_acknowledgement_and_a_reply(self, gw_settings: Any,
                                                                        fake_outbound: FakeApi) -> None:
        plugins = self._plugins(fake_outbound)
        async with gateway_client(gw_settings, plugins, self.probe.public_url) as client:
            r = await self._send(client, self.probe.inbound("app crashes when I pay", "reply"))
            assert r.status_code in self.probe.accepted, r.text
            await run_worker(gw_settings, plugins)
            (complaint,) = await self._complaints(client)
            r = await client.post(f"/v1/complaints/{complaint['id']}/replies", json={"text": "Fixed in 5.2.1, sorry!"},
                                  headers=bearer(TESTKIT_SUPERVISOR[1]))
            assert r.status_code == 201, r.text
            await run_worker(gw_settings, plugins)
            sent = await self.probe.delivered_texts(fake_outbound, client, complaint["id"])
            assert any(complaint["case_number"] in t for t in sent), sent
            assert any("Fixed in 5.2.1" in t for t in sent), sent
            replies = (await client.get(f"/v1/complaints/{complaint['id']}",
                                        headers=bearer(TESTKIT_SUPERVISOR[1]))).json()["replies"]
            assert all(r["delivery"] in ("sent", "delivered", "read") for r in replies), replies

    async def test_a_failing_plugin_beside_it_changes_nothing(self, gw_settings: Any, fake_outbound: FakeApi) -> None:
        exploding = _Exploding()
        plugins = self._plugins(fake_outbound, exploding)
        async with gateway_client(gw_settings, plugins, self.probe.public_url) as client:
            r = await self._send(client, self.probe.inbound("my balance is wrong", "isolated"))
            assert r.status_code in self.probe.accepted, r.text
            await run_worker(gw_settings, plugins)
            assert len(await self._complaints(client)) == 1
            assert plugins.errors["other0"] >= 2  # counted, not fatal


__all__ = ["ChannelConformance", "ChannelProbe", "HttpRequest", "FakeApi", "Call", "gateway_client", "run_worker",
           "stored_keys", "bearer", "TESTKIT_SUPERVISOR", "TESTKIT_AGENT", "TESTKIT_APP_KEY"]
