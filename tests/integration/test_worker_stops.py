"""A worker told to stop stops, even when the stop comes in the same turn of the event loop as the
end of a job it was waiting on (``asyncio.wait_for`` on Python 3.11 returned there as if not
cancelled, CPython gh-86296: the worker, at capacity, then polled on for good, and the test that
stopped it hung until CI's own limit)."""

from __future__ import annotations

import asyncio

import pytest

from router.worker import create_worker
from tests.conftest import app_plugins

pytestmark = pytest.mark.integration


async def test_a_worker_at_capacity_stopped_as_a_job_ends_stops(settings) -> None:
    worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
    waiting = asyncio.create_task(worker._until_a_slot_frees())  # (what a poll at capacity awaits)
    for _ in range(3):
        await asyncio.sleep(0)
    assert not waiting.done()
    worker._slot_free.set()  # a job ends (its slot frees) ...
    waiting.cancel()  # ... in the turn the worker is stopped
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_worker_at_capacity_polls_again_after_the_poll_delay_or_once_a_slot_frees(settings) -> None:
    worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
    worker.poll_delay_s = 0.05
    async with asyncio.timeout(5):
        await worker._until_a_slot_frees()  # no job ends: back after the poll delay
        waiting = asyncio.create_task(worker._until_a_slot_frees())
        await asyncio.sleep(0)
        worker._slot_free.set()
        await waiting
