"""The desk reopens a resolved case (the customer called back, the outcome was wrong): the same
reopening a customer's message within the window makes (``customer_messages.reopen``), with the
desk's reason on the history."""

from __future__ import annotations

from datetime import datetime, timezone

from normalizer.schema import Complaint, ComplaintStatus
from router.cases.customer_messages import reopen
from router.deadlines import DeadlinePolicy
from router.store import ComplaintStore, Conflict, TxEffects


async def reopen_case(store: ComplaintStore, complaint_id: str, *, actor: str, reason: str,
                      policy: DeadlinePolicy) -> Complaint:
    """Back in its queue with fresh clocks; the customer is told it was reopened."""
    def change(complaint: Complaint, effects: TxEffects) -> None:
        if complaint.status != ComplaintStatus.resolved:
            raise Conflict("not_resolved", f"{complaint.case_number} is {complaint.status.value}, not resolved.")
        reopen(store, complaint, effects, policy, datetime.now(timezone.utc), actor=actor,
               detail={"reason": reason.strip()[:500]})

    return await store.update(complaint_id, change)


__all__ = ["reopen_case"]
