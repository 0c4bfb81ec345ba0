"""An agent's hold on a case after a claim: extended while they work on it, released back to its
queue (claimed by mistake), or handed back with a reason (not theirs to answer: a supervisor
sees why). The claim itself and a lease that runs out are ``router.cases.staff``'s."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from normalizer.ids import dt_to_ms
from normalizer.schema import Complaint, ComplaintStatus, HistoryEvent
from router.store import ComplaintStore, Conflict, TxEffects

#: The tag a handed-back case carries until someone answers it.
HANDED_BACK = "handed_back"


def _holding(complaint: Complaint, holder: str | None, agent: str) -> None:
    if complaint.status != ComplaintStatus.in_progress or holder != agent or complaint.assignee != agent:
        raise Conflict("not_your_lease", f"{complaint.case_number} is not held by {agent} (any more).")


async def extend_lease(store: ComplaintStore, complaint_id: str, *, agent: str, actor: str,
                       lease_seconds: int) -> Complaint:
    """The agent keeps the case ``lease_seconds`` more from now (a lease never shortens)."""
    holder = await store.lease_holder(complaint_id)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        _holding(complaint, holder, agent)
        now = datetime.now(timezone.utc)
        expires = max(now + timedelta(seconds=lease_seconds), complaint.lease_expires_at or now)
        complaint.lease_expires_at = expires
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="lease_extended",
                                              detail={"lease_expires_at": expires.isoformat()}))
        expires_ms = dt_to_ms(expires)
        effects.ops.append(lambda pipe: pipe.zadd(store.keys.leases, {complaint.id: expires_ms}, xx=True))
        effects.ops.append(lambda pipe: pipe.hset(store.keys.lease(complaint.id), "expires", expires_ms))

    return await store.update(complaint_id, change)


async def release_lease(store: ComplaintStore, complaint_id: str, *, agent: str, actor: str,
                        reason: str = "", hand_back: bool = False) -> Complaint:
    """The case goes back to its queue at its place (priority, then age), unassigned. A hand-back
    records the reason and tags the case ``handed_back`` for the supervisors' eyes."""
    holder = await store.lease_holder(complaint_id)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        _holding(complaint, holder, agent)
        now = datetime.now(timezone.utc)
        complaint.status = ComplaintStatus.accepted
        complaint.assignee = None
        complaint.lease_expires_at = None
        detail = {"agent": agent}
        if reason.strip():
            detail["reason"] = reason.strip()[:500]
        if hand_back and HANDED_BACK not in complaint.tags:
            complaint.tags.append(HANDED_BACK)
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="handed_back" if hand_back else "released",
                                              detail=detail))
        due = complaint.first_response_due if complaint.first_responded_at is None else None
        effects.ops.append(lambda pipe: store.release_lease(pipe, complaint.id))
        effects.ops.append(lambda pipe: store.enter_queue(pipe, complaint, due))

    return await store.update(complaint_id, change)


__all__ = ["HANDED_BACK", "extend_lease", "release_lease"]
