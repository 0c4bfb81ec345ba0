"""Several complaints changed in one transaction (``Complaints.update_many``): what the timer loop
does with a claim of due deadlines. Each change is applied as ``update`` applies it; one that
raises leaves its complaint alone; a complaint changed by another client meanwhile, or named
twice, is changed one by one instead."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis

from normalizer.schema import Complaint, ComplaintStatus, Contact, HistoryEvent
from router.store import Conflict, NotFound, TxEffects, decode_complaint, encode_complaint

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)


def _complaint(n: int) -> Complaint:
    return Complaint(id=f"cmp_{n}", case_number=f"C-20261202-{n:06d}", status=ComplaintStatus.accepted,
                     category="function_fault", formal_complaint=False, channel="app", customer_id=f"cus_{n}",
                     contact=Contact(kind="app_user", value=f"u{n}"), language="en", created_at=T0,
                     updated_at=T0 + timedelta(seconds=5), skill="general", priority=5)


async def _stored(r: Any, store: Any, *numbers: int) -> list[str]:
    k = store.keys
    for n in numbers:
        c = _complaint(n)
        await r.set(k.complaint(c.id), encode_complaint(c))
        await r.zadd(k.idx("status", "accepted"), {c.id: 1})
        await r.zadd(k.queue("general"), {c.id: 1})
    return [f"cmp_{n}" for n in numbers]


async def _read(r: Any, store: Any, cid: str) -> Complaint:
    return decode_complaint(await r.get(store.keys.complaint(cid)))


def _note(action: str, status: ComplaintStatus | None = None) -> Any:
    def change(complaint: Complaint, effects: TxEffects) -> None:
        complaint.history.append(HistoryEvent(at=T0, actor="system", action=action))
        complaint.priority += 1
        if status is not None:
            complaint.status = status
    return change


class _Monitor:
    """The commands Redis runs that name this test's keys (``MONITOR``, from a thread)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.prefix, self.commands = prefix, []
        self._client = redis.Redis.from_url(redis_url)
        self._monitor = self._client.monitor()
        self._conn = self._monitor.__enter__()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = self.prefix + "monitor:stop"
        while True:  # until the stop marker: every command before it is in (Redis keeps their order)
            try:
                command = self._conn.next_command()["command"]
            except Exception:  # noqa: BLE001 - closed
                return
            if stop in command:
                return
            if self.prefix in command:
                self.commands.append(command)

    def named(self, name: str) -> list[str]:
        return [c for c in self.commands if c.split(" ", 1)[0].upper() == name]

    def stop(self) -> None:
        self._client.set(self.prefix + "monitor:stop", "1")
        self._thread.join(timeout=120)  # the marker comes after every command before it
        assert not self._thread.is_alive(), "MONITOR did not reach the stop marker"
        self._client.delete(self.prefix + "monitor:stop")
        self._monitor.__exit__(None, None, None)
        self._client.close()


async def test_several_complaints_change_in_one_watch_and_one_transaction(desk: Any, redis_url: str,
                                                                          prefix: str) -> None:
    r, store, _ = desk
    cids = await _stored(r, store, 1, 2, 3, 4, 5)
    monitor = _Monitor(redis_url, prefix)
    try:
        results = await store.update_many([(cid, _note("sla_warning", ComplaintStatus.in_progress)) for cid in cids])
    finally:
        monitor.stop()
    assert [c.id for c in results] == cids
    for cid in cids:
        stored = await _read(r, store, cid)
        assert [e.action for e in stored.history] == ["sla_warning"]
        assert stored.priority == 6 and stored.status == ComplaintStatus.in_progress
        assert stored.updated_at > T0 + timedelta(seconds=5)
    k = store.keys
    assert await r.zcard(k.idx("status", "accepted")) == 0
    assert await r.zcard(k.idx("status", "in_progress")) == 5
    assert await r.zcard(k.queue("general")) == 5  # re-ranked where they wait (XX: not added elsewhere)
    watches = monitor.named("WATCH")
    assert len(watches) == 1 and all(k.complaint(cid) in watches[0] for cid in cids)
    assert len(monitor.named("EVAL")) == 1  # one read of the five (and their incident links)
    assert len([c for c in monitor.named("SET") if ":complaint:" in c]) == 5


async def test_a_change_that_raises_leaves_its_complaint_as_it_was(desk: Any) -> None:
    r, store, _ = desk
    cids = await _stored(r, store, 1, 2, 3)

    def stale(complaint: Complaint, effects: TxEffects) -> None:
        complaint.priority = 9  # changed, then refused: nothing of it is written
        raise Conflict("stale_timer", complaint.id)

    def broken(complaint: Complaint, effects: TxEffects) -> None:
        raise ValueError("a bug")

    results = await store.update_many([(cids[0], stale), (cids[1], _note("ok")), ("cmp_404", _note("ok")),
                                       (cids[2], broken)])
    assert isinstance(results[0], Conflict) and isinstance(results[2], NotFound)
    assert isinstance(results[3], ValueError)
    assert results[1].priority == 6
    assert (await _read(r, store, cids[0])).priority == 5
    assert [e.action for e in (await _read(r, store, cids[1])).history] == ["ok"]
    assert (await _read(r, store, cids[2])).history == []


async def test_a_complaint_changed_meanwhile_is_changed_again_on_what_is_stored(desk: Any) -> None:
    """Another client writes one of the watched complaints between the read and the write: the
    transaction is refused (nothing of it written) and each change runs again on what is stored."""
    r, store, _ = desk
    cids = await _stored(r, store, 1, 2)
    runs = {"first": 0}

    async def first(complaint: Complaint, effects: TxEffects) -> None:
        runs["first"] += 1
        if runs["first"] == 1:  # an agent's reply lands meanwhile, on the other complaint
            await store.update(cids[1], _note("replied"))
        _note("sla_warning")(complaint, effects)

    results = await store.update_many([(cids[0], first), (cids[1], _note("sla_warning"))])
    assert runs["first"] == 2
    assert [e.action for e in (await _read(r, store, cids[0])).history] == ["sla_warning"]
    second = await _read(r, store, cids[1])
    assert [e.action for e in second.history] == ["replied", "sla_warning"] and second.priority == 7
    assert [e.action for e in results[1].history] == ["replied", "sla_warning"]


async def test_a_complaint_named_twice_takes_both_changes_in_order(desk: Any) -> None:
    r, store, _ = desk
    cids = await _stored(r, store, 1, 2)
    results = await store.update_many([(cids[0], _note("sla_warning")), (cids[1], _note("sla_warning")),
                                       (cids[0], _note("sla_breached"))])
    assert [e.action for e in results[2].history] == ["sla_warning", "sla_breached"]
    assert [e.action for e in (await _read(r, store, cids[0])).history] == ["sla_warning", "sla_breached"]
    assert (await _read(r, store, cids[0])).priority == 7


async def test_redis_away_answers_its_error_for_each(prefix: str) -> None:
    from redis.asyncio import Redis

    from router.store import ComplaintStore

    gone = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)  # nothing listens there
    store = ComplaintStore(prefix)
    store.bind(gone)
    try:
        results = await store.update_many([("cmp_1", _note("a")), ("cmp_2", _note("b"))])
    finally:
        await gone.aclose()
    assert len(results) == 2 and all(isinstance(x, redis.exceptions.ConnectionError) for x in results)


@pytest.mark.parametrize("n", [0, 1])
async def test_none_or_one_is_an_update(desk: Any, n: int) -> None:
    r, store, _ = desk
    cids = await _stored(r, store, *range(1, n + 1))
    results = await store.update_many([(cid, _note("sla_warning")) for cid in cids])
    assert [c.priority for c in results] == [6] * n


async def test_a_write_that_fails_for_one_complaint_fails_it_alone(desk: Any) -> None:
    """A write one change asked for is refused as the transaction runs (here a bad value for a
    sorted set): that complaint answers the error, as ``update`` would (Redis does not roll a
    transaction back: its other writes are made, as with ``update``); the others are changed once,
    not again."""
    r, store, _ = desk
    cids = await _stored(r, store, 1, 2, 3)

    def bad_write(complaint: Complaint, effects: TxEffects) -> None:
        _note("sla_warning")(complaint, effects)
        effects.ops.append(lambda pipe: pipe.zadd(store.keys.queue("general"), {complaint.id: "not a number"}))

    results = await store.update_many([(cids[0], _note("sla_warning")), (cids[1], bad_write),
                                       (cids[2], _note("sla_warning"))])
    assert isinstance(results[1], redis.exceptions.ResponseError)
    assert results[0].priority == results[2].priority == 6
    assert [e.action for e in (await _read(r, store, cids[0])).history] == ["sla_warning"]
    assert [e.action for e in (await _read(r, store, cids[2])).history] == ["sla_warning"]
    # the same write refused in an update of its own: the same error
    cids += await _stored(r, store, 4)
    try:
        await store.update(cids[3], bad_write)
    except redis.exceptions.ResponseError as exc:
        assert type(exc) is type(results[1])
    else:
        raise AssertionError("update took the bad write")


async def test_a_change_whose_write_cannot_be_made_fails_alone_and_writes_nothing(desk: Any) -> None:
    """A change whose writes cannot even be queued (here one that asks for a write that raises):
    nothing of it is sent; the others are written."""
    r, store, _ = desk
    cids = await _stored(r, store, 1, 2)

    def unqueueable(complaint: Complaint, effects: TxEffects) -> None:
        _note("sla_warning")(complaint, effects)

        def op(pipe: Any) -> None:
            pipe.rpush(store.keys.escalations, "half")  # queued, then taken back
            raise ValueError("cannot queue")
        effects.ops.append(op)

    results = await store.update_many([(cids[0], unqueueable), (cids[1], _note("sla_warning"))])
    assert isinstance(results[0], ValueError) and results[1].priority == 6
    assert (await _read(r, store, cids[0])).history == []
    assert await r.llen(store.keys.escalations) == 0
    assert [e.action for e in (await _read(r, store, cids[1])).history] == ["sla_warning"]


async def test_stored_complaints_leave_out_what_is_missing_or_unreadable(desk: Any) -> None:
    r, store, _ = desk
    cids = await _stored(r, store, 1, 2)
    await r.set(store.keys.complaint("cmp_9"), b"z" + b"not zlib at all")
    await r.set(store.keys.complaint("cmp_8"), b"s" + b"not zstd at all")
    stored = await store.stored([*cids, "cmp_404", "cmp_9", "cmp_8"])
    assert sorted(stored) == cids and stored[cids[0]].priority == 5
    assert await store.stored([]) == {}
