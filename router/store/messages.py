"""Messages: intake (the message, its idempotency record and its processing job, written together
or not at all) and its state (loading one for processing: ``preparing``)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import msgspec

from normalizer.ids import dt_to_ms, new_id, now_ms
from normalizer.schema import Contact, InboundMessage, MessageStatus
from plugins.contract import IntakeOutcome
from router.store.base import PlannedJob, StoreBase, job_bytes
from router.store.intake_script import IntakeGroup

IDEMPOTENCY_TTL_S = 7 * 86_400  # providers (WhatsApp) retry for days
RAW_TTL_S = 30 * 86_400

_message_encoder = msgspec.msgpack.Encoder()


def body_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


#: The job of a message taken in: ``<the desk's hash tag>ingest:<message id>`` in arq's queue,
#: scored with the message's arrival. The intake writes no job key for it (one command and ~170
#: bytes of AOF a message less): its id says what it runs, and the worker makes the bytes arq
#: reads from the id and the score (``ingest_job_bytes``). A message queued again by other paths
#: (recovery, a staff action) gets a job key as any job does; the worker reads that one then.
INGEST_JOB = "ingest:"


def ingest_job(mid: str) -> PlannedJob:
    """Message ``mid``'s processing job (the desk's hash tag goes before its id in arq's queue)."""
    return PlannedJob("process_message", INGEST_JOB + mid, (mid,))


def ingest_job_bytes(job_id: str, tag: str, enqueue_ms: int) -> bytes | None:
    """The bytes arq would have read for the message job ``job_id`` (queued with score
    ``enqueue_ms``); None for a job id that is not a message job of the desk with hash tag ``tag``."""
    if not job_id.startswith(tag + INGEST_JOB):
        return None
    mid = job_id[len(tag) + len(INGEST_JOB):]
    # (a message queued again under an id of its own, ``ingest:<id>:split``, has a job key; read
    # from its id only once that key expired, it runs for a message that does not exist: nothing)
    return job_bytes(ingest_job(mid), enqueue_ms) if mid else None


class Messages(StoreBase):
    async def intake(
        self,
        message: InboundMessage,
        *,
        idempotency_scope: str | None,
        request_hash: str = "",
        raw: bytes | None = None,
        limits: bool = True,
    ) -> IntakeOutcome:
        """Store a message and its processing job atomically; refused with ``backpressure`` or
        ``rate_limited`` (nothing stored) when over a limit. Concurrent calls share one round trip
        (``IntakeGroup``: the group commit); each returns once its message is written."""
        k = self.keys
        now_s = int(time.time())
        received_ms = dt_to_ms(message.received_at)
        job_id = k.job_id(ingest_job(message.id).job_id)
        none = k.none
        group = self.__dict__.get("_intake_group")
        if group is None or group.script is not self._intake_script:  # one per bound Redis client
            group = self.__dict__["_intake_group"] = IntakeGroup(self._intake_script, self.r, lambda: (
                [k.pending, k.arq_queue, k.wake, k.metrics, none],
                ["1" if self.worker_wake else "0", self.limits.max_pending, self.limits.contact_per_minute,
                 self.limits.channel_per_second, IDEMPOTENCY_TTL_S, RAW_TTL_S],
                self.limits.wait_replicas, self.limits.wait_ms))
        keys = [
            k.msg(message.id),
            k.idem(message.channel, idempotency_scope) if idempotency_scope else none,
            k.raw(message.id) if raw is not None else none,
            k.rate_contact(message.sender.kind, message.sender.value, now_s // 60)
            if limits and self.limits.contact_per_minute else none,
            k.rate_channel(message.channel, now_s) if limits and self.limits.channel_per_second else none,
        ]
        args = [
            message.id,
            _message_encoder.encode(message),
            received_ms,
            request_hash,
            raw or b"",
            message.channel,
            job_id,
            f"{message.sender.kind}:{message.sender.value}",
            "\n".join(f"{c.kind}:{c.value}" for c in message.verified_contacts),
        ]
        status, mid, replicas = await group.submit(keys, args)
        return IntakeOutcome(status, mid, replicas)

    async def idempotent_message(self, channel: str, scope: str) -> str | None:
        """The id of the message an idempotency scope was first taken as (within the TTL)."""
        value = await self.r.get(self.keys.idem(channel, scope))
        return value.decode().split("|", 1)[0] if value else None

    async def message_state(self, mid: str) -> dict[str, str] | None:
        raw = await self.r.hmget(self.keys.msg(mid), "status", "complaint_id", "channel", "received_ms", "error")
        if raw[0] is None:
            return None
        status, complaint_id, channel, received_ms, error = (v.decode() if v else None for v in raw)
        return {
            "status": status or MessageStatus.received.value,
            "complaint_id": complaint_id,
            "channel": channel,
            "received_ms": received_ms,
            "error": error,
        }

    async def mark_message(self, mid: str, status: MessageStatus, **fields: str) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.msg(mid), mapping={"status": status.value, **fields})
            pipe.zrem(self.keys.pending, mid)
            await pipe.execute()

    # -- customers ---------------------------------------------------------------------------

    async def customer_of(self, contact: Contact) -> str | None:
        value = await self.r.get(self.keys.contact(contact))
        return value.decode() if value else None


__all__ = ["IDEMPOTENCY_TTL_S", "Messages", "RAW_TTL_S", "body_hash"]
