"""A worker behind its queue, beside a busy gateway, on a CPU that another process wants keeps to
its share of a core (router.pacing), loses nothing, and works at full speed again once it has
caught up; and a gateway reports its load for it.

The contention is real: this test's thread (the worker runs in it) and a busy process are pinned
to the same CPU, and the pacer reads the kernel's own figures for the thread. The busy gateway is
a report written the way a gateway writes it (``report_intake_load``), read back through Redis.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from router.metrics import counter_field
from router.pacing import BUSY, KEEPS_UP, REPORT_EVERY_S
from router.store import ComplaintStore, PlannedJob
from router.worker import create_worker
from tests.conftest import app_plugins, eventually, run_worker_until
from tests.redisha import RedisNodes, distinct_ports, poll
from tests.integration.test_worker_drains_a_backlog import none_event

pytestmark = pytest.mark.integration

JOBS = 300
#: Enough for the drain to outlast the smoothed contention's climb past ENGAGE many times over.
SURGE_JOBS = 2000


@contextmanager
def sharing_a_cpu_with_a_busy_process() -> Iterator[None]:
    """This thread and a process that never stops computing, both on this thread's first CPU."""
    mine = os.sched_getaffinity(0)
    cpu = min(mine)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {cpu})
        os.sched_setaffinity(0, {cpu})  # (0: the calling thread)
        yield
    finally:
        os.sched_setaffinity(0, mine)
        hog.kill()
        hog.wait()


def queued(n: int, ago: float, over: float) -> list[PlannedJob]:
    """``n`` jobs due from ``ago`` seconds ago on, evenly over ``over`` seconds (a backlog: queued
    before the worker could look, at ``n / over`` jobs a second). The worker works out from their
    due times how fast they came (``Pacer.need``): 0.1 s is a burst, ~20,000 a second."""
    return [dataclasses.replace(none_event(i), defer_ms=-int((ago - over * i / n) * 1000)) for i in range(n)]


async def drain(settings, jobs: list[PlannedJob], *, gateway_load: float = 0.9, until_caught_up: bool = False):
    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    await store.report_intake_load("gateway-1", gateway_load, 120_000)
    await store.enqueue(*jobs)
    worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
    try:
        async def done() -> bool:
            if await r.zcard(store.keys.arq_queue):
                return False
            # caught up: a poll found nothing due (late 0) and the pace stopped; not only stopped
            # (it may stop for other reasons, e.g. the contention it reads easing under a loaded
            # suite, while the last claim's lateness still stands)
            return not (until_caught_up and (worker.pacer.pacing or worker.pacer.late))

        with sharing_a_cpu_with_a_busy_process():
            await run_worker_until(worker, done, timeout=60)
        # what /metrics shows of it (the worker's last counts are written as it stops)
        worker.counted = [float(v or 0) for v in await r.hmget(
            store.keys.metrics, counter_field("gateway_worker_surges"), counter_field("gateway_worker_rested_seconds"))]
        return worker
    finally:
        await r.aclose()


async def test_a_worker_behind_on_a_contended_cpu_rests_loses_nothing_and_stops_resting_once_caught_up(settings):
    # (a share of 0.1: a test beside it in the suite may pin its own busy process to the same CPU,
    # and a worker left ~0.25 of it by three would owe no rest at a share of 0.3)
    settings = replace(settings, worker_max_jobs=4, worker_surge_share=0.1, worker_surge_lag_seconds=0.5)
    worker = await drain(settings, queued(SURGE_JOBS, ago=5, over=0.1), until_caught_up=True)
    assert worker.jobs_complete == SURGE_JOBS
    pacer = worker.pacer
    assert pacer.rests > 0 and pacer.rested_s > 0
    assert worker.counted == [pacer.surges, pytest.approx(pacer.rested_s)]
    # caught up (its polls find nothing waiting) on the CPU still shared: full speed again
    assert pacer.late == 0 and not pacer.pacing


async def test_a_worker_behind_works_at_full_speed_while_redis_rewrites_its_aof_in_a_child(settings, tmp_path):
    """The same surge as above, but during an AOF rewrite (its child held at work by Redis's own
    ``rdb-key-save-delay``): the worker reads the child in ``INFO persistence`` and never rests."""
    nodes = RedisNodes(tmp_path / "redis", shutil.which("redis-server") or "redis-server")
    port = distinct_ports(1)[0]
    nodes.spawn(port, "--appendfsync", "everysec")
    redis = nodes.client(port)
    try:
        redis.config_set("rdb-key-save-delay", 1_000_000)  # the child writes a key a second
        redis.mset({f"other:{i}": i for i in range(60)})
        redis.bgrewriteaof()
        poll(lambda: redis.info("persistence")["aof_rewrite_in_progress"] == 1, "the AOF rewrite started", 10)
        settings = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0", worker_max_jobs=4,
                           worker_surge_share=0.3, worker_surge_lag_seconds=0.5)
        worker = await drain(settings, queued(SURGE_JOBS, ago=5, over=0.1))
        assert worker.jobs_complete == SURGE_JOBS
        assert redis.info("persistence")["aof_rewrite_in_progress"] == 1  # (the whole drain long)
        pacer = worker.pacer
        assert pacer.forked and pacer.rests == 0 and pacer.surges == 0
    finally:
        try:
            redis.shutdown(nosave=True)  # (the rewrite's child with it)
        except Exception:  # noqa: BLE001 - its answer is the connection closing
            pass
        nodes.kill_all()


async def test_a_worker_further_behind_than_its_bound_works_at_full_speed(settings):
    """GATEWAY_WORKER_SURGE_MOST_BEHIND_SECONDS: customers' first responses wait on routing. The
    surge of the first test (which rests), its jobs due 5 s ago, with a bound of 2 s."""
    settings = replace(settings, worker_max_jobs=4, worker_surge_share=0.3, worker_surge_lag_seconds=0.5,
                       worker_surge_most_behind_seconds=2.0)
    worker = await drain(settings, queued(SURGE_JOBS, ago=5, over=0.1))
    assert worker.jobs_complete == SURGE_JOBS
    assert worker.pacer.rests == 0 and worker.pacer.surges == 0


async def test_a_worker_that_keeps_up_never_rests_on_a_contended_cpu(settings):
    settings = replace(settings, worker_max_jobs=4, worker_surge_lag_seconds=30)
    worker = await drain(settings, [none_event(i) for i in range(JOBS)])
    assert worker.jobs_complete == JOBS
    assert worker.pacer.rests == 0


async def test_a_worker_behind_on_a_contended_cpu_works_at_full_speed_while_no_gateway_is_busy(settings):
    settings = replace(settings, worker_max_jobs=4)
    worker = await drain(settings, queued(JOBS, ago=5, over=0.1), gateway_load=BUSY / 2)
    assert worker.jobs_complete == JOBS
    assert worker.pacer.rests == 0 and worker.pacer.load == BUSY / 2


async def test_a_gateway_reports_its_load_while_it_runs_and_withdraws_it_when_it_stops(settings):
    from litestar.testing import AsyncTestClient

    from gateway.app import create_app

    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    try:
        async with AsyncTestClient(app=create_app(settings)):
            async def reported() -> dict:
                return await r.hgetall(store.keys.intake_load)

            reports = await eventually(reported, timeout=10 * REPORT_EVERY_S)
            assert len(reports) == 1
            assert 0 <= await store.intake_load() <= 1
            assert await r.pttl(store.keys.intake_load) > 0  # (a gateway that dies leaves nothing for long)
        assert await r.hgetall(store.keys.intake_load) == {}
    finally:
        await r.aclose()


async def test_a_share_of_one_core_never_rests_and_a_burst_run_has_no_pace(settings):
    never = create_worker(replace(settings, worker_surge_share=1.0), handle_signals=False, plugins=app_plugins())
    assert never.pacer is not None and not never.pacer.enabled
    burst = create_worker(settings, burst=True, handle_signals=False, plugins=app_plugins())
    assert burst.pacer is None  # a burst run only works through what is queued: nothing to yield to


async def test_a_worker_behind_an_intake_it_routes_with_less_than_a_core_does_not_rest(settings):
    """The surge of the first test, but queued over 10 s, not all at once (200 jobs a second, each
    about a millisecond of CPU or less): routing that intake as it came needs a part of a core, so
    a rest would only leave the worker behind for as long as such an intake lasts."""
    settings = replace(settings, worker_max_jobs=4, worker_surge_share=0.3, worker_surge_lag_seconds=0.5)
    worker = await drain(settings, queued(SURGE_JOBS, ago=12, over=10))  # due 12 s to 2 s ago
    assert worker.jobs_complete == SURGE_JOBS
    pacer = worker.pacer
    assert pacer.need is not None and pacer.need < KEEPS_UP  # (0.1-0.3 here; 0.6 under a loaded suite at 400/s)
    # it rests only in its first second of claims, before it knows (as it always did), then never
    assert pacer.surges <= 1 and pacer.rested_s < 1.5 and not pacer.pacing
