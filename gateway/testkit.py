"""The integrator's test kit: a pytest plugin (registered under ``pytest11`` as
``complaint_gateway``, so installing the gateway makes it available) with fixtures for a
Redis-backed gateway and worker, a fake provider API that records what a sender sends, and the
**channel conformance suite** a plugin runs against itself in one line::

    from gateway.testkit import ChannelConformance
    class TestMyChannel(ChannelConformance):
        probe = MyChannelProbe()      # how to talk to *your* channel (see ChannelProbe)

What the suite checks is listed in ``gateway/conformance.py``. The kit needs nothing from the
project that uses it: no pytest-asyncio setting (its tests run their own event loop), no
environment but a Redis.

Fixtures: ``gw_redis_url`` (TEST_REDIS_URL, then REDIS_URL, then the local Redis on 6379, else a
``redis-server`` started for the session), ``gw_settings`` (gateway settings under a key prefix
of their own, removed after the test), ``fake_outbound`` (a started ``FakeApi``).
Helpers: ``gateway_client``, ``run_worker``, ``stored_keys``, ``FakeApi``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from gateway.conformance import ChannelConformance, ChannelProbe, HttpRequest, Sent
from gateway.testkit_support import (
    TESTKIT_AGENT,
    TESTKIT_APP_KEY,
    TESTKIT_SUPERVISOR,
    Call,
    FakeApi,
    bearer,
    cleanup_prefix,
    free_port,
    gateway_client,
    redis_for_tests,
    run_worker,
    stored_keys,
    testkit_env,
)


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


@pytest.fixture
def fake_outbound() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    yield fake
    fake.stop()


__all__ = ["ChannelConformance", "ChannelProbe", "HttpRequest", "Sent", "FakeApi", "Call", "gateway_client",
           "run_worker", "stored_keys", "bearer", "cleanup_prefix", "free_port", "redis_for_tests", "testkit_env",
           "TESTKIT_SUPERVISOR", "TESTKIT_AGENT", "TESTKIT_APP_KEY"]
