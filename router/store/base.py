"""What every part of the store shares: its errors, the jobs and extra writes a change carries,
and ``StoreBase`` (the Redis connection, the registered scripts, writing arq jobs inside a
transaction) that the concern classes build on."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from arq.jobs import serialize_job
from redis.asyncio import Redis

from normalizer.ids import now_ms
from plugins.settings import IntakeLimits
from router.store import scripts
from router.store.keys import Keys, job_key

JOB_EXPIRES_MS = 7 * 86_400_000  # a job waits up to a week for a worker before Redis drops it


class Conflict(Exception):
    """A change that cannot apply to the record as it is now (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotFound(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class PlannedJob:
    """An arq job to write in the same transaction as a change."""

    function: str
    job_id: str
    args: tuple[Any, ...] = ()
    defer_ms: int = 0


@dataclass
class TxEffects:
    """Extra writes a complaint change asks for (queued into the same MULTI)."""

    jobs: list[PlannedJob] = field(default_factory=list)
    ops: list[Callable[[Any], None]] = field(default_factory=list)


def job_bytes(job: PlannedJob, enqueue_ms: int) -> bytes:
    """The bytes arq keeps for ``job`` (its job key), queued at ``enqueue_ms``."""
    return serialize_job(job.function, job.args, {}, None, enqueue_ms)


class StoreBase:
    """The connection and scripts every concern of the store uses (``self.r``, ``self.keys``)."""

    def __init__(self, prefix: str = "cg:", *, worker_wake: bool = True, limits: IntakeLimits | None = None) -> None:
        self.keys = Keys(prefix)
        self.redis: Redis | None = None
        self.worker_wake = worker_wake
        self.limits = limits or IntakeLimits()
        self._intake_script: Any = None
        self._prepare_script: Any = None
        self._commit_script: Any = None
        self._claim_script: Any = None
        self._requeue_script: Any = None
        self._status_script: Any = None
        self._case_script: Any = None
        #: This process's block of case numbers per day: [next, last] (``Complaints.case_number``),
        #: and the lock one job holds while it takes the next block for all.
        self._case_blocks: dict[str, list[int]] = {}
        self._case_refill: tuple[Any, asyncio.Lock] | None = None  # (its event loop, the lock)
        #: Skills this process's commits put in the skills set (never removed from it).
        self._skills_known: set[str] = set()
        #: The complaint commits of this process's jobs, grouped (``Complaints._group_commit``).
        self._commits: Any = None
        #: Delivery states recorded by this process's jobs, grouped (``Deliveries.record_delivery``).
        self._statuses: Any = None
        #: The message loads of this process's jobs, grouped (``Preparing.prepare``).
        self._prepares: Any = None

    def bind(self, redis: Redis) -> None:
        self.redis = redis
        self._intake_script = redis.register_script(scripts.INTAKE_LUA)
        self._prepare_script = redis.register_script(scripts.PREPARE_LUA)
        self._commit_script = redis.register_script(scripts.COMMIT_LUA)
        self._commits = self._statuses = self._prepares = None  # (made again for this client when first used)
        self._case_blocks.clear()  # (numbers of another Redis's sequence)
        self._claim_script = redis.register_script(scripts.CLAIM_LUA)
        self._requeue_script = redis.register_script(scripts.REQUEUE_EXPIRED_LUA)
        self._status_script = redis.register_script(scripts.STATUS_LUA)
        self._case_script = redis.register_script(scripts.CASE_BLOCK_LUA)

    @property
    def r(self) -> Redis:
        if self.redis is None:
            raise RuntimeError("ComplaintStore is not bound to Redis")
        return self.redis

    # -- jobs --------------------------------------------------------------------------------

    def queue_jobs(self, pipe: Any, jobs: Sequence[PlannedJob]) -> None:
        """Write arq jobs inside an open MULTI (same layout as ``ArqRedis.enqueue_job``)."""
        if not jobs:
            return
        enqueue_ms = now_ms()
        for job in jobs:
            score = enqueue_ms + job.defer_ms
            job_id = self.keys.job_id(job.job_id)
            pipe.psetex(job_key(job_id), JOB_EXPIRES_MS + job.defer_ms, job_bytes(job, enqueue_ms))
            pipe.zadd(self.keys.arq_queue, {job_id: score})
        if self.worker_wake:
            pipe.lpush(self.keys.wake, "1")
            pipe.ltrim(self.keys.wake, 0, 7)

    async def enqueue(self, *jobs: PlannedJob) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            self.queue_jobs(pipe, jobs)
            await pipe.execute()


__all__ = ["Conflict", "JOB_EXPIRES_MS", "NotFound", "PlannedJob", "StoreBase", "TxEffects", "job_bytes"]
