"""A job the worker is taking when Redis goes away for a moment is neither lost nor held up.

The worker talks to Redis through a fault-injecting proxy (tests/faultproxy.py) that resets its
connection in the middle of one chosen answer: the answer to the worker's claim of a job (the
job's score), or to its read of the job itself (the job's function name). Redis stays up; only
the worker's view of it breaks, as in a failover or a restart.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from msgspec.structs import replace

from router.store import ComplaintStore, PlannedJob
from router.worker import create_worker
from tests.conftest import app_plugins, run_worker_until

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(redis_fault_proxy):
    return redis_fault_proxy


async def queue_one_job(settings, redis_url) -> tuple[aioredis.Redis, ComplaintStore, bytes]:
    """A job due now (a complaint event for a complaint that does not exist: it ends at once);
    answers the test's own Redis client, the store, and the job's score as Redis writes it."""
    r = aioredis.from_url(redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    await store.enqueue(PlannedJob("dispatch_event", "event:cmp_none:created:0",
                                   ("cmp_none", "created", 0, "worker", {}), defer_ms=-1234))
    (job_id, score), = await r.zrange(store.keys.arq_queue, 0, -1, withscores=True)
    return r, store, str(int(score)).encode()


def cuts(proxy) -> int:
    return sum(1 for c in proxy.connections if c.cut_at is not None)


async def test_claims_lost_with_the_connection_do_not_use_up_the_workers_job_slots(settings, proxy, redis_url):
    """Each claim that meets a reset gives its job slot back, and the in-progress mark it may
    have left (Redis ran the claim, only its answer was lost) is removed: with two slots, a third
    claim lost in a row still finds a free one and the job runs at once. Before, a lost claim
    kept its slot for good (a worker with every slot lost took no job again, without a word),
    and its mark held the job back for the job timeout + 10 s."""
    settings = replace(settings, worker_max_jobs=2)
    r, store, score = await queue_one_job(settings, redis_url)
    proxy.cut(after=score)  # the claim script answers the job's score
    worker = create_worker(replace(settings, redis_url=f"redis://127.0.0.1:{proxy.port}/0"),
                           handle_signals=False, plugins=app_plugins())

    async def done() -> bool:
        if cuts(proxy) >= 3:  # three claims lost: more than the worker has slots
            proxy.pass_through()
        return await r.zcard(store.keys.arq_queue) == 0  # then claimed and run

    try:
        await run_worker_until(worker, done)
        assert cuts(proxy) >= 3
    finally:
        await r.aclose()


async def test_a_job_whose_start_meets_a_reset_runs_again_at_once(settings, proxy, redis_url):
    """The worker claimed the job, and its read of the job broke: the job is freed for the next
    poll, not left to its in-progress key (job timeout + 10 s, here 70 s)."""
    settings = replace(settings, job_timeout_seconds=60)
    r, store, _ = await queue_one_job(settings, redis_url)
    proxy.cut(after=b"dispatch_event")  # only the job's own record names its function
    worker = create_worker(replace(settings, redis_url=f"redis://127.0.0.1:{proxy.port}/0"),
                           handle_signals=False, plugins=app_plugins())

    async def done() -> bool:
        if cuts(proxy):
            proxy.pass_through()
        return await r.zcard(store.keys.arq_queue) == 0

    try:
        await run_worker_until(worker, done)  # within 30 s, well before the in-progress key would expire
        assert cuts(proxy) >= 1
    finally:
        await r.aclose()
