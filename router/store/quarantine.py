"""The quarantine: inputs a channel could not take, kept raw for a person to look at."""

from __future__ import annotations

from typing import Any

from normalizer.ids import new_id, now_ms
from router.store.base import NotFound, StoreBase


class Quarantine(StoreBase):
    async def quarantine(self, *, channel: str, reason: str, raw: bytes, message_id: str | None = None) -> str:
        qid = new_id("q")
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.quarantined(qid),
                mapping={
                    "channel": channel,
                    "reason": reason[:500],
                    "raw": raw,
                    "received_ms": now_ms(),
                    "message_id": message_id or "",
                },
            )
            pipe.zadd(self.keys.quarantine, {qid: now_ms()})
            await pipe.execute()
        return qid

    async def quarantined(self, limit: int, before_ms: int | None = None) -> list[dict[str, Any]]:
        ids = await self.r.zrevrangebyscore(
            self.keys.quarantine, before_ms - 1 if before_ms else "+inf", "-inf", start=0, num=limit
        )
        items = []
        for qid_b in ids:
            qid = qid_b.decode()
            fields = await self.r.hgetall(self.keys.quarantined(qid))
            if fields:
                items.append({"id": qid, **{k.decode(): v for k, v in fields.items()}})
        return items

    async def quarantined_one(self, qid: str) -> dict[str, Any]:
        fields = await self.r.hgetall(self.keys.quarantined(qid))
        if not fields:
            raise NotFound("quarantine_not_found", f"no quarantined input {qid}")
        return {"id": qid, **{k.decode(): v for k, v in fields.items()}}

    async def discard_quarantined(self, qid: str) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.quarantined(qid))
            pipe.zrem(self.keys.quarantine, qid)
            removed = await pipe.execute()
        if not removed[0]:
            raise NotFound("quarantine_not_found", f"no quarantined input {qid}")


__all__ = ["Quarantine"]
