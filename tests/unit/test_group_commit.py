"""GroupCommit: a job cancelled while it waits for its answer leaves the others' answers alone, and
its entry still goes out with theirs (the script is safe to run twice: its retry sends it again);
an answer or an error nobody waits for any more is never reported as unretrieved."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from router.store.group_commit import GroupCommit


class _Calls:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, entries: list[str]) -> list[str]:
        self.sent.append(list(entries))
        await self.release.wait()
        if self.fail:
            raise ConnectionError("Redis away")
        return [f"done:{e}" for e in entries]


def _unretrieved(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # (an unretrieved exception is reported when its future is collected)
    return [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_a_cancelled_job_leaves_its_batch_to_finish_for_the_others(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
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
    assert not _unretrieved(caplog)


async def test_the_calls_error_is_every_waiting_jobs_and_a_cancelled_one_leaves_none_unretrieved(caplog) -> None:
    caplog.set_level(logging.ERROR, logger="asyncio")
    calls = _Calls(fail=True)
    group = GroupCommit(calls)
    jobs = [asyncio.create_task(group.submit(e)) for e in ("a", "b", "c")]
    await asyncio.sleep(0)
    jobs[1].cancel()  # its entry is in the failing call: nobody waits for its error
    await asyncio.sleep(0)
    calls.release.set()
    for job in (jobs[0], jobs[2]):
        with pytest.raises(ConnectionError):
            await job
    with pytest.raises(asyncio.CancelledError):
        await jobs[1]
    del jobs
    assert not _unretrieved(caplog)
