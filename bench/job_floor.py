"""Benchmark: what the worker's job machinery costs a job — claim, run, finish — with no work in it.

    .venv/bin/python bench/job_floor.py [--jobs 5000] [--rounds 5] [--max-jobs 50]

A redis-server with the embedded Redis's options (AOF, appendfsync always); --jobs jobs due now,
each a no-op (one ``await asyncio.sleep(0)``), drained by one ``WakeableWorker`` in this process
in burst mode, as a message's job is (claimed with its bytes by one script, finished in groups);
the worker's CPU time (this process's, from the first poll to the last finish) over the jobs.

Two ways of running a claimed job, their rounds alternated (the machine's speed drifts from one
minute to the next): the worker's own (``WakeableWorker._run_claimed``: the job in the task its
claim started) and arq's ``run_job`` (the same worker with that path turned off: the job in a task
of its own under ``wait_for``, its finish in a ``shield``ed task). Printed: each round, the median
CPU per job of each, and their ratio. The floor under every message's cost: bench/cost.py gives
the whole of it.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402
from arq.connections import RedisSettings  # noqa: E402
from arq.worker import func  # noqa: E402

from router.arq_worker import WakeableWorker  # noqa: E402
from router.store import PlannedJob  # noqa: E402
from router.store.base import job_bytes  # noqa: E402
from router.worker import new_event_loop  # noqa: E402
from stack import Cluster  # noqa: E402

QUEUE = "bench:floor:queue"


async def noop(ctx: dict[str, Any], arg: str) -> None:
    await asyncio.sleep(0)


class ArqRunJob(WakeableWorker):
    """The same worker, every job run by arq's own ``run_job``."""

    async def _run_claimed(self, job_id: str, score: int, loaded: tuple[Any, ...]) -> bool:
        return False


def one_round(url: str, worker_class: type[WakeableWorker], jobs: int, max_jobs: int) -> float:
    """CPU seconds per job of one drain of ``jobs`` no-op jobs."""
    r = redis.Redis.from_url(url)
    r.flushdb()
    now = int(time.time() * 1000)
    with r.pipeline(transaction=False) as pipe:  # no job keys: the claim makes each job's bytes from its id
        for i in range(jobs):
            pipe.zadd(QUEUE, {f"floor:{i}": now})
        pipe.execute()
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    worker = worker_class(functions=[func(noop, name="noop")], redis_settings=RedisSettings.from_dsn(url),
                          queue_name=QUEUE, max_jobs=max_jobs, keep_result=0, burst=True, handle_signals=False,
                          wake_key="bench:floor:wake", redis_url=url,
                          implicit_job=lambda job_id, score: job_bytes(PlannedJob("noop", job_id, ("x",)), score))
    try:
        started = time.process_time()
        loop.run_until_complete(worker.main())
        cpu = time.process_time() - started
        if worker.jobs_complete != jobs:
            raise RuntimeError(f"{worker.jobs_complete} of {jobs} jobs done")
    finally:
        loop.run_until_complete(worker.close())
        loop.close()
        r.flushdb()
        r.close()
    return cpu / jobs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-jobs", type=int, default=50, help="the worker's slots (GATEWAY_WORKER_MAX_JOBS)")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as tmp:
        cluster = Cluster(Path(tmp))
        cluster.start_redis()
        try:
            one_round(cluster.redis_url, WakeableWorker, 500, args.max_jobs)  # warm-up (imports, scripts)
            own: list[float] = []
            arq: list[float] = []
            for n in range(args.rounds):
                for name, cls, into in (("worker's own", WakeableWorker, own), ("arq's run_job", ArqRunJob, arq)):
                    into.append(one_round(cluster.redis_url, cls, args.jobs, args.max_jobs))
                    print(f"round {n + 1}: {name:14s} {into[-1] * 1e6:6.1f} µs a job")
        finally:
            cluster.stop()
    a, b = statistics.median(own), statistics.median(arq)
    print(f"\nCPU a no-op job (median of {args.rounds} alternated rounds of {args.jobs}): the worker's own run "
          f"{a * 1e6:.1f} µs, arq's run_job {b * 1e6:.1f} µs; ratio {a / b:.2f}")


if __name__ == "__main__":
    main()
