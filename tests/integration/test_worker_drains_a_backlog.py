"""A backlog queued before the worker looks (an outage's burst, a worker restarted behind its
queue) is drained at the worker's pace, not at one claim per poll delay.

The gateway wakes the worker as it queues a message; a backlog gets no more wake-ups once its
burst is over. Before, a poll that filled the worker's free slots waited for a wake-up whenever a
slot had freed during its own claim, up to the poll delay each time: one worker drained ~100
messages a second at ~20 % of a core. Here the poll delay is 30 s, so one such wait is longer
than the test allows for the whole drain.
"""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from arq.constants import in_progress_key_prefix
from msgspec.structs import replace

from router.store import ComplaintStore, PlannedJob
from router.worker import create_worker
from tests.conftest import app_plugins, run_worker_until

pytestmark = pytest.mark.integration

JOBS = 150


def none_event(n: int) -> PlannedJob:
    """A job due now that ends at once (an event of a complaint that does not exist), the n-th
    in the queue's order. Its id is this run's own: arq's in-progress keys are not prefixed."""
    cid = f"cmp_none{uuid.uuid4().hex[:12]}"
    return PlannedJob("dispatch_event", f"event:{cid}:created:0", (cid, "created", 0, "worker", {}),
                      defer_ms=-1000 + n)


async def backlog_behind_jobs_running_elsewhere(r: aioredis.Redis, store: ComplaintStore, held: int) -> list[str]:
    """JOBS jobs queued behind ``held`` older ones that another worker runs (their in-progress keys
    set as its claim leaves them); answers the held jobs' ids."""
    jobs = [none_event(i) for i in range(held + JOBS)]
    await store.enqueue(*jobs)
    running_elsewhere = [job.job_id for job in jobs[:held]]
    for job_id in running_elsewhere:
        await r.set(in_progress_key_prefix + job_id, "w_other:1.1", px=60_000)
    return running_elsewhere


async def test_a_backlog_without_wake_ups_is_drained_without_waiting_for_the_poll_delay(settings):
    settings = replace(settings, worker_max_jobs=4, worker_poll_seconds=30)
    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    # jobs due now that end at once: events of complaints that do not exist
    await store.enqueue(*(none_event(i) for i in range(JOBS)))
    await r.delete(store.keys.wake)  # queued before the worker looks: no wake-up left for it
    try:
        async def drained() -> bool:
            return await r.zcard(store.keys.arq_queue) == 0

        worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
        await run_worker_until(worker, drained, timeout=20)  # one poll delay is 30 s
        assert worker.jobs_complete == JOBS
    finally:
        await r.aclose()


@pytest.mark.parametrize("held", [3, 9])
async def test_jobs_other_workers_run_at_the_head_of_the_queue_do_not_hold_up_the_rest(settings, held):
    """Jobs stay queued while they run, so those other workers run are the oldest, at the head.
    A worker with fewer free slots than those steps over them to the jobs nobody runs, however
    many workers hold them (9: more than one claim is offered); before, it offered its claim only
    as many jobs as it had room for, all of them running elsewhere, and took nothing until they
    ended."""
    settings = replace(settings, worker_max_jobs=2, worker_poll_seconds=0.2)
    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    jobs = [none_event(i) for i in range(held + 7)]
    await store.enqueue(*jobs)
    running_elsewhere = [job.job_id for job in jobs[:held]]  # the oldest
    for job_id in running_elsewhere:  # as another worker's claim leaves them (arq's in-progress key)
        await r.set(in_progress_key_prefix + job_id, "w_other:1.1", px=60_000)
    try:
        async def the_rest_done() -> bool:
            return await r.zcard(store.keys.arq_queue) == len(running_elsewhere)

        worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
        await run_worker_until(worker, the_rest_done, timeout=15)
        queued = [m.decode() for m in await r.zrange(store.keys.arq_queue, 0, -1)]
        assert queued == running_elsewhere  # left to the worker running them
        assert worker.jobs_complete == len(jobs) - len(running_elsewhere)
    finally:
        await r.delete(*(in_progress_key_prefix + job_id for job_id in running_elsewhere))
        await r.aclose()


@pytest.mark.parametrize("held", [0, 12])
async def test_a_claim_is_offered_a_few_ids_beyond_its_room_once_it_knows_how_many_it_passes_over(settings, held):
    """Each id offered to a claim is three keys packed, sent and looked at. The first claim is
    offered a worker's full set beyond its room; later ones twice as many as the last claim passed
    over (jobs running elsewhere), at least CLAIM_MARGIN_LEAST: a lone worker draining a backlog
    offers a few ids more than its room, and one behind jobs other workers run still steps over
    them."""
    from router.arq_worker import CLAIM_MARGIN_LEAST

    settings = replace(settings, worker_max_jobs=20, worker_poll_seconds=0.2)
    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    running_elsewhere = await backlog_behind_jobs_running_elsewhere(r, store, held)
    try:
        worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
        offers: list[tuple[int, int, int]] = []  # (ids offered, room, taken)
        claim = worker._claim

        async def counted(wanted: list[str], room: int) -> int:
            taken = await claim(wanted, room)
            offers.append((len(wanted), room, taken))
            return taken

        worker._claim = counted

        async def the_rest_done() -> bool:
            return await r.zcard(store.keys.arq_queue) == held

        await run_worker_until(worker, the_rest_done, timeout=20)
        assert worker.jobs_complete == JOBS
        assert offers[0][0] >= min(offers[0][1] + 20, held + JOBS)  # the first: a full set beyond its room
        beyond = [offered - room for offered, room, _ in offers[1:] if offered > room]
        assert beyond and max(beyond) <= max(CLAIM_MARGIN_LEAST, 2 * held)
        if not held:
            assert max(beyond) == CLAIM_MARGIN_LEAST
    finally:
        if running_elsewhere:
            await r.delete(*(in_progress_key_prefix + job_id for job_id in running_elsewhere))
        await r.aclose()


@pytest.mark.parametrize("held", [0, 45])
async def test_a_poll_reads_the_ids_its_claims_can_use_not_arqs_whole_read_limit(settings, held):
    """arq reads up to its queue_read_limit of due ids on every poll (five times the worker's set):
    a lone worker draining a backlog was sent ~250 ids to take the few a finished job freed. A poll
    reads the worker's set (its own running jobs stay queued) and the claim's margin; behind more
    jobs running elsewhere than that (45 here, the worker's set 10), full reads that left room
    read twice as many at once, up to arq's limit, and the worker still steps over them."""
    from router.arq_worker import CLAIM_MARGIN_LEAST

    settings = replace(settings, worker_max_jobs=10, worker_poll_seconds=0.2)
    r = aioredis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    running_elsewhere = await backlog_behind_jobs_running_elsewhere(r, store, held)
    await r.delete(store.keys.wake)
    try:
        worker = create_worker(settings, handle_signals=False, plugins=app_plugins())
        assert worker.queue_read_limit == 100  # arq's: max(5 x max_jobs, 100)
        reads: list[int] = []
        start_jobs = worker.start_jobs

        async def counted(job_ids: list[bytes]) -> None:
            reads.append(len(job_ids))
            await start_jobs(job_ids)

        worker.start_jobs = counted

        async def the_rest_done() -> bool:
            return await r.zcard(store.keys.arq_queue) == held

        await run_worker_until(worker, the_rest_done, timeout=20)
        assert worker.jobs_complete == JOBS
        if not held:  # its set and the margin: 10 + 10 at first, then 10 + CLAIM_MARGIN_LEAST
            assert reads[0] == 20 and max(reads[1:]) <= 10 + CLAIM_MARGIN_LEAST
        else:  # 20, 40, 80 ids: the third read reaches past the 45 held
            assert reads[:3] == [20, 40, 80]
            assert max(reads) <= 100
    finally:
        if running_elsewhere:
            await r.delete(*(in_progress_key_prefix + job_id for job_id in running_elsewhere))
        await r.aclose()
