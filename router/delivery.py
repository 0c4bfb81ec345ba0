"""Sending what must go out: replies to customers (through their channel's sender plugin, with the
outcome recorded on the reply) and complaint events to listener plugins.

A reply is sent inline where it is made when the worker makes it (a new case's acknowledgement),
else by the ``send_reply`` job, which sends only a reply still ``queued`` (safe to run twice).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any

from arq import Retry

from normalizer.ids import ms_to_dt
from normalizer.pii import mask_text
from normalizer.schema import Complaint, ComplaintEvent, DeliveryResult, OutboundMessage, Reply
from router.context import WorkerContext, context_of, job_try
from router.store import ComplaintStore, NotFound

log = logging.getLogger("gateway.worker")

MAX_SEND_TRIES = 8
#: How long a send waits for a free place among its channel's sends in flight before backing off.
SEND_GATE_WAIT_S = 0.5


async def send_reply(ctx: dict[str, Any], complaint_id: str, reply_id: str) -> str:
    """The job behind every reply that was not sent inline (agent replies, outbox retries)."""
    w = context_of(ctx)
    store = w.store
    try:
        complaint = await store.get(complaint_id)
    except NotFound:
        return "missing"
    reply = next((r for r in complaint.replies if r.id == reply_id), None)
    if reply is None or reply.delivery != "queued":
        await store.drop_from_outbox(complaint_id, reply_id)  # nothing left to send for it
        return "already"
    result = await deliver(w, complaint, reply)
    if result.status == "failed" and result.retryable:
        tried = job_try(ctx)
        if tried < MAX_SEND_TRIES:
            log.warning("send %s on %s failed (try %d), retrying: %s", reply_id, reply.channel, tried,
                        mask_text(result.error or ""))
            raise Retry(defer=min(300, 2**tried))
        await _record(store, complaint.id, reply.id, DeliveryResult(status="failed", error=result.error))
    return result.status


async def deliver(w: WorkerContext, complaint: Complaint, reply: Reply) -> DeliveryResult:
    """Hand one reply to its channel's sender and record the outcome (a retryable failure is
    left queued for the caller to retry)."""
    store = w.store
    sender = w.plugins.sender(reply.channel, w.services)
    if sender is None:
        result = DeliveryResult(status="failed", error=f"no sender for channel {reply.channel!r}")
        await _record(store, complaint.id, reply.id, result)
        return result
    outbound = OutboundMessage(
        id=reply.id, channel=reply.channel, complaint_id=complaint.id, case_number=complaint.case_number,
        to=reply.to or complaint.contact, text=reply.text, kind=reply.kind, language=reply.language or complaint.language,
        thread=thread_of(complaint, reply.channel),
    )
    if not await store.replicated("send"):  # what led to this reply must survive a failover first
        return DeliveryResult(status="failed", error="not yet copied to a standby", retryable=True)
    gate = w.send_gate(reply.channel)
    try:
        await asyncio.wait_for(gate.acquire(), timeout=SEND_GATE_WAIT_S)
    except asyncio.TimeoutError:  # the channel's provider is stalling: back off, keep the slot for others
        return DeliveryResult(status="failed", error="channel busy: too many sends in flight", retryable=True)
    try:
        result = await sender.send(outbound)
    except Exception as exc:  # a sender that raises is a transient failure until tries run out
        w.plugins.errors[reply.channel] += 1
        result = DeliveryResult(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], retryable=True)
    finally:
        gate.release()
    if not (result.status == "failed" and result.retryable):
        await _record(store, complaint.id, reply.id, result)
    return result


async def send_unrecorded(w: WorkerContext, message: OutboundMessage, what: str) -> None:
    """A message to someone with no case to record it on (a status answer to a stranger): sent
    once if the channel has a sender, never retried."""
    sender = w.plugins.sender(message.channel, w.services)
    if sender is None:
        return
    try:
        await sender.send(message)
    except Exception as exc:  # noqa: BLE001 - an answer to a stranger is not retried
        log.warning("%s on %s failed: %s", what, message.channel, type(exc).__name__)


def thread_of(complaint: Complaint, channel: str) -> dict[str, str]:
    """What a threaded channel (e-mail) needs to answer in the customer's thread: the provider ids
    of the customer's messages on that channel, newest last, and the subject."""
    ids = [m.provider_message_id for m in complaint.messages if m.channel == channel and m.provider_message_id]
    thread: dict[str, str] = {}
    if ids:
        thread["in_reply_to"] = ids[-1]
        thread["references"] = " ".join(ids[-10:])
    subject = next((m.subject for m in reversed(complaint.messages) if m.channel == channel and m.subject), None)
    if subject:
        thread["subject"] = subject
    return thread


async def _record(store: ComplaintStore, complaint_id: str, reply_id: str, result: DeliveryResult) -> None:
    state: dict[str, Any] = {"delivery": result.status, "provider_message_id": result.provider_message_id,
                             "error": result.error}
    if result.status == "delivered":
        state["delivered_at"] = datetime.now(timezone.utc).isoformat()
    await store.record_delivery(complaint_id, reply_id, state)


async def dispatch_event(
    ctx: dict[str, Any], complaint_id: str, kind: str, at_ms: int, actor: str, detail: dict[str, str]
) -> str:
    """The job that tells listener plugins about a complaint event (they are told to expect repeats)."""
    w = context_of(ctx)
    try:
        complaint = await w.store.get(complaint_id)
    except NotFound:
        return "missing"
    event = ComplaintEvent(kind=kind, complaint_id=complaint.id, case_number=complaint.case_number,
                           at=ms_to_dt(at_ms), actor=actor, detail=detail)
    await w.plugins.emit(event, complaint)
    return "sent"


__all__ = ["MAX_SEND_TRIES", "SEND_GATE_WAIT_S", "deliver", "dispatch_event", "send_reply", "send_unrecorded",
           "thread_of"]
