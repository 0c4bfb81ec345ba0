"""A value read from Redis at most once every so often, with one read for all who find it due.

The worker's jobs read a few small settings this way (the active routing rules' version, the
deadline policy, the supervisors' templates). When a read is due, every job that asks before it
answers waits for that same read instead of sending its own: saturated, each of them otherwise sent
one (~0.9 template reads a message). A read that fails is every waiter's error, and the next
caller reads again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Generic, TypeVar

T = TypeVar("T")


class CachedRead(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]], every_s: float) -> None:
        self.read = read
        self.every_s = every_s
        self.value: T | None = None
        self.read_at: float | None = None  # monotonic time the value's read started; None: never read
        self._task: asyncio.Task[T] | None = None

    def fresh(self) -> bool:
        return self.read_at is not None and time.monotonic() - self.read_at <= self.every_s

    async def get(self, *, force: bool = False) -> T:
        if not force and self.fresh():
            return self.value  # type: ignore[return-value]
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop or force:
            task = self._task = loop.create_task(self._read())
            task.add_done_callback(_retrieved)
        return await asyncio.shield(task)  # a cancelled caller leaves the read to the others

    async def _read(self) -> T:
        started = time.monotonic()
        value = await self.read()
        if self.read_at is None or started >= self.read_at:  # (a forced read may end before an older one)
            self.value, self.read_at = value, started
        return value


def _retrieved(task: asyncio.Task[object]) -> None:
    """A read whose callers were all cancelled: its failure is nobody's to report."""
    if not task.cancelled():
        task.exception()


__all__ = ["CachedRead"]
