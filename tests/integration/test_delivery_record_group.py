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
    mine, taken = store.keys.contact_lock("app_user:a"), store.keys.contact_lock("app_user:b")
    await store.r.set(mine, "msg_a")
    await store.r.set(taken, "msg_later")  # b's lock expired meanwhile and a later message of b's took it
    await store.r.set(store.keys.contact_lock("app_user:c"), "msg_c")  # held, and asked of no record
    changed = await asyncio.gather(
        store.record_delivery("cmp_a", "rep_a", {"delivery": "sent"}, release=(mine, "msg_a")),
        store.record_delivery("cmp_b", "rep_b", {"delivery": "sent"}, release=(taken, "msg_b")),
        store.record_delivery("cmp_c", "rep_c", {"delivery": "delivered"}),
        store.record_delivery("cmp_d", "rep_d", {"delivery": "sent"},
                              release=(store.keys.contact_lock("app_user:d"), "msg_d")))  # (expired: nothing to let go)
    assert changed == [True, True, True, True]
    assert store._statuses.calls < 4  # shared calls (the first goes at once, alone; the rest together)
    assert await store.r.get(mine) is None
    assert await store.r.get(taken) == b"msg_later"
    assert await store.r.get(store.keys.contact_lock("app_user:c")) == b"msg_c"
    assert [(await _state(store, c, r))["delivery"] for c, r in
            (("cmp_a", "rep_a"), ("cmp_b", "rep_b"), ("cmp_c", "rep_c"), ("cmp_d", "rep_d"))] == \
        ["sent", "sent", "delivered", "sent"]
    # a state only moves forward, a lock or not
    assert not await store.record_delivery("cmp_c", "rep_c", {"delivery": "sent"}, release=(mine, "msg_a"))
    assert (await _state(store, "cmp_c", "rep_c"))["delivery"] == "delivered"


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
