"""The intake's group commit (router/store/intake_script.py): messages taken in concurrently
share one call of the intake script, and each still gets the outcome it would have had alone —
idempotency, backpressure and the per-sender and per-channel budgets counted message by message,
in arrival order — and is durable before its call returns."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from normalizer.inbound import build_message
from normalizer.ids import new_id
from normalizer.schema import Contact
from plugins.settings import IntakeLimits


@pytest.fixture
async def store(redis_url: str, prefix: str) -> Any:
    from router.redis_pool import redis_client
    from router.store import ComplaintStore

    r = redis_client(redis_url)
    s = ComplaintStore(prefix, limits=IntakeLimits())
    s.bind(r)
    try:
        yield s
    finally:
        await r.aclose()


def message(user: str, text: str = "charged twice, please refund") -> Any:
    return build_message(message_id=new_id("msg"), channel="app", sender=Contact(kind="app_user", value=user), text=text)


def group_calls(store: Any) -> int:
    group = store.__dict__.get("_intake_group")
    return group.calls if group is not None else 0


async def intake_all(store: Any, messages: list[Any], scopes: list[str | None] | None = None,
                     hashes: list[str] | None = None) -> list[Any]:
    scopes = scopes or [None] * len(messages)
    hashes = hashes or [""] * len(messages)
    return list(await asyncio.gather(*(store.intake(m, idempotency_scope=s, request_hash=h)
                                       for m, s, h in zip(messages, scopes, hashes))))


async def test_concurrent_messages_share_a_call_and_each_is_stored(store):
    await intake_all(store, [message("warm")])  # the script loaded, the group made
    before = group_calls(store)
    messages = [message(f"u{n}") for n in range(40)]
    outcomes = await intake_all(store, messages)
    assert [(o.status, o.message_id) for o in outcomes] == [("accepted", m.id) for m in messages]
    assert group_calls(store) - before < 10  # the first alone, then the ones that waited together
    r, k = store.r, store.keys
    for m in messages:
        assert await r.hget(k.msg(m.id), "status") == b"received"
        assert await r.zscore(k.pending, m.id) is not None
        job_id = k.job_id(f"ingest:{m.id}")
        assert await r.zscore(k.arq_queue, job_id) is not None
    assert await r.hget(k.metrics, "gateway_messages_in|channel=app,outcome=accepted") == b"41"


async def test_a_retry_in_the_same_call_is_a_duplicate_or_a_conflict(store):
    first, again, other = message("same"), message("same"), message("same")
    outcomes = await intake_all(store, [message("lead"), first, again, other],
                                scopes=[None, "same:k1", "same:k1", "same:k1"], hashes=["", "h1", "h1", "h2"])
    assert [(o.status, o.message_id) for o in outcomes[1:]] == [
        ("accepted", first.id), ("duplicate", first.id), ("conflict", first.id)]
    assert await store.r.exists(store.keys.msg(again.id), store.keys.msg(other.id)) == 0
    fields = await store.r.hgetall(store.keys.metrics)
    assert fields[b"gateway_messages_in|channel=app,outcome=duplicate"] == b"1"
    assert fields[b"gateway_messages_in|channel=app,outcome=conflict"] == b"1"


async def test_a_senders_budget_counts_every_message_of_a_call(store):
    store.limits.contact_per_minute = 3
    for attempt in range(5):  # the budget is per minute: a call that straddles one is tried again
        minute, sender = int(time.time()) // 60, f"flood{attempt}"
        outcomes = await intake_all(store, [message(sender) for _ in range(5)])
        if int(time.time()) // 60 != minute:
            continue
        assert [o.status for o in outcomes] == ["accepted"] * 3 + ["rate_limited"] * 2
        assert {o.message_id for o in outcomes[3:]} == {"contact"}
        counter = store.keys.rate_contact("app_user", sender, minute)
        assert await store.r.get(counter) == b"5" and 0 < await store.r.ttl(counter) <= 60
        return
    pytest.fail("every try straddled a minute")


async def test_the_channels_budget_counts_every_message_of_a_call(store):
    store.limits.channel_per_second = 10
    for _ in range(5):  # the budget is per second: a call that straddles a second is tried again
        # at the start of a second nobody has counted in yet (a straddling try counted in the next one too)
        await asyncio.sleep(1.02 - time.time() % 1)
        started = int(time.time())
        outcomes = await intake_all(store, [message(f"c{started}-{n}") for n in range(16)])
        if int(time.time()) != started:
            continue
        assert [o.status for o in outcomes] == ["accepted"] * 10 + ["rate_limited"] * 6
        assert {o.message_id for o in outcomes[10:]} == {"channel"}
        assert await store.r.get(store.keys.rate_channel("app", started)) == b"16"
        return
    pytest.fail("every try straddled a second")


async def test_the_channels_budget_counts_only_the_messages_that_reach_it(store):
    """The call takes the channel's increments for all its messages at once and gives back those
    of the messages refused before the channel's budget (here by their sender's)."""
    store.limits.channel_per_second, store.limits.contact_per_minute = 10, 1
    for _ in range(5):
        await asyncio.sleep(1.02 - time.time() % 1)
        started = int(time.time())
        senders = [f"p{started}-{n}" for n in range(12)]
        outcomes = await intake_all(store, [message(s) for s in senders for _ in range(2)])
        if int(time.time()) != started or int(time.time()) // 60 != started // 60:
            continue
        firsts, seconds = outcomes[0::2], outcomes[1::2]
        assert [o.status for o in firsts] == ["accepted"] * 10 + ["rate_limited"] * 2
        assert {o.message_id for o in firsts[10:]} == {"channel"}
        assert {(o.status, o.message_id) for o in seconds} == {("rate_limited", "contact")}
        counter = store.keys.rate_channel("app", started)
        assert await store.r.get(counter) == b"12" and 0 < await store.r.ttl(counter) <= 2
        return
    pytest.fail("every try straddled a second")


async def test_backpressure_counts_the_messages_of_the_same_call(store):
    store.limits.max_pending = 5
    outcomes = await intake_all(store, [message(f"b{n}") for n in range(8)])
    assert [o.status for o in outcomes] == ["accepted"] * 5 + ["backpressure"] * 3
    assert await store.r.zcard(store.keys.pending) == 5


async def flood_pending(store: Any, n: int) -> None:
    """Another gateway's messages waiting (only their entries in the pending set)."""
    await store.r.zadd(store.keys.pending, {f"other{i}": 1 for i in range(n)})


async def test_far_below_the_limit_the_count_is_read_once_a_second(store):
    """With ``max_pending`` far away (more than the slack), a call need not count the pending set:
    the count read less than a second ago, plus what this process accepted since, will do. A
    flood from elsewhere is seen at the next reading, at most a second later."""
    from router.store.intake_script import PENDING_READ_EVERY_S

    store.limits.max_pending = 20_000
    for _ in range(5):
        asked = time.monotonic()  # the count is read, and its reading stamped, between this and `read`
        assert (await store.intake(message(f"r{asked}"), idempotency_scope=None)).status == "accepted"
        read = time.monotonic()
        await flood_pending(store, 25_000)
        not_read = await store.intake(message(f"s{asked}"), idempotency_scope=None)
        if time.monotonic() - asked >= PENDING_READ_EVERY_S * 0.9:
            await store.r.delete(store.keys.pending)  # too slow to tell: again
            await asyncio.sleep(PENDING_READ_EVERY_S)
            continue
        assert not_read.status == "accepted"
        await asyncio.sleep(PENDING_READ_EVERY_S + 0.05 - (time.monotonic() - read))  # past the reading's second
        assert (await store.intake(message(f"t{asked}"), idempotency_scope=None)).status == "backpressure"
        return
    pytest.fail("every try was too slow")


async def test_near_the_limit_every_call_counts(store):
    store.limits.max_pending = 1_500  # the slack (1,000 at least) reaches down to 500
    await flood_pending(store, 600)
    assert (await store.intake(message("n0"), idempotency_scope=None)).status == "accepted"  # 601: in the slack
    await store.r.zadd(store.keys.pending, {f"more{i}": 1 for i in range(899)})
    assert (await store.intake(message("n1"), idempotency_scope=None)).status == "backpressure"
    await store.r.zrem(store.keys.pending, "other0")
    outcomes = await intake_all(store, [message(f"n{i}") for i in range(2, 5)])
    assert [o.status for o in outcomes] == ["accepted", "backpressure", "backpressure"]


async def test_with_a_flusher_the_outcomes_are_tallied_and_written_by_it(store):
    from router.metrics import MetricsFlusher

    flusher = MetricsFlusher(store.r, every_s=3600)
    running = asyncio.create_task(flusher.run())
    await asyncio.sleep(0)  # the flusher registers itself for the pool
    try:
        await intake_all(store, [message(f"f{n}") for n in range(3)])
        field = "gateway_messages_in|channel=app,outcome=accepted"
        assert await store.r.hget(store.keys.metrics, field) is None  # not one HINCRBY per message
        assert flusher.tally[(store.keys.metrics, field)] == 3
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert await store.r.hget(store.keys.metrics, field) == b"3"  # written when it stopped


async def test_a_command_that_fails_fails_its_own_message_only(store):
    """A key of the wrong type (here the sender's rate counter) fails that message's intake as a
    call of its own would; the others of the same call are stored and answered, none twice."""
    from redis.exceptions import ResponseError

    store.limits.contact_per_minute = 30
    minute = int(time.time()) // 60
    for m in range(minute, minute + 2):  # whichever minute the call falls in
        await store.r.hset(store.keys.rate_contact("app_user", "broken", m), "x", "1")
    await intake_all(store, [message("warm")])
    messages = [message("ok1"), message("broken"), message("ok2")]
    outcomes = await asyncio.gather(*(store.intake(m, idempotency_scope=None) for m in messages),
                                    return_exceptions=True)
    assert isinstance(outcomes[1], ResponseError) and "WRONGTYPE" in str(outcomes[1])
    assert [(o.status, o.message_id) for o in (outcomes[0], outcomes[2])] == [
        ("accepted", messages[0].id), ("accepted", messages[2].id)]
    assert await store.r.exists(store.keys.msg(messages[1].id)) == 0
    assert await store.r.zcard(store.keys.pending) == 3  # warm, ok1, ok2
    alone = await asyncio.gather(store.intake(message("broken"), idempotency_scope=None), return_exceptions=True)
    assert isinstance(alone[0], ResponseError)  # alone, the same answer
