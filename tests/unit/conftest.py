"""Fixtures the unit tests that need a real Redis share."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from router.incidents import Incidents
from router.store import ComplaintStore


@pytest.fixture
async def desk(redis_url: str, prefix: str) -> Any:
    """A Redis client, a store and the incidents of one desk (the client closed after the test)."""
    r = Redis.from_url(redis_url)
    store = ComplaintStore(prefix)
    store.bind(r)
    try:
        yield r, store, Incidents(store, window_minutes=10, min_customers=3)
    finally:
        await r.aclose()
