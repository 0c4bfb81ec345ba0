"""Replies on their way out: the outbox (a reply not handed to its channel in time is sent again),
delivery states that only move forward, which reply a provider's message id is, read receipts,
and waits for Redis replicas before something goes out."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from normalizer.ids import ms_to_dt, now_ms
from router.store.base import StoreBase
from router.store.codec import encode_delivery
from router.store.group_commit import GroupCommit

OUTBOUND_TTL_S = 30 * 86_400  # how long a provider's status callback can still find its reply
DELIVERY_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
OUTBOX_GRACE_MS = 30_000  # a reply not handed over by then is sent again by housekeeping


class Deliveries(StoreBase):
    async def count_replicated(self, metrics_field: str) -> bool:
        """Add one to a metrics counter; with ``wait_replicas``, True only once that many
        replicas hold every write made so far. The counter is a write, and WAIT follows it on the
        same connection: replication is in order, so the replicas having the counter means they
        have everything before it."""
        wanted = self.limits.wait_replicas
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.keys.metrics, metrics_field, 1)
            if wanted:
                pipe.wait(wanted, self.limits.wait_ms)
            answers = await pipe.execute()
        return not wanted or answers[-1] >= wanted

    async def replicated(self, why: str) -> bool:
        """With ``wait_replicas``: True once that many replicas hold every write made so far.
        Before anything goes out to a customer, so a failover cannot make the gateway forget it
        sent it."""
        if not self.limits.wait_replicas:
            return True
        return await self.count_replicated(f"gateway_replication_waits|for={why}")

    async def record_delivery(self, complaint_id: str, reply_id: str, state: dict[str, Any], *,
                              release: tuple[str, str] | None = None) -> bool:
        """Delivery state lives beside the complaint, so provider callbacks never rewrite it; it only
        moves forward (a provider's "delivered" that beats our own "sent" to Redis stays). Recorded
        with the other replies a process records at the same time (``GroupCommit``).
        ``release``: a sender's lock (its key and its holder's token) let go in the same script,
        by its holder only: the job that sent the reply holds it until the reply went out."""
        if self._statuses is None:
            script, outbox = self._status_script, self.keys.outbox

            async def call(entries: list[tuple[str, list[Any], tuple[str, str] | None]]) -> list[Any]:
                locks = [lock for _, _, lock in entries if lock is not None]
                return await script(keys=[outbox, *(key for key, _, _ in entries), *(key for key, _ in locks)],
                                    args=[len(entries), *(x for _, args, _ in entries for x in args),
                                          *(token for _, token in locks)])

            self._statuses = GroupCommit(call)
        changed = await self._statuses.submit((self.keys.delivery(complaint_id), [
            reply_id, encode_delivery(state), DELIVERY_RANK.get(state.get("delivery", ""), 0),
            f"{complaint_id}|{reply_id}"], release))
        return bool(changed)

    async def remember_outbound(self, channel: str, provider_id: str, complaint_id: str, reply_id: str, *,
                                contact_value: str | None = None) -> None:
        """Note which reply a provider's message id belongs to, so its status callbacks find it.
        With ``contact_value`` the id is also kept per recipient, for read receipts that only say
        "everything up to this time" (Messenger's watermark)."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.outbound(channel, provider_id), f"{complaint_id}|{reply_id}", ex=OUTBOUND_TTL_S)
            if contact_value:
                key = self.keys.outbound_by_contact(channel, contact_value)
                pipe.zadd(key, {provider_id: now_ms()})
                pipe.expire(key, OUTBOUND_TTL_S)
            await pipe.execute()

    async def apply_provider_status(self, channel: str, provider_id: str, status: str, *,
                                    error: str | None = None, at: datetime | None = None) -> bool:
        """A provider's delivery report for one of our messages. Reports arrive late, twice and out
        of order, so a state only moves forward (sent → delivered → read; failed is final).
        Answers whether anything changed."""
        target = await self.r.get(self.keys.outbound(channel, provider_id))
        if target is None or status not in DELIVERY_RANK:
            return False
        complaint_id, _, reply_id = target.decode().partition("|")
        state: dict[str, Any] = {"delivery": status, "provider_message_id": provider_id, "error": error}
        if status in ("delivered", "read"):
            state["delivered_at"] = (at or datetime.now(timezone.utc)).isoformat()
        return await self.record_delivery(complaint_id, reply_id, state)

    async def apply_read_watermark(self, channel: str, contact_value: str, watermark_ms: int) -> int:
        """Everything we sent to ``contact_value`` up to ``watermark_ms`` has been read."""
        key = self.keys.outbound_by_contact(channel, contact_value)
        ids = await self.r.zrangebyscore(key, "-inf", watermark_ms, start=0, num=500)
        changed = 0
        for pid in ids:
            changed += await self.apply_provider_status(channel, pid.decode(), "read", at=ms_to_dt(watermark_ms))
        if ids:
            await self.r.zrem(key, *ids)
        return changed

    async def overdue_outbox(self, limit: int = 200) -> list[tuple[str, str]]:
        """Replies still not handed to their channel after the grace period (their sender crashed)."""
        due = await self.r.zrangebyscore(self.keys.outbox, "-inf", now_ms(), start=0, num=limit)
        pairs = []
        for member in due:
            cid, _, rid = member.decode().partition("|")
            pairs.append((cid, rid))
            # XX: only an entry still there; one the reply's send removed meanwhile stays removed
            await self.r.zadd(self.keys.outbox, {member: now_ms() + OUTBOX_GRACE_MS * 2}, xx=True)
        return pairs

    async def drop_from_outbox(self, complaint_id: str, reply_id: str) -> None:
        await self.r.zrem(self.keys.outbox, f"{complaint_id}|{reply_id}")

    def add_to_outbox(self, pipe: Any, complaint_id: str, reply_id: str) -> None:
        pipe.zadd(self.keys.outbox, {f"{complaint_id}|{reply_id}": now_ms() + OUTBOX_GRACE_MS})


__all__ = ["DELIVERY_RANK", "Deliveries", "OUTBOUND_TTL_S", "OUTBOX_GRACE_MS"]
