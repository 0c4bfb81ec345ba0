"""The send gate (router/delivery.py): sends in flight per channel are capped; a full channel makes
the next send wait a moment and then back off as a retryable failure, a send waiting for a slot
takes the one let go, and a free slot is taken. Real Redis for the delivery records."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import msgspec
import pytest

from normalizer.schema import Complaint, ComplaintStatus, Contact, DeliveryResult, Reply
from plugins.hookspecs import hookimpl
from router import delivery
from router.context import WorkerContext
from tests.conftest import app_plugins

pytestmark = pytest.mark.integration


class HeldSender:
    """A provider that answers only when told to."""

    def __init__(self) -> None:
        self.started = 0
        self.go = asyncio.Event()

    async def send(self, message):
        self.started += 1
        await self.go.wait()
        return DeliveryResult(status="sent", provider_message_id=f"p-{message.id}")


class HeldChannel:
    def __init__(self) -> None:
        self.sender = HeldSender()

    @hookimpl
    def channel_sender(self, channel, services):
        return self.sender if channel == "held" else None


def _case(n: int) -> tuple[Complaint, Reply]:
    now = datetime.now(timezone.utc)
    complaint = Complaint(id=f"cmp_gate{n}", case_number=f"C-20261203-9{n:05d}", status=ComplaintStatus.accepted,
                          category="other", formal_complaint=False, channel="held", customer_id=f"cus_gate{n}",
                          contact=Contact(kind="app_user", value=f"u{n}"), language="en", created_at=now,
                          updated_at=now)
    return complaint, Reply(id=f"rep_gate{n}", kind="ack", text="We got it", author="system", channel="held",
                            created_at=now)


async def _holding_both_slots(w: WorkerContext, channel: HeldChannel, numbers: tuple[int, int]) -> list[asyncio.Task]:
    """The sends of cases ``numbers`` started and held by the provider: the channel's two slots taken."""
    held = [asyncio.create_task(delivery.deliver(w, *_case(n))) for n in numbers]
    async with asyncio.timeout(10):
        while channel.sender.started < 2:
            await asyncio.sleep(0.01)
    return held


async def test_a_full_channel_backs_off_and_a_freed_slot_is_taken(settings, store, monkeypatch) -> None:
    monkeypatch.setattr(delivery, "SEND_GATE_WAIT_S", 0.3)
    channel = HeldChannel()
    w = WorkerContext.of(msgspec.structs.replace(settings, worker_max_jobs=8), store, app_plugins(channel))
    gate = w.send_gate("held")
    assert not gate.locked()
    first = await _holding_both_slots(w, channel, (1, 2))
    assert gate.locked()
    busy = await delivery.deliver(w, *_case(3))  # waits out the gate's time, then backs off
    assert (busy.status, busy.retryable) == ("failed", True) and "channel busy" in (busy.error or "")
    waiting = asyncio.create_task(delivery.deliver(w, *_case(4)))
    await asyncio.sleep(0.05)
    assert gate.locked() and not waiting.done() and channel.sender.started == 2  # it waits for a slot
    channel.sender.go.set()  # the provider answers: the slots free, the waiting send takes one
    results = await asyncio.gather(*first, waiting)
    assert [r.status for r in results] == ["sent", "sent", "sent"]
    assert channel.sender.started == 3 and not gate.locked()
    assert (await delivery.deliver(w, *_case(5))).status == "sent"  # a free slot is taken


async def test_a_send_cancelled_as_a_slot_frees_is_cancelled_and_leaves_the_slot(settings, store) -> None:
    """A job cut short (its timeout, a worker stopping) in the turn a slot frees for its send:
    the send is cancelled, never made, and the slot is left for the next (``wait_for`` on 3.11
    took the slot and sent as if not cancelled, CPython gh-86296)."""
    channel = HeldChannel()
    w = WorkerContext.of(msgspec.structs.replace(settings, worker_max_jobs=8), store, app_plugins(channel))
    gate = w.send_gate("held")
    first = await _holding_both_slots(w, channel, (6, 7))
    waiting = asyncio.create_task(delivery.deliver(w, *_case(8)))
    await asyncio.sleep(0.05)
    assert not waiting.done() and gate.locked()
    gate.release()  # a slot frees (what a send's end does) ...
    waiting.cancel()  # ... in the turn its job is cut short
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert channel.sender.started == 2 and not gate.locked()  # not sent; the slot is free for the next
    await gate.acquire()  # (the slot freed above, taken back: the two held sends let theirs go below)
    channel.sender.go.set()
    assert [r.status for r in await asyncio.gather(*first)] == ["sent", "sent"]
