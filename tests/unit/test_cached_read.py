"""CachedRead (router/cached_read.py): a setting re-read at most once per period, one read for all
the callers that find it due at the same time, a failed read every waiter's error and read again
by the next caller."""

from __future__ import annotations

import asyncio

import pytest

from router.cached_read import CachedRead


class Source:
    def __init__(self) -> None:
        self.reads = 0
        self.fail = False
        self.gate = asyncio.Event()

    async def read(self) -> int:
        self.reads += 1
        await self.gate.wait()
        if self.fail:
            raise ConnectionError("redis away")
        return self.reads


async def test_callers_that_find_it_due_together_share_one_read() -> None:
    source = Source()
    cached = CachedRead(source.read, every_s=60)
    waiting = [asyncio.create_task(cached.get()) for _ in range(20)]
    await asyncio.sleep(0)
    source.gate.set()
    assert await asyncio.gather(*waiting) == [1] * 20 and source.reads == 1
    assert await cached.get() == 1 and source.reads == 1  # fresh: no read
    assert await cached.get(force=True) == 2 and source.reads == 2


async def test_a_value_older_than_its_period_is_read_again() -> None:
    source = Source()
    source.gate.set()
    cached = CachedRead(source.read, every_s=0.05)
    assert await cached.get() == 1
    await asyncio.sleep(0.08)
    assert await cached.get() == 2


async def test_a_failed_read_fails_its_waiters_and_the_next_caller_reads_again() -> None:
    source = Source()
    source.fail = True
    cached = CachedRead(source.read, every_s=60)
    waiting = [asyncio.create_task(cached.get()) for _ in range(3)]
    await asyncio.sleep(0)
    source.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and source.reads == 1
    source.fail = False
    assert await cached.get() == 2


async def test_a_cancelled_caller_leaves_the_read_to_the_others() -> None:
    source = Source()
    cached = CachedRead(source.read, every_s=60)
    first, second = asyncio.create_task(cached.get()), asyncio.create_task(cached.get())
    await asyncio.sleep(0)
    first.cancel()
    source.gate.set()
    assert await second == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_forced_read_is_not_overwritten_by_an_older_one_that_ends_after_it() -> None:
    gates: list[asyncio.Event] = []

    async def read() -> int:
        gates.append(asyncio.Event())
        n = len(gates)
        await gates[-1].wait()
        return n

    cached = CachedRead(read, every_s=60)
    older = asyncio.create_task(cached.get())
    while len(gates) < 1:
        await asyncio.sleep(0)
    forced = asyncio.create_task(cached.get(force=True))
    while len(gates) < 2:
        await asyncio.sleep(0)
    gates[1].set()
    assert await forced == 2
    gates[0].set()
    assert await older == 1  # its caller gets what it read
    assert await cached.get() == 2 and cached.value == 2  # the cache keeps the newer read
