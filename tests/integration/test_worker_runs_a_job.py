"""How ``WakeableWorker`` runs a claimed job: the usual job in the task the claim started for it
(no task of its own, no ``wait_for``, no ``shield``ed finish), every other job by arq's own
``run_job``; with arq's outcomes either way: done, retried later or at once, run again after a
stop (also when the function swallowed it), failed, out of tries.

A real worker against the shared Redis, with job functions of the test's own; arq's keys carry no
prefix, so each job's id is this run's own and its keys are removed afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.worker import Retry, func

from router.arq_worker import WakeableWorker
from router.store import PlannedJob
from router.store.base import job_bytes
from tests.conftest import eventually

pytestmark = pytest.mark.integration

#: What each job saw, by job id: its try, and whether it ran in the task the worker keeps for it.
SEEN: dict[str, list[tuple[int, bool]]] = {}
#: When each try of a job began (monotonic s), by job id.
BEGAN: dict[str, list[float]] = {}


def _record(ctx: dict[str, Any]) -> None:
    job_id = ctx["job_id"]
    own = ctx["worker"].tasks.get(job_id) is asyncio.current_task()
    SEEN.setdefault(job_id, []).append((ctx["job_try"], own))
    BEGAN.setdefault(job_id, []).append(time.monotonic())


async def done(ctx: dict[str, Any], arg: str) -> str:
    _record(ctx)
    return arg


async def retried_once(ctx: dict[str, Any], arg: str) -> None:
    _record(ctx)
    if ctx["job_try"] == 1:
        raise Retry(defer=0.5)


async def retried_at_once(ctx: dict[str, Any], arg: str) -> None:
    _record(ctx)
    if ctx["job_try"] == 1:
        raise Retry()


class _ExtraFails(ValueError):
    def extra(self) -> Any:
        raise RuntimeError("no extra to give")


async def broken_extra(ctx: dict[str, Any], arg: str) -> None:
    _record(ctx)
    raise _ExtraFails("this job cannot be done, nor said why")


async def stubborn(ctx: dict[str, Any], arg: str) -> None:
    """Swallows the stop that cancels it, and ends as if done."""
    _record(ctx)
    try:
        await asyncio.sleep(30)
    except asyncio.CancelledError:
        return


async def broken(ctx: dict[str, Any], arg: str) -> None:
    _record(ctx)
    raise ValueError("this job cannot be done")


async def slow(ctx: dict[str, Any], arg: str) -> None:
    _record(ctx)
    await asyncio.sleep(5)


FUNCTIONS = [func(done, name="done"), func(retried_once, name="retried_once"), func(broken, name="broken"),
             func(slow, name="slow", timeout=0.3), func(retried_at_once, name="retried_at_once"),
             func(broken_extra, name="broken_extra"), func(stubborn, name="stubborn"), func(slow, name="slower")]


@pytest.fixture
async def worker_and_queue(settings):
    r = aioredis.from_url(settings.redis_url)
    queue = f"{settings.redis_prefix}jobs-under-test"
    ids: list[str] = []
    worker = WakeableWorker(functions=FUNCTIONS, redis_settings=RedisSettings.from_dsn(settings.redis_url),
                            queue_name=queue, max_jobs=4, keep_result=0, poll_delay=0.05, max_tries=3,
                            handle_signals=False, wake_key=f"{settings.redis_prefix}wake-under-test",
                            redis_url=settings.redis_url, ctx={})
    worker.ctx["worker"] = worker
    # arq's logger as the worker process sets it (router.worker.run_worker: WARNING unless DEBUG),
    # whatever another test left it or the root logger at
    arq_logger = logging.getLogger("arq.worker")
    level = arq_logger.level
    arq_logger.setLevel(logging.WARNING)
    running = asyncio.create_task(worker.main())

    async def enqueue(function: str, job_id: str = "") -> str:
        job_id = job_id or f"job-{uuid.uuid4().hex}"
        ids.append(job_id)
        now = int(time.time() * 1000)
        await r.set(job_key_prefix + job_id, job_bytes(PlannedJob(function, job_id, ("x",)), now), px=60_000)
        await r.zadd(queue, {job_id: now})
        return job_id

    try:
        yield worker, r, queue, enqueue
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.gather(worker.close(), return_exceptions=True)
        keys = [p + i for i in ids for p in (in_progress_key_prefix, job_key_prefix, retry_key_prefix)]
        await r.delete(queue, *keys)
        await r.aclose()
        arq_logger.setLevel(level)


async def finished(r: aioredis.Redis, queue: str, job_id: str) -> bool:
    """Out of the queue, with its in-progress mark, retry count and bytes gone."""
    return await r.zscore(queue, job_id) is None and not await r.exists(
        in_progress_key_prefix + job_id, retry_key_prefix + job_id, job_key_prefix + job_id)


async def test_a_usual_job_runs_in_the_task_the_worker_keeps_for_it_and_is_finished(worker_and_queue):
    worker, r, queue, enqueue = worker_and_queue
    job_ids = [await enqueue("done") for _ in range(6)]
    await eventually(lambda: _all_finished(r, queue, job_ids), timeout=10)
    assert worker.jobs_complete == 6 and worker.jobs_failed == worker.jobs_retried == 0
    assert all(SEEN[job_id] == [(1, True)] for job_id in job_ids)  # one try each, in the worker's own task


async def _all_finished(r: aioredis.Redis, queue: str, job_ids: list[str]) -> bool:
    return all([await finished(r, queue, job_id) for job_id in job_ids])


async def test_a_job_that_asks_to_be_retried_is_queued_again_for_later_and_runs_its_second_try(worker_and_queue):
    worker, r, queue, enqueue = worker_and_queue
    job_id = await enqueue("retried_once")
    await eventually(lambda: _all_finished(r, queue, [job_id]), timeout=10)
    assert [t for t, _ in SEEN[job_id]] == [1, 2]
    assert BEGAN[job_id][1] - BEGAN[job_id][0] >= 0.45  # its second try waited out the deferral
    assert worker.jobs_retried == 1 and worker.jobs_complete == 1


async def test_a_job_retried_without_a_deferral_runs_again_at_once(worker_and_queue):
    worker, r, queue, enqueue = worker_and_queue
    job_id = await enqueue("retried_at_once")
    await eventually(lambda: _all_finished(r, queue, [job_id]), timeout=10)
    assert [t for t, _ in SEEN[job_id]] == [1, 2]
    assert worker.jobs_retried == 1 and worker.jobs_complete == 1


async def _tries(job_id: str, n: int) -> bool:
    return len(SEEN.get(job_id, [])) >= n


async def test_a_job_that_raises_is_failed_once_finished_and_logged_by_arqs_logger(worker_and_queue, caplog):
    worker, r, queue, enqueue = worker_and_queue
    with caplog.at_level(logging.ERROR, logger="arq.worker"):
        job_id = await enqueue("broken")
        await eventually(lambda: _all_finished(r, queue, [job_id]), timeout=10)
    assert SEEN[job_id] == [(1, True)]  # not tried again
    assert worker.jobs_failed == 1 and worker.jobs_complete == 0
    failed = [rec for rec in caplog.records if rec.name == "arq.worker" and "failed" in rec.getMessage()]
    assert failed and f"{job_id}:broken" in failed[0].getMessage() and "ValueError" in failed[0].getMessage()


async def test_a_job_that_outlasts_its_timeout_is_failed(worker_and_queue):
    worker, r, queue, enqueue = worker_and_queue
    job_id = await enqueue("slow")
    await eventually(lambda: _all_finished(r, queue, [job_id]), timeout=10)
    assert SEEN[job_id] == [(1, True)] and worker.jobs_failed == 1


async def test_a_job_out_of_tries_is_left_to_arqs_run_job_which_fails_it_without_running_it(worker_and_queue):
    worker, r, queue, enqueue = worker_and_queue
    job_id = f"job-{uuid.uuid4().hex}"
    await r.set(retry_key_prefix + job_id, 3, ex=60)  # three tries made (max_tries=3): the claim counts a fourth
    await enqueue("done", job_id)
    await eventually(lambda: _all_finished(r, queue, [job_id]), timeout=10)
    assert job_id not in SEEN and worker.jobs_failed == 1


async def test_a_failing_job_whose_exception_cannot_say_more_is_failed_and_the_worker_goes_on(worker_and_queue):
    worker, r, queue, enqueue = worker_and_queue
    job_id = await enqueue("broken_extra")
    await eventually(lambda: _all_finished(r, queue, [job_id]), timeout=10)
    after = await enqueue("done")
    await eventually(lambda: _all_finished(r, queue, [after]), timeout=10)
    assert worker.jobs_failed == 1 and worker.jobs_complete == 1


@pytest.mark.parametrize("function", ["slower", "stubborn"])
async def test_a_job_cut_short_by_a_stop_stays_queued_to_run_again(worker_and_queue, function):
    """arq's outcome for a job its worker's stop cancels: counted as retried, its in-progress mark
    gone, the job still queued for the next worker. Also when the function swallowed the stop and
    ended as if done (``stubborn``): arq's ``wait_for`` raises the stop whatever the function did."""
    worker, r, queue, enqueue = worker_and_queue
    job_id = await enqueue(function)
    await eventually(lambda: _tries(job_id, 1), timeout=10)
    worker.handle_sig(signal.SIGUSR1)  # (what SIGINT / SIGTERM do: every running job's task cancelled)

    async def let_go() -> bool:
        return not await r.exists(in_progress_key_prefix + job_id)

    await eventually(let_go, timeout=10)
    assert await r.zscore(queue, job_id) is not None  # still queued: the next worker runs it
    assert worker.jobs_retried == 1 and worker.jobs_complete == 0 and worker.jobs_failed == 0
    assert len(SEEN[job_id]) == 1


async def test_with_arqs_logger_at_info_arqs_own_run_job_runs_the_job_and_logs_it(worker_and_queue, caplog):
    """``GATEWAY_LOG_LEVEL=DEBUG`` leaves arq's logger at INFO: its lines for each job are wanted,
    and only arq's run_job writes them."""
    worker, r, queue, enqueue = worker_and_queue
    with caplog.at_level(logging.INFO, logger="arq.worker"):
        job_id = await enqueue("done")
        await eventually(lambda: _all_finished(r, queue, [job_id]), timeout=10)
    assert SEEN[job_id] == [(1, False)]  # in a task of arq's own
    assert worker.jobs_complete == 1
    assert any(f"{job_id}:done" in rec.getMessage() for rec in caplog.records if rec.name == "arq.worker")
