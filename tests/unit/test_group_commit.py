"""GroupCommit: a job cancelled while it waits for its answer leaves the others' answers alone, and
its entry still goes out with theirs (the script is safe to run twice: its retry sends it again)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from router.store.group_commit import GroupCommit


class _Calls:
    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.release = asyncio.Event()

    async def __call__(self, entries: list[str]) -> list[str]:
        self.sent.append(list(entries))
        await self.release.wait()
        return [f"done:{e}" for e in entries]


async def test_a_cancelled_job_leaves_its_batch_to_finish_for_the_others(recwarn) -> None:
    calls = _Calls()
    group = GroupCommit(calls)
    first = asyncio.create_task(group.submit("a"))  # goes out alone, at once
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(group.submit(e)) for e in ("b", "c", "d")]  # the next call's
    await asyncio.sleep(0)
    first.cancel()  # in flight
    waiting[1].cancel()  # not sent yet
    await asyncio.sleep(0)
    calls.release.set()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.CancelledError):
        await waiting[1]
    assert [await waiting[0], await waiting[2]] == ["done:b", "done:d"]
    assert calls.sent == [["a"], ["b", "c", "d"]]  # the cancelled entries still went out
    gc.collect()
    assert not [w for w in recwarn if "never retrieved" in str(w.message)]


async def test_the_calls_error_is_every_waiting_jobs() -> None:
    async def away(entries: list[str]) -> list[str]:
        raise ConnectionError("Redis away")

    group = GroupCommit(away)
    jobs = [asyncio.create_task(group.submit(e)) for e in ("a", "b")]
    for job in jobs:
        with pytest.raises(ConnectionError):
            await job
