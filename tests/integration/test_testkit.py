"""The kit's own helpers, as integrators' suites use them on a Redis other runs share."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from arq.constants import job_key_prefix
from msgspec.structs import replace

from router.store import ComplaintStore, PlannedJob
from tests.conftest import APP, stored_keys

pytestmark = pytest.mark.integration


async def test_stored_keys_sees_only_this_gateways_keys(client, settings):
    r = aioredis.from_url(settings.redis_url)
    other = f"{job_key_prefix}ingest:msg_another_run_{uuid.uuid4().hex}"  # a job of a run beside this one
    other_prefix_key = f"t{uuid.uuid4().hex[:10]}:msg:x"
    try:
        before = await stored_keys(settings)
        await r.set(other, b"job", px=60_000)
        await r.set(other_prefix_key, b"", px=60_000)
        assert await stored_keys(settings) == before
        # this gateway's own job is seen, with its key under arq's names
        mid = (await client.post("/v1/messages", json={"user_id": "kit-1", "text": "refund"},
                                 headers=APP)).json()["message_id"]
        store = ComplaintStore(settings.redis_prefix)
        store.bind(r)
        event = f"event:kit{uuid.uuid4().hex[:8]}:created"
        await store.enqueue(PlannedJob("dispatch_event", event, ("kit", "created", 0, "t", {})))
        after = await stored_keys(settings)
        assert f"{job_key_prefix}{event}" in after and other not in after
        assert f"{job_key_prefix}ingest:{mid}" not in after  # a message's job is its id in the queue, no key
        assert {k for k in after if not k.startswith(job_key_prefix)} > set(before)
    finally:
        await r.delete(other, other_prefix_key)
        await r.aclose()


async def test_stored_keys_finds_a_hash_tagged_prefix_s_jobs_and_no_one_elses(settings):
    tagged = replace(settings, redis_prefix=f"{{kit{uuid.uuid4().hex[:8]}}}:")
    r = aioredis.from_url(settings.redis_url)
    mine, theirs = f"{job_key_prefix}{tagged.redis_prefix[:-1]}done:1", f"{job_key_prefix}{{other}}done:1"
    try:
        await r.set(mine, b"job", px=60_000)
        await r.set(theirs, b"job", px=60_000)
        assert await stored_keys(tagged) == [mine]
    finally:
        await r.delete(mine, theirs)
        await r.aclose()
