"""Group commit: the writes that jobs running at the same time in one process ask for, sent as one
script call.

A job hands its entry over and waits for its own answer. When no call is in flight the entry goes
out at once, alone (no waiting for company: a lone message pays no latency); entries handed over
while a call is in flight go out together in the next call, as soon as it returns. Under load —
a backlog, an outage's burst — the worker's concurrent jobs thus share one round trip and, inside
the script, one command per shared key (an index, a queue, the timers) for all of them.

Each entry is applied on its own inside the script (its own checks, its own answer), so an entry
that finds its message processed already answers so without affecting the others (a call may also
answer an entry with an exception: that entry's own failure); an error of the call (Redis away) is
every waiting job's error, and each job's retry sends its entry again — the
script is safe to run twice for the same entry.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

#: At most this many entries per call (a bounded script run and reply).
MAX_BATCH = 64


class GroupCommit:
    def __init__(self, call: Callable[[list[Any]], Awaitable[list[Any]]], max_batch: int = MAX_BATCH) -> None:
        self.call = call
        self.max_batch = max_batch
        self.waiting: list[tuple[Any, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        #: Calls made and entries sent (for benchmarks: entries / calls is the mean batch).
        self.calls = 0
        self.entries = 0

    async def submit(self, entry: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        future.add_done_callback(_retrieved)
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:  # (a store used from another loop, as tests do)
            if task is not None and task.get_loop() is not loop:
                self.waiting = []
            self.waiting.append((entry, future))
            self._task = loop.create_task(self._flush())
        else:
            self.waiting.append((entry, future))
        # (awaited as it is, not through a shield: a job cancelled meanwhile cancels its own future
        # alone, which the call's answer then passes over; its entry still goes out with the others')
        return await future

    async def _flush(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:self.max_batch], self.waiting[self.max_batch:]
                self.calls += 1
                self.entries += len(batch)
                try:
                    answers = await self.call([entry for entry, _ in batch])
                except BaseException as exc:  # noqa: BLE001 - every waiting job gets the call's error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), answer in zip(batch, answers):
                    if future.done():
                        continue
                    if isinstance(answer, Exception):  # that entry's own failure, inside the call
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            if asyncio.current_task() is self._task:  # (left over only when this task was cancelled)
                left, self.waiting = self.waiting, []
                for _, future in left:
                    if not future.done():
                        future.cancel()


def _retrieved(future: asyncio.Future[Any]) -> None:
    """An answer nobody waits for any more (its job was cancelled) is not an error to report."""
    if not future.cancelled():
        future.exception()


__all__ = ["GroupCommit", "MAX_BATCH"]
