"""Workers: heartbeats, whether a job is still queued or running, messages waiting too long, and
the gateways' intake load the workers pace themselves by (router/pacing.py)."""

from __future__ import annotations

from normalizer.ids import now_ms
from router.store.base import StoreBase
from router.store.keys import Keys


#: ``INFO persistence`` fields that are 1 while a child process of Redis writes its data.
FORK_FLAGS = ("aof_rewrite_in_progress", "rdb_bgsave_in_progress", "module_fork_in_progress")


class Workers(StoreBase):
    async def worker_alive(self, within_ms: int = 15_000) -> bool:
        return bool(await self.r.zcount(self.keys.workers, now_ms() - within_ms, "+inf"))

    async def worker_heartbeat(self, worker_id: str) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.workers, {worker_id: now_ms()})
            pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms() - 3_600_000)
            await pipe.execute()

    async def report_intake_load(self, gateway_id: str, load: float, expires_ms: int) -> None:
        """One gateway process's load now (see router.pacing.IntakeLoadReport), kept ``expires_ms``:
        a stopped gateway's last report is left out after that."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.intake_load, gateway_id, f"{load:.3f} {now_ms() + expires_ms}")
            pipe.pexpire(self.keys.intake_load, expires_ms)
            await pipe.execute()

    async def forget_intake_load(self, gateway_id: str) -> None:
        await self.r.hdel(self.keys.intake_load, gateway_id)

    async def intake_load(self) -> float:
        """The highest load a gateway process reported that has not expired (0: none)."""
        now = now_ms()
        highest = 0.0
        for raw in (await self.r.hgetall(self.keys.intake_load)).values():
            load, _, until = raw.decode().partition(" ")
            try:
                if int(until) >= now:
                    highest = max(highest, float(load))
            except ValueError:  # not ours: never read as a load
                continue
        return highest

    async def persisting_in_a_child(self) -> bool:
        """Whether Redis is writing a snapshot or rewriting its AOF in a forked child process
        (``INFO persistence``): the child takes a CPU of the host, and an ``appendfsync always``
        Redis's writes stall behind its disk writes meanwhile."""
        info = await self.r.info("persistence")
        return any(str(info.get(flag, 0)) == "1" for flag in FORK_FLAGS)

    async def job_exists(self, job_id: str) -> bool:
        """Queued (a message's job has no job key: its place in arq's queue is all of it), running,
        or done with a result kept."""
        job_id = self.keys.job_id(job_id)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zscore(self.keys.arq_queue, job_id)
            pipe.exists(Keys.arq_job(job_id), Keys.arq_in_progress(job_id), Keys.arq_result(job_id))
            queued, keys = await pipe.execute()
        return queued is not None or bool(keys)

    async def stale_pending(self, older_than_ms: int, limit: int = 500) -> list[str]:
        ids = await self.r.zrangebyscore(self.keys.pending, "-inf", now_ms() - older_than_ms, start=0, num=limit)
        return [i.decode() for i in ids]


__all__ = ["FORK_FLAGS", "Workers"]
