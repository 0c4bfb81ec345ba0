"""The jobs a change writes with itself (in the same transaction), with ids fixed by what they
are about, so a retried step queues the same job, not a second one."""

from __future__ import annotations

from datetime import datetime

from normalizer.ids import dt_to_ms, now_ms
from normalizer.schema import Complaint, MessageEntry
from router.store import PlannedJob


def complaint_id_for(message_id: str) -> str:
    """Deterministic, so a retried job builds the very same complaint."""
    return "cmp_" + message_id.split("_", 1)[-1]


def opening_message(complaint: Complaint) -> MessageEntry | None:
    """The message the complaint was opened with (messages are kept in the order they were
    received, so a follow-up received earlier, or the messages of a case merged into it, may
    come first); its first message when none is (a case made otherwise)."""
    for message in complaint.messages:
        if complaint_id_for(message.message_id) == complaint.id:
            return message
    return complaint.messages[0] if complaint.messages else None


def event_job(complaint: Complaint, kind: str, actor: str, detail: dict[str, str] | None = None, *,
              at: datetime | None = None) -> PlannedJob:
    """A listener notification; its id is fixed by the complaint's history, so a retried step
    queues the same job, not a second one."""
    at_ms = dt_to_ms(at) if at else now_ms()
    return PlannedJob(
        "dispatch_event",
        f"event:{complaint.id}:{kind}:{len(complaint.history)}",
        (complaint.id, kind, at_ms, actor, detail or {}),
    )


def send_job(complaint_id: str, reply_id: str) -> PlannedJob:
    return PlannedJob("send_reply", f"send:{reply_id}", (complaint_id, reply_id))


#: The job that asks a payment-records enricher again (``router.payment_check``).
PAYMENT_LOOKUP = "payment_lookup"


def payment_lookup_job(complaint_id: str, plugin: str, attempt: int, defer_s: float) -> PlannedJob:
    """The ``attempt``-th lookup of a complaint's payment records by ``plugin``: one job per try,
    so a retried step queues the same job, and the next try is a job of its own."""
    return PlannedJob(PAYMENT_LOOKUP, f"payment:{complaint_id}:{plugin}:{attempt}", (complaint_id, plugin, attempt),
                      defer_ms=max(0, int(defer_s * 1000)))
