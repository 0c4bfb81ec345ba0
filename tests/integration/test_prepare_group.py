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


async def test_a_contact_linked_by_an_earlier_message_of_the_call_is_known_to_a_later_one(store: Any) -> None:
    """The locked messages' customers are read for the whole call at once, before any of them is
    linked: a sender an earlier message of the same call vouched for (the app says its user's phone
    is P; P writes by SMS at the same moment) is still that customer's, as if loaded alone after it."""
    from normalizer.ids import new_id
    from normalizer.inbound import build_message
    from normalizer.schema import Contact

    phone = Contact(kind="phone", value="+8613800000077")
    first = message("someone-else")
    app = build_message(message_id=new_id("msg"), channel="app", sender=Contact(kind="app_user", value="vouching"),
                        text="charged twice, please refund", verified_contacts=[phone])
    sms = build_message(message_id=new_id("msg"), channel="sms", sender=phone, text="charged twice again")
    for m in (first, app, sms):
        assert (await store.intake(m, idempotency_scope=None)).status == "accepted"
    results = await asyncio.gather(*(store.prepare(m.id, (m.id, 15_000)) for m in (first, app, sms)))
    assert store._prepares.calls == 1  # all three in one call
    (_, _, by_app), (_, _, by_sms) = results[1], results[2]
    assert by_sms["customer_id"] == by_app["customer_id"]
    assert await store.r.get(store.keys.contact(phone)) == by_app["customer_id"].encode()
