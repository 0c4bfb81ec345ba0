"""Skill queues: a waiting complaint's place (priority, then age), claims that lease it to an
agent, leases that run out and put it back, first-response due times, and each queue's figures."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Sequence

from normalizer.ids import dt_to_ms, now_ms
from normalizer.schema import Complaint
from router.store.base import StoreBase
from router.store.keys import Keys

DEADLINE_NEAR_MS = 30_000  # a first response due within this counts as "near" in queue views


def queue_score(priority: int, created_ms: int) -> float:
    """Skill queues pop the lowest score: higher priority first, then oldest first."""
    priority = max(0, min(9, priority))
    return float((9 - priority) * 10**13 + created_ms)


class Queues(StoreBase):
    async def claim(self, skill: str, agent: str, lease_seconds: int) -> tuple[str, int] | None:
        """Lease the next complaint of a queue (highest priority, then oldest) to an agent."""
        k = self.keys
        await self.requeue_expired()
        result = await self._claim_script(
            keys=[k.queue(skill), k.queue_age(skill), k.leases],
            args=[now_ms(), lease_seconds * 1000, agent, Keys.head(k.lease), skill],
        )
        if not result:
            return None
        cid, expires = (x.decode() if isinstance(x, bytes) else x for x in result)
        return cid, int(float(expires))

    async def requeue_expired(self, limit: int = 100) -> list[tuple[str, str]]:
        """Put complaints whose claim lease ran out back in their queue; returns (cid, agent)."""
        k = self.keys
        back = await self._requeue_script(
            keys=[k.leases],
            args=[now_ms(), Keys.head(k.lease), Keys.head(k.queue), Keys.head(k.queue_age), limit],
        )
        values = [x.decode() if isinstance(x, bytes) else x for x in back]
        return list(zip(values[0::2], values[1::2]))

    def release_lease(self, pipe: Any, cid: str) -> None:
        pipe.zrem(self.keys.leases, cid)
        pipe.delete(self.keys.lease(cid))

    def enter_queue(self, pipe: Any, complaint: Complaint, first_response_due: datetime | None) -> None:
        """Put a waiting complaint in its skill queue (priority, then age) with its first-response
        due time (the queue's breach count reads it)."""
        if not complaint.skill:
            return
        created_ms = dt_to_ms(complaint.created_at)
        pipe.zadd(self.keys.queue(complaint.skill), {complaint.id: queue_score(complaint.priority, created_ms)})
        pipe.zadd(self.keys.queue_age(complaint.skill), {complaint.id: created_ms})
        pipe.sadd(self.keys.skills, complaint.skill)
        if first_response_due is not None:
            pipe.zadd(self.keys.fr_due(complaint.skill), {complaint.id: dt_to_ms(first_response_due)})

    def leave_queue(self, pipe: Any, complaint: Complaint, escalation_queues: Iterable[str]) -> None:
        """Out of its skill queue and the escalation queues it was copied to (the deadline
        policy names them; ``router.cases.leave_queues`` knows which)."""
        if complaint.skill:
            pipe.zrem(self.keys.queue(complaint.skill), complaint.id)
            pipe.zrem(self.keys.queue_age(complaint.skill), complaint.id)
        for queue in escalation_queues:
            pipe.zrem(self.keys.queue(queue), complaint.id)

    def stop_first_response_clock(self, pipe: Any, complaint: Complaint) -> None:
        if complaint.skill:
            pipe.zrem(self.keys.fr_due(complaint.skill), complaint.id)

    async def lease_holder(self, cid: str) -> str | None:
        agent = await self.r.hget(self.keys.lease(cid), "agent")
        return agent.decode() if agent else None

    async def queue_stats(self, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Each skill queue (those complaints went to, and ``extra``: the rules' queues, empty or not)."""
        k = self.keys
        skills = sorted({s.decode() for s in await self.r.smembers(k.skills)} | set(extra))
        now = now_ms()
        async with self.r.pipeline(transaction=False) as pipe:
            for skill in skills:
                pipe.zcard(k.queue(skill))
                pipe.zrange(k.queue_age(skill), 0, 0, withscores=True)
                pipe.zcount(k.fr_due(skill), "-inf", now)
                pipe.zcard(k.fr_due(skill))
                pipe.zcount(k.fr_due(skill), now, now + DEADLINE_NEAR_MS)
            raw = await pipe.execute()
        stats = []
        for i, skill in enumerate(skills):
            depth, oldest, breached, awaiting, near = raw[i * 5 : i * 5 + 5]
            oldest_age = (now - int(oldest[0][1])) / 1000 if oldest else 0.0
            stats.append(
                {
                    "skill": skill,
                    "depth": depth,
                    "oldest_age_seconds": round(max(0.0, oldest_age), 3),
                    "awaiting_first_response": awaiting,
                    "deadlines_breached": breached,
                    "deadlines_near": near,
                }
            )
        return stats


__all__ = ["DEADLINE_NEAR_MS", "Queues", "queue_score"]
