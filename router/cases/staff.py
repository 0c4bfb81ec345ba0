"""What the desk does to a case besides answering it: claim it from a queue, resolve it, split a
repeat report back out of it; and a claim whose lease ran out going back to its queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from normalizer.ids import dt_to_ms
from normalizer.schema import Complaint, ComplaintStatus, HistoryEvent, MessageStatus
from router import templates, timers
from router.cases import progress
from router.cases.outcomes import REJECTED, RefundProposal, settle
from router.store import ComplaintStore, Conflict, NotFound, PlannedJob, TxEffects

#: Claimable: waiting in a queue, or held (a lease taken again).
CLAIMABLE = (ComplaintStatus.accepted, ComplaintStatus.reopened, ComplaintStatus.in_progress, ComplaintStatus.received)
#: How many queue heads ``claim_most_urgent`` tries before it answers that there is nothing.
CLAIM_ROUNDS = 20


# -- claims -------------------------------------------------------------------------------------


@dataclass
class Claimed:
    complaint: Complaint
    lease_expires_at: datetime


async def claim(store: ComplaintStore, skill: str, *, agent: str, actor: str, lease_seconds: int) -> Claimed | None:
    """Lease the next case of a skill queue to an agent (``None``: the queue is empty). A case
    answered or resolved since it was queued is dropped from the lease and the next one taken. The
    first claim of a case tells the customer it is taken (``router.cases.progress``: held while they
    heard from us moments ago, dropped if the agent answers first)."""
    policy = await timers.load_policy(store)
    while True:
        claimed = await store.claim(skill, agent, lease_seconds)
        if claimed is None:
            return None
        cid, expires_ms = claimed
        expires = datetime.fromtimestamp(expires_ms / 1000, tz=timezone.utc)

        def change(complaint: Complaint, effects: TxEffects) -> None:
            if complaint.status not in CLAIMABLE:
                raise Conflict("not_claimable", complaint.status.value)
            first_claim = not any(h.action == "claimed" for h in complaint.history)
            now = datetime.now(timezone.utc)
            complaint.status = ComplaintStatus.in_progress
            complaint.assignee = agent
            complaint.lease_expires_at = expires
            complaint.history.append(HistoryEvent(at=now, actor=actor, action="claimed",
                                                  public=True, detail={"lease_expires_at": expires.isoformat()}))
            if first_claim:
                progress.announce(store, complaint, effects, "taken", now, policy.progress)

        try:
            complaint = await store.update(cid, change)
        except Conflict:
            # answered or resolved meanwhile: drop the stale lease and take the next one
            async with store.r.pipeline(transaction=True) as pipe:
                store.release_lease(pipe, cid)
                await pipe.execute()
            continue
        return Claimed(complaint, expires)


async def claim_most_urgent(store: ComplaintStore, skills: list[str], *, agent: str, actor: str,
                            lease_seconds: int) -> Claimed | None:
    """Lease the most urgent case across the given skill queues (the lowest head score)."""
    for _ in range(CLAIM_ROUNDS):
        heads = []
        for skill in skills:
            head = await store.r.zrange(store.keys.queue(skill), 0, 0, withscores=True)
            if head:
                heads.append((head[0][1], skill))
        if not heads:
            return None
        claimed = await claim(store, min(heads)[1], agent=agent, actor=actor, lease_seconds=lease_seconds)
        if claimed is not None:
            return claimed
    return None


async def requeue_expired_leases(store: ComplaintStore) -> int:
    """Claims whose lease ran out: the case goes back to its queue, unassigned."""
    returned = await store.requeue_expired()
    for cid, agent in returned:
        def change(complaint: Complaint, _: TxEffects, agent: str = agent) -> None:
            if complaint.status == ComplaintStatus.in_progress and complaint.assignee == agent:
                complaint.status = ComplaintStatus.accepted
                complaint.assignee = None
                complaint.lease_expires_at = None
                complaint.history.append(HistoryEvent(at=datetime.now(timezone.utc), actor="system",
                                                      action="lease_expired", detail={"agent": agent}))
        try:
            await store.update(cid, change)
        except NotFound:
            continue
    return len(returned)


# -- resolving ----------------------------------------------------------------------------------


async def resolve(store: ComplaintStore, complaint_id: str, *, outcome: str, reason: str, no_survey: bool,
                  actor: str, agent: str | None, reopen_window_s: int, root_cause: str | None = None,
                  refund: RefundProposal | None = None) -> Complaint:
    """Close a case with its outcome (and its ``root_cause``, one of ``ROOT_CAUSES``). The customer
    hears the outcome (and, if rejected, why and what route is open), then the survey; their next
    message within ``reopen_window_s`` answers the survey or reopens the case. With a ``refund``
    above the policy's threshold the case is not closed yet: the plan awaits a supervisor's
    approval (``router.cases.outcomes``; the answer's ``stage`` says so). ``agent``: an agent
    resolving, who may not close a case another agent holds (``None`` for a supervisor)."""
    await templates.refresh(store.r, store.keys)
    policy = await timers.load_policy(store)
    lease_holder = await store.lease_holder(complaint_id)
    reason = reason.strip()

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if complaint.status in (ComplaintStatus.resolved, ComplaintStatus.closed):
            raise Conflict("complaint_closed", f"{complaint.case_number} is already {complaint.status.value}.")
        returned_to = complaint.assignee if complaint.refund is not None and complaint.refund.state == REJECTED else None
        holder = lease_holder or returned_to  # a rejected plan is back with the agent who proposed it
        if agent is not None and holder not in (None, agent):
            raise Conflict("claimed_by_other", f"{complaint.case_number} is with agent {holder}.")
        settle(store, complaint, effects, refund=refund, outcome=outcome, reason=reason, no_survey=no_survey,
               root_cause=root_cause, actor=actor, agent=agent, now=datetime.now(timezone.utc), policy=policy,
               reopen_window_s=reopen_window_s)

    return await store.update(complaint_id, change)


# -- splitting a repeat report out ----------------------------------------------------------------


async def split(store: ComplaintStore, complaint_id: str, *, message_id: str, reason: str, actor: str) -> Complaint:
    """Undo a repeat-report merge: the message leaves this case and goes through the worker
    again, this time to a case of its own (never merged again)."""
    keys = store.keys
    mid = message_id

    def change(complaint: Complaint, effects: TxEffects) -> None:
        merge = next((m for m in complaint.merges if m.message_id == mid and not m.split), None)
        if merge is None:
            raise Conflict("not_merged", f"{mid} was not merged into {complaint.case_number} (or was split already).")
        now = datetime.now(timezone.utc)
        merge.split, merge.split_by, merge.split_reason = True, actor, reason
        complaint.messages = [m for m in complaint.messages if m.message_id != mid]
        complaint.evidence = [e for e in complaint.evidence if e.id not in merge.evidence_ids]
        complaint.repeat_count = max(0, complaint.repeat_count - 1)
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="split",
                                              detail={"message_id": mid, "reason": reason[:500],
                                                      "merge_reason": merge.reason}))
        effects.ops.append(lambda pipe: pipe.hset(keys.msg(mid), mapping={
            "status": MessageStatus.received.value, "nodedup": "1", "complaint_id": ""}))
        effects.ops.append(lambda pipe: pipe.zadd(keys.pending, {mid: dt_to_ms(now)}))
        effects.jobs.append(PlannedJob("process_message", f"ingest:{mid}:split", (mid,)))

    return await store.update(complaint_id, change)


__all__ = ["Claimed", "claim", "claim_most_urgent", "requeue_expired_leases", "resolve", "split"]
