"""The message loads' group (router/store/preparing.py): jobs that load their messages at the same
time share one call of the load script, and each gets what it would have had alone — its own
message and customer, the sender's lock refused to the second message of the same sender, a
message processed already answered as such."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.test_intake_group import message as intake_message
from tests.integration.test_intake_group import store  # noqa: F401 - the fixture


def message(user: str, text: str = "charged twice for one coffee, please refund") -> Any:
    return intake_message(user, text)


async def test_loads_at_the_same_time_share_a_call_and_each_gets_its_own(store: Any) -> None:
    messages = [message(f"u{n}") for n in range(6)] + [message("u0", "and again: charged twice")]
    for m in messages:
        assert (await store.intake(m, idempotency_scope=None)).status == "accepted"
    await store.r.hset(store.keys.msg(messages[5].id), mapping={"status": "processed", "complaint_id": "cmp_done"})
    results = await asyncio.gather(*(store.prepare(m.id, (m.id, 15_000)) for m in messages),
                                   store.prepare("msg_nobody"))
    group = store._prepares
    assert group.calls < len(messages) + 1  # shared calls (the first goes at once, alone; the rest together)
    customers = set()
    for m, (status, loaded, fields) in zip(messages[:5], results[:5]):
        assert status == "received" and loaded.id == m.id and fields["sender"] == f"app_user:{m.sender.value}"
        assert fields["after_resolved"] == "" and fields["open_cases"] == {}
        customers.add(fields["customer_id"])
    assert len(customers) == 5  # a new customer each
    assert results[5][0] == "processed" and results[5][2] == {"complaint_id": "cmp_done"}
    assert results[6][0] == "locked"  # u0's lock is the first message's, taken in the same call
    assert results[7][0] == "missing"
    lock = store.keys.contact_lock("app_user:u0")
    assert (await store.r.get(lock)).decode() == messages[0].id
    # the same message loaded again (its next try) takes its own lock back at once
    status, loaded, _ = await store.prepare(messages[0].id, (messages[0].id, 15_000))
    assert status == "received" and loaded.id == messages[0].id


async def test_a_message_whose_load_fails_fails_alone(store: Any) -> None:
    """A message record of the wrong type fails that message's load (its job is retried as any
    failing job), not the loads it shared a call with."""
    from redis.exceptions import ResponseError

    good, bad = message("fine"), message("broken")
    for m in (good, bad):
        assert (await store.intake(m, idempotency_scope=None)).status == "accepted"
    await store.r.set(store.keys.msg(bad.id), "not a hash")
    results = await asyncio.gather(store.prepare(good.id, (good.id, 15_000)), store.prepare(bad.id, (bad.id, 15_000)),
                                   return_exceptions=True)
    assert results[0][0] == "received" and results[0][1].id == good.id
    assert isinstance(results[1], ResponseError) and "WRONGTYPE" in str(results[1])
