"""The complaint commit's group (``COMMIT_LUA``): the case numbers of the complaints committed in
one call are written with one ``MSETNX`` when none of them is taken, and each complaint still gets
what it would have had alone — its own case number, a taken number refused and replaced, a
message committed twice in one call opening one complaint."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from normalizer.schema import Complaint, ComplaintStatus, Contact
from router.store.complaints import CASE_BLOCK
from tests.integration.test_intake_group import store  # noqa: F401 - the fixture

PLACEHOLDER = "CASENUMBERx"


def complaint(mid: str) -> Complaint:
    now = datetime.now(timezone.utc)
    return Complaint(id=f"cmp_{mid}", case_number=PLACEHOLDER, status=ComplaintStatus.accepted, formal_complaint=False,
                     category="transaction", channel="app", customer_id=f"cus_{mid}",
                     contact=Contact(kind="app_user", value=mid), language="en", created_at=now, updated_at=now,
                     skill="payments")


async def received(store: Any, mids: list[str]) -> str:
    """Messages waiting to be committed, and the day whose case numbers they take (from 101)."""
    day = datetime.now(timezone.utc).strftime("%Y%m%d")
    await store.r.set(store.keys.case_seq(day), 100)
    for mid in mids:
        await store.r.hset(store.keys.msg(mid), mapping={"status": "received", "channel": "app"})
    return day


async def commit_all(store: Any, mids: list[str]) -> list[tuple[bool, str, str, list[Any]]]:
    return list(await asyncio.gather(*(store.commit_new_complaint(mid, complaint(mid), case_placeholder=PLACEHOLDER)
                                       for mid in mids)))


async def test_the_case_numbers_of_one_call_are_all_set_and_each_its_own(store: Any) -> None:
    mids = [f"m{n}" for n in range(6)]
    day = await received(store, mids)
    results = await commit_all(store, mids)
    assert store._commits.calls < len(mids)  # the first alone, the rest in one call
    assert all(created for created, *_ in results)
    cases = [case for _, _, case, _ in results]
    assert sorted(cases) == [f"C-{day}-{n:06d}" for n in range(101, 107)]
    for mid, (_, cid, case, _) in zip(mids, results):
        assert cid == f"cmp_{mid}"
        assert await store.r.get(store.keys.case(case)) == cid.encode()
        assert await store.r.hget(store.keys.msg(mid), "case_number") == case.encode()
    # committed again (a retried job): nothing new, the same answers
    again = await commit_all(store, mids)
    assert [(created, cid, case) for created, cid, case, _ in again] == [(False, cid, case) for _, cid, case, _ in results]


async def test_a_taken_case_number_is_replaced_and_the_others_kept(store: Any) -> None:
    """One number of the call's block belongs to another complaint already (a block that outlived
    a failover): the ``MSETNX`` sets none, each number is checked on its own, and only the
    complaint that drew the taken one takes a number of a new block."""
    mids = [f"t{n}" for n in range(6)]
    day = await received(store, mids)
    taken = f"C-{day}-000103"
    await store.r.set(store.keys.case(taken), "cmp_other")
    results = await commit_all(store, mids)
    assert store._commits.calls < len(mids) + 1
    assert all(created for created, *_ in results)
    cases = [case for _, _, case, _ in results]
    assert taken not in cases and len(set(cases)) == len(mids)
    assert sum(int(case[-6:]) > 100 + CASE_BLOCK for case in cases) == 1  # the one from a new block
    assert await store.r.get(store.keys.case(taken)) == b"cmp_other"
    for _, cid, case, _ in results:
        assert await store.r.get(store.keys.case(case)) == cid.encode()


async def test_one_message_twice_in_a_call_opens_one_complaint(store: Any) -> None:
    mids = ["d0", "d1", "d1", "d2"]
    day = await received(store, sorted(set(mids)))
    results = await commit_all(store, mids)
    by_mid = {}
    for mid, (created, cid, case, _) in zip(mids, results):
        assert cid == f"cmp_{mid}"
        by_mid.setdefault(mid, set()).add(case)
    assert len(by_mid["d1"]) == 1  # both answers name the one complaint and its number
    assert sum(created for created, *_ in results) == 3
    numbers = await store.r.keys(store.keys.case(f"C-{day}-*"))
    assert len(numbers) == 3  # the second entry's number was not written


async def test_new_complaints_leave_their_messages_marked_with_what_intake_wrote(store: Any) -> None:
    """A call whose complaints are all new writes them at once without reading their messages'
    records first; each record is then what it would have been after reading it: processed, its
    complaint and case, and the time and channel the intake wrote."""
    from tests.integration.test_intake_group import message

    msgs = [message(f"u{n}") for n in range(5)]
    for m in msgs:
        assert (await store.intake(m, idempotency_scope=None)).status == "accepted"
    before = [await store.r.hgetall(store.keys.msg(m.id)) for m in msgs]

    def opened(m: Any) -> Complaint:
        c = complaint(m.id)
        c.id, c.created_at = "cmp_" + m.id.split("_", 1)[-1], m.received_at
        return c

    results = await asyncio.gather(*(store.commit_new_complaint(m.id, opened(m), case_placeholder=PLACEHOLDER)
                                     for m in msgs))
    assert store._commits.calls < len(msgs)
    for m, old, (created, cid, case, _) in zip(msgs, before, results):
        assert created
        assert await store.r.hgetall(store.keys.msg(m.id)) == {
            b"status": b"processed", b"complaint_id": cid.encode(), b"case_number": case.encode(),
            b"received_ms": old[b"received_ms"], b"channel": old[b"channel"]}
        assert (await store.get(cid)).case_number == case


async def test_a_call_with_a_complaint_written_already_decides_each_message_as_alone(store: Any) -> None:
    """One complaint of a call exists already (its job ran again): no body of the call is written
    ahead, each message's record is read, and that message answers what its first commit made
    while the others are opened."""
    mids = ["r0", "r1", "r2", "r3"]
    await received(store, mids)
    first = await store.commit_new_complaint("r1", complaint("r1"), case_placeholder=PLACEHOLDER)
    assert first[0]
    calls = store._commits.calls
    results = await commit_all(store, mids)
    assert store._commits.calls - calls == 1  # r1 again, with the three new ones
    assert [created for created, *_ in results] == [True, False, True, True]
    assert results[1][1:3] == first[1:3]
    assert (await store.get("cmp_r1")).case_number == first[2]  # the body its first commit wrote
    for mid, (_, cid, case, _) in zip(mids, results):
        assert await store.r.hget(store.keys.msg(mid), "case_number") == case.encode()
        assert (await store.get(cid)).case_number == case


async def test_jobs_that_find_the_numbers_used_up_together_take_one_block(store: Any) -> None:
    """Jobs that need a case number while the process's block is used up wait for the one job
    that takes the next block, instead of each taking a block (and leaving it nearly unused)."""
    day = "20991231"
    numbers = await asyncio.gather(*(store.case_number(day) for _ in range(40)))
    assert len(set(numbers)) == 40 and all(n.startswith(f"C-{day}-") for n in numbers)
    assert int(await store.r.get(store.keys.case_seq(day))) == 3 * CASE_BLOCK  # 40 numbers: three blocks


async def test_two_complaints_drawing_one_number_in_a_call_do_not_share_it(store: Any) -> None:
    """A stale block's number and the same number from the new block (after a failover lost the
    sequence's writes) can meet in one call: the second complaint is refused the number, as alone."""
    mids = ["s0", "s1", "s2"]
    day = await received(store, mids)

    def entry(mid: str, n: int) -> Any:
        return store._commit_entry(mid, complaint(mid), [], case_placeholder=PLACEHOLDER, case=f"C-{day}-{n:06d}",
                                   day=day, outbox=(), fingerprint=b"", timers=None, incident_note=())

    # the first goes alone; the other two wait for it and go together, with one number
    results = await asyncio.gather(entry("s0", 110), entry("s1", 112), entry("s2", 112))
    assert [r[0] for r in results] == [b"created", b"created", b"case_taken"]
    assert await store.r.get(store.keys.case(f"C-{day}-000112")) == b"cmp_s1"
    assert await store.r.hget(store.keys.msg("s2"), "status") == b"received"  # left for its retry
    # its body, written ahead with the others' (none of them existed), taken back with the number in it
    assert await store.r.exists(store.keys.complaint("cmp_s2")) == 0
    assert (await store.get("cmp_s1")).case_number == f"C-{day}-000112"



async def test_each_complaint_of_a_call_gets_its_categorys_incident_window(store: Any) -> None:
    """The script sends a category's incident window once per call, with the first complaint of
    that category in it; the later ones name that complaint, and get the very same window: their
    own category's, every complaint of the call noted in it, nothing of another category's."""
    from normalizer.ids import now_ms
    from router.incidents import Incidents

    incidents = Incidents(store, window_minutes=10, min_customers=3)
    mids = [f"w{n}" for n in range(7)]
    categories = ["transaction", "transaction", "app_technical", "transaction", "app_technical", "transaction",
                  "app_technical"]
    await received(store, mids)
    earlier = {c: [f"cmp_old_{c}_{n}".encode() for n in range(3)] for c in set(categories)}
    for category, ids in earlier.items():  # what the windows held before
        await store.r.zadd(store.keys.incident_recent(category), {cid: now_ms() - 1_000 for cid in ids})
        await store.r.hset(store.keys.incident_texts(category), mapping={cid: "cus_old\tq1 q2 q3" for cid in ids})

    def commit(mid: str, category: str) -> Any:
        c = complaint(mid)
        c.category = category
        note = incidents.note_args(c.id, c.customer_id, category, frozenset({"charged", "twice", "refund", mid}))
        return store.commit_new_complaint(mid, c, case_placeholder=PLACEHOLDER, incident_note=note)

    await store.r.hset(store.keys.msg("warm"), mapping={"status": "received", "channel": "app"})
    await store.commit_new_complaint("warm", complaint("warm"), case_placeholder=PLACEHOLDER)  # script, numbers
    calls = store._group_commit().calls
    # w1 twice: its second entry answers "already" (no window) between the others of its category
    handed = [*zip(mids, categories)][:3] + [("w1", "transaction")] + [*zip(mids, categories)][3:]
    results = await asyncio.gather(*(commit(mid, category) for mid, category in handed))
    assert store._group_commit().calls - calls == 1  # all eight handed over before the call went out
    assert results[3][0] is False and results[3][3] == []
    del results[3]
    for category in set(categories):
        shared = [window for (_, _, _, window), c in zip(results, categories) if c == category]
        called = {f"cmp_{m}".encode() for m, c in zip(mids, categories) if c == category}
        assert set(shared[0][8][0::2]) == called  # all of the call's landed by it, with one number
        assert shared[0][0] == len(called) + len(earlier[category])  # noted before the window was counted
        assert shared[0][0] == await store.r.zcard(store.keys.incident_recent(category))
        assert all(window is shared[0] for window in shared)  # sent once, the same window for each
        for window in shared:  # each complaint's check: its window's entries all known here, none read
            known, among, _ = await incidents._window(category, 0, window)
            assert sorted(known.entries[i][4] for i in known.entries if among[known._rows[i]]) == sorted(
                await store.r.zrange(store.keys.incident_recent(category), 0, -1))
    assert incidents.window_reads == 0


def test_a_window_named_by_its_place_in_the_answer_is_filled_in() -> None:
    from router.store.complaints import shared_windows

    window = [2, [b"cmp_z", b"cus\ttok\t3", b"1000"], None, b"v1", 4, None, None, b"900", [b"cmp_a", b"cmp_b"]]
    empty = [1, [], None, b"", 1, None, None, b"900", [b"cmp_c"]]
    answers = [[b"created", b"cmp_a", b"C-1", window], [b"already", b"cmp_x", b"C-0"],
               [b"created", b"cmp_b", b"C-2", 1], [b"case_taken"], [b"created", b"cmp_c", b"C-3", empty]]
    filled = shared_windows(answers)
    assert filled[2] == [b"created", b"cmp_b", b"C-2", window] and filled[2][3] is window
    assert filled[1] == [b"already", b"cmp_x", b"C-0"] and filled[3] == [b"case_taken"]
    assert filled[4] == [b"created", b"cmp_c", b"C-3", empty]  # a window of its own, not a place


async def test_a_complaint_that_does_not_encode_fails_its_own_commit_alone(store: Any) -> None:
    """The complaints of a call are encoded by the call, one after the other: one that does not
    encode (a field of the wrong type, as a faulty plugin might leave it) is that job's own error,
    and the others of its call are committed."""
    import msgspec

    mids = [f"e{n}" for n in range(5)]
    day = await received(store, mids)
    bad = complaint("e2")
    bad.tags = [1, 2]  # type: ignore[list-item]
    made = [complaint(mid) if mid != "e2" else bad for mid in mids]
    results = await asyncio.gather(*(store.commit_new_complaint(mid, c, case_placeholder=PLACEHOLDER)
                                     for mid, c in zip(mids, made)), return_exceptions=True)
    assert isinstance(results[2], msgspec.ValidationError)
    assert store._commits.calls < len(mids)  # the rest went together, the bad one among them
    for mid, result in zip(mids, results):
        if mid == "e2":
            assert await store.r.hget(store.keys.msg(mid), "status") == b"received"  # left for its retry
            continue
        created, cid, case, _ = result
        assert created and cid == f"cmp_{mid}" and case.startswith(f"C-{day}-")
        assert await store.r.get(store.keys.case(case)) == cid.encode()
        stored = await store.get(cid)
        assert stored.case_number == case  # the placeholder replaced in the encoded complaint
