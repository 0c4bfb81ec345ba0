"""Sending what must go out: replies to customers (through their channel's sender plugin, with the
outcome recorded on the reply) and complaint events to listener plugins.

A reply is sent inline where it is made when the worker makes it (a new case's acknowledgement),
else by the ``send_reply`` job, which sends only a reply still ``queued`` (safe to run twice).

Events reach listeners two ways: one ``dispatch_event`` job per event (what a change queues with
itself), or, for the deadline timers' warnings and breaches, through the event outbox
(``router.timers.raise_event``), which one ``dispatch_events`` job at a time sends in batches: in
order, each batch dropped from the outbox only once every listener took it, so a worker killed
mid-batch leaves it for the next job, and a listener that refuses a batch (a webhook away) gets it
again with backoff, the later events waiting behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import msgspec
from arq import Retry

from normalizer.ids import ms_to_dt, now_ms
from normalizer.pii import mask_text
from normalizer.schema import Complaint, ComplaintEvent, DeliveryResult, OutboundMessage, Reply
from router.context import WorkerContext, context_of, job_try
from router.sender_lock import SenderLock
from router.store import ComplaintStore, NotFound
from router.timers import QueuedEvent, decode_event

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


async def deliver(w: WorkerContext, complaint: Complaint, reply: Reply, *,
                  lock: SenderLock | None = None) -> DeliveryResult:
    """Hand one reply to its channel's sender and record the outcome (a retryable failure is
    left queued for the caller to retry). ``lock``: the sender's lock, held until the reply went
    out, let go by the record (when there is none, a retryable failure, it is still held)."""
    store = w.store
    sender = w.plugins.sender(reply.channel, w.services)
    if sender is None:
        result = DeliveryResult(status="failed", error=f"no sender for channel {reply.channel!r}")
        await _record(store, complaint.id, reply.id, result, lock)
        return result
    outbound = OutboundMessage(
        id=reply.id, channel=reply.channel, complaint_id=complaint.id, case_number=complaint.case_number,
        to=reply.to or complaint.contact, text=reply.text, kind=reply.kind, language=reply.language or complaint.language,
        thread=thread_of(complaint, reply.channel),
    )
    if not await store.replicated("send"):  # what led to this reply must survive a failover first
        return DeliveryResult(status="failed", error="not yet copied to a standby", retryable=True)
    gate = w.send_gate(reply.channel)
    if not gate.locked():  # a free slot is taken at once (no timer for it)
        await gate.acquire()
    else:
        try:  # (asyncio.timeout, not wait_for: on 3.11 a wait_for cancelled as its slot frees returns
            # with the slot taken, as if not cancelled: CPython gh-86296)
            async with asyncio.timeout(SEND_GATE_WAIT_S):
                await gate.acquire()
        except TimeoutError:  # the channel's provider is stalling: back off, keep the slot for others
            return DeliveryResult(status="failed", error="channel busy: too many sends in flight", retryable=True)
    try:
        result = await sender.send(outbound)
    except Exception as exc:  # a sender that raises is a transient failure until tries run out
        w.plugins.errors[reply.channel] += 1
        result = DeliveryResult(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], retryable=True)
    finally:
        gate.release()
    if not (result.status == "failed" and result.retryable):
        await _record(store, complaint.id, reply.id, result, lock)
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


async def _record(store: ComplaintStore, complaint_id: str, reply_id: str, result: DeliveryResult,
                  lock: SenderLock | None = None) -> None:
    """The reply's delivery state recorded; ``lock`` (held until the reply went out) let go in the
    same script (a Redis round trip and an fsync less than letting it go after)."""
    state: dict[str, Any] = {"delivery": result.status, "provider_message_id": result.provider_message_id,
                             "error": result.error}
    if result.status == "delivered":
        state["delivered_at"] = datetime.now(timezone.utc).isoformat()
    held = lock.held_as() if lock is not None else None
    try:
        await store.record_delivery(complaint_id, reply_id, state, release=held)
    except asyncio.CancelledError:
        if lock is not None and held is not None:  # the record may still be sent (with others'), letting the
            lock.forget()  # lock go then: not let go before it (a retry of this message takes it back at once)
        raise
    if lock is not None and held is not None:
        lock.forget()  # (let go by the record's script)


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


#: Events sent to listeners per call (and dropped from the outbox together once they took them).
EVENT_BATCH = 100
#: Tries of the ``dispatch_events`` job before arq lets it go (the timer loop queues a new one
#: within ``router.timers.EVENTS_LOOK_S`` while the outbox holds events): backoff 2, 4 … 256 s.
DISPATCH_EVENTS_TRIES = 10
#: Events a listener keeps refusing for this long are dropped (logged and counted as that
#: plugin's errors), so that a listener gone for good does not hold the outbox for ever.
EVENT_GIVE_UP_MS = 24 * 3600 * 1000

_TRIM_LUA = """
-- KEYS: event outbox; ARGV: how many were sent, the first and the last of them
-- Drops the events just sent from the head of the outbox, if they are still there (a second
-- sender that took them too has dropped them already: nothing else goes).
local n = tonumber(ARGV[1])
if redis.call('LINDEX', KEYS[1], 0) == ARGV[2] and redis.call('LINDEX', KEYS[1], n - 1) == ARGV[3] then
  redis.call('LTRIM', KEYS[1], n, -1)
  return 1
end
return 0
"""


async def dispatch_events(ctx: dict[str, Any]) -> str:
    """The job that sends the event outbox to listener plugins, oldest first, ``EVENT_BATCH`` at a
    time; one runs at a time (its id is fixed). A batch leaves the outbox once every listener took
    it; one refused (a batch listener raised) stays, and the job is tried again with backoff."""
    w = context_of(ctx)
    store = w.store
    trim = store.r.register_script(_TRIM_LUA)
    sent = 0
    stop_at = time.monotonic() + w.settings.job_timeout_seconds / 2  # leave the rest to the next run
    while time.monotonic() < stop_at:
        raw = await store.r.lrange(store.keys.escalations, 0, EVENT_BATCH - 1)
        if not raw:
            return f"sent {sent}"
        events = _decoded(raw)
        refused = await _tell_listeners(w, events) if events and w.plugins.has_listeners else []
        if refused:
            if now_ms() - events[0].at_ms < EVENT_GIVE_UP_MS:
                tried = job_try(ctx)
                log.warning("event listener(s) %s refused %d events (try %d); trying again", ", ".join(refused),
                            len(events), tried)
                raise Retry(defer=min(300, 2 ** min(tried, 8)))
            log.error("event listener(s) %s refused %d events for a day; dropped", ", ".join(refused), len(events))
        await trim(keys=[store.keys.escalations], args=[len(raw), raw[0], raw[-1]])
        sent += len(raw)
    raise Retry(defer=0)  # more than one run's worth waiting: the next run goes on at once


def _decoded(raw: list[bytes]) -> list[QueuedEvent]:
    """The outbox's entries; one that does not decode (damaged) is logged and
    left out, never a reason to stop the rest."""
    events = []
    for entry in raw:
        try:
            events.append(decode_event(entry))
        except msgspec.DecodeError:
            log.error("event outbox: an entry does not decode (%d bytes); dropped", len(entry))
    return events


async def _tell_listeners(w: WorkerContext, queued: list[QueuedEvent]) -> list[str]:
    """Every listener hears ``queued`` (complaints as they stand now; events of a complaint that is
    gone are skipped); answers the batch listeners that refused them."""
    cids = list(dict.fromkeys(e.complaint_id for e in queued))
    complaints = {c.id: c for c in await w.store.get_many(cids)}
    events = [ComplaintEvent(kind=e.kind, complaint_id=e.complaint_id, case_number=complaints[e.complaint_id].case_number,
                             at=ms_to_dt(e.at_ms), actor=e.actor, detail=e.detail)
              for e in queued if e.complaint_id in complaints]
    if not events:
        return []
    return await w.plugins.emit_batch(events, complaints)


__all__ = ["DISPATCH_EVENTS_TRIES", "EVENT_BATCH", "MAX_SEND_TRIES", "SEND_GATE_WAIT_S", "deliver", "dispatch_event",
           "dispatch_events", "send_reply", "send_unrecorded", "thread_of"]
