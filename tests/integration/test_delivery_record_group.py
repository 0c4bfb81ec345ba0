"""The delivery records' group (router/store/deliveries.py): replies recorded at the same time
share one call of the status script, and a record that carries its sender's lock (a new case's
acknowledgement, router/pipeline.py) lets the lock go in that same call — by its holder only, and
only once the record landed: a record that fails leaves the lock to the job's own release."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.exceptions import ResponseError

from normalizer.schema import DeliveryResult
from router.delivery import _record
from router.sender_lock import SenderLock
from tests.integration.test_intake_group import store  # noqa: F401 - the fixture


async def _state(store: Any, complaint_id: str, reply_id: str) -> dict[str, Any]:
    return json.loads(await store.r.hget(store.keys.delivery(complaint_id), reply_id))


async def test_records_at_the_same_time_let_their_senders_locks_go_by_their_holders_only(store: Any) -> None:
    """Five records in one call, locks carried by some: each lock let go only by its own holder."""
    lock = {u: store.keys.contact_lock(f"app_user:{u}") for u in "abcde"}
    for u in "bce":
        await store.r.set(lock[u], f"msg_{u}")
    await store.r.set(lock["d"], "msg_later")  # d's lock expired meanwhile and a later message of d's took it
    changed = await asyncio.gather(
        store.record_delivery("cmp_a", "rep_a", {"delivery": "sent"}),
        store.record_delivery("cmp_b", "rep_b", {"delivery": "sent"}, release=(lock["b"], "msg_b")),
        store.record_delivery("cmp_c", "rep_c", {"delivery": "delivered"}),  # (c's lock held, asked of none)
        store.record_delivery("cmp_d", "rep_d", {"delivery": "sent"}, release=(lock["d"], "msg_d")),
        store.record_delivery("cmp_e", "rep_e", {"delivery": "sent"}, release=(lock["e"], "msg_e")))
    assert changed == [True] * 5
    assert store._statuses.calls == 1  # (submitted in one turn of the loop: one call)
    assert [await store.r.get(lock[u]) for u in "abcde"] == [None, None, b"msg_c", b"msg_later", None]
    assert [(await _state(store, f"cmp_{u}", f"rep_{u}"))["delivery"] for u in "abcde"] == \
        ["sent", "sent", "delivered", "sent", "sent"]
    # a state only moves forward; the lock goes all the same (the reply went out)
    await store.r.set(lock["c"], "msg_c")
    assert not await store.record_delivery("cmp_c", "rep_c", {"delivery": "sent"}, release=(lock["c"], "msg_c"))
    assert (await _state(store, "cmp_c", "rep_c"))["delivery"] == "delivered"
    assert await store.r.get(lock["c"]) is None


async def test_an_acknowledgements_record_lets_the_lock_go_and_a_failed_one_leaves_it_held(store: Any) -> None:
    key = store.keys.contact_lock("app_user:u1")
    lock = SenderLock(store, 15_000, token="msg_1")
    await store.r.set(key, "msg_1")
    lock.held("app_user:u1")
    await _record(store, "cmp_1", "rep_1", DeliveryResult(status="sent", provider_message_id="p1"), lock)
    assert await store.r.get(key) is None and lock.held_as() is None  # let go by the record: nothing left to release
    assert (await _state(store, "cmp_1", "rep_1"))["provider_message_id"] == "p1"

    lock = SenderLock(store, 15_000, token="msg_2")
    await store.r.set(key, "msg_2")
    lock.held("app_user:u1")
    await store.r.set(store.keys.delivery("cmp_2"), "not a hash")  # the record fails
    with pytest.raises(ResponseError):
        await _record(store, "cmp_2", "rep_2", DeliveryResult(status="sent"), lock)
    assert await store.r.get(key) == b"msg_2" and lock.held_as() == (key, "msg_2")  # still held, still its
    await lock.release()  # (what the job's own release does when it ends)
    assert await store.r.get(key) is None

    # one record of a call failing fails the call: every record's lock stays held, for its job's release
    locks = [SenderLock(store, 15_000, token=f"msg_g{n}") for n in range(2)]
    for n, held in enumerate(locks):
        await store.r.set(store.keys.contact_lock(f"app_user:g{n}"), f"msg_g{n}")
        held.held(f"app_user:g{n}")
    await store.r.set(store.keys.delivery("cmp_g1"), "not a hash")
    outcomes = await asyncio.gather(*(_record(store, f"cmp_g{n}", f"rep_g{n}", DeliveryResult(status="sent"), held)
                                      for n, held in enumerate(locks)), return_exceptions=True)
    assert all(isinstance(o, ResponseError) for o in outcomes)
    assert [held.held_as() is not None for held in locks] == [True, True]
    assert [await store.r.get(store.keys.contact_lock(f"app_user:g{n}")) for n in range(2)] == [b"msg_g0", b"msg_g1"]
