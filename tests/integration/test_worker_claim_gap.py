"""GATEWAY_WORKER_CLAIM_GAP_MS: a poll that took jobs is followed by the next no sooner than the
gap, so that jobs queued one by one meanwhile are claimed together (and go through each step in
one Redis call); a job that finds the worker idle is claimed at once, and a backlog is not held.

A real worker against the shared Redis; its claims are recorded as they happen (the worker's own
``_claim``, called through)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from router.store import ComplaintStore
from router.worker import create_worker
from tests.conftest import app_plugins, eventually, run_worker_until
from tests.integration.test_worker_drains_a_backlog import none_event

pytestmark = pytest.mark.integration


def recording_claims(worker) -> list[tuple[float, int]]:
    """(loop time the claim began, jobs it took) for each claim the worker makes from now on."""
    claims: list[tuple[float, int]] = []
    claim = worker._claim

    async def recorded(wanted: list[str], room: int) -> int:
        began = asyncio.get_running_loop().time()
        taken = await claim(wanted, room)
        claims.append((began, taken))
        return taken

    worker._claim = recorded
    return claims


async def test_jobs_queued_one_by_one_while_the_gap_runs_are_claimed_together_and_an_idle_worker_claims_at_once(
        settings):
    settings = replace(settings, worker_claim_gap_ms=2000, worker_poll_seconds=10)  # (polls come from wake-ups)
    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    loop = asyncio.get_running_loop()
    worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
    assert worker.claim_gap == 2.0
    claims = recording_claims(worker)
    try:
        def completed(n: int):
            async def check() -> bool:
                return worker.jobs_complete == n
            return check

        async def scenario() -> bool:
            await store.enqueue(none_event(0))  # the worker idle: claimed at once
            await eventually(completed(1), timeout=10)
            for i in range(1, 6):  # one by one, each with its wake-up, within the gap
                await store.enqueue(none_event(i))
                await asyncio.sleep(0.05)
            await eventually(completed(6), timeout=10)
            await asyncio.sleep(2.2)  # longer than the gap since the last claim: idle again
            queued_at = loop.time()
            await store.enqueue(none_event(6))
            await eventually(completed(7), timeout=10)
            assert [taken for _, taken in claims if taken] == [1, 5, 1]
            first, second, third = (began for began, taken in claims if taken)
            # not before the gap (it counts from the poll's start, which reads the queue before this
            # claim), though the five were queued well within it
            assert second - first >= 1.95
            assert third - queued_at < 0.5  # idle: at once, not at the poll delay (10 s) nor after a gap
            return True

        await run_worker_until(worker, scenario, timeout=30)
    finally:
        await r.aclose()


async def test_a_backlog_is_drained_without_a_gap_between_claims(settings):
    """Each claim fills every slot and leaves due jobs: the next claim goes as soon as a slot frees
    (40 jobs through 4 slots would take ten gaps, 10 s, with one between claims)."""
    settings = replace(settings, worker_claim_gap_ms=1000, worker_max_jobs=4, worker_poll_seconds=5)
    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    await store.enqueue(*(none_event(i) for i in range(40)))
    worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
    claims = recording_claims(worker)
    try:
        async def drained() -> bool:
            return await r.zcard(store.keys.arq_queue) == 0

        loop = asyncio.get_running_loop()
        began = loop.time()
        await run_worker_until(worker, drained, timeout=30)
        assert worker.jobs_complete == 40
        assert loop.time() - began < 5
        assert sum(taken for _, taken in claims) == 40 and len([c for c in claims if c[1]]) >= 10
    finally:
        await r.aclose()


def test_a_burst_run_claims_without_a_gap(settings):
    """A burst run (``gateway worker --burst``, the tests' own) only works through what is queued."""
    assert create_worker(replace(settings, worker_claim_gap_ms=50), burst=True, handle_signals=False,
                         plugins=app_plugins()).claim_gap == 0
    assert create_worker(replace(settings, worker_claim_gap_ms=50), handle_signals=False,
                         plugins=app_plugins()).claim_gap == 0.05
