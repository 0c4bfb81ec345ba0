"""Outcomes that move money, and why the case happened.

A case resolved with a refund or compensation (涉及退款或补偿的，明确金额和方式) records the amount, the
currency and the method. At or below the policy's threshold for its currency
(``DeadlinePolicy.refunds.approval_threshold``) the policy approves it and the case is resolved at
once; above it, or in a currency the policy names no threshold for, the plan goes to a supervisor
first (提交方案给相关部门审批): the case waits in stage ``awaiting_approval`` (``GET /v1/approvals``),
out of every queue and lease, and the customer is told it awaits approval. A supervisor approves
it (the case is resolved with the proposed outcome; the customer hears the amount, the method and
when to expect the money) or rejects it with a reason (it goes back to the agent who proposed it:
still theirs, listed under ``GET /v1/approvals?state=rejected``; they may propose again or resolve
otherwise). Nobody approves their own proposal (four eyes). Every proposal and decision is in the
history with who and why; listeners hear ``refund_approved`` (the payment desk carries it out).

The resolution clock keeps running while a plan awaits approval: approval is the desk's own step,
not the customer's, and a breach escalates a decision nobody took.

The root cause (``ROOT_CAUSES``) is recorded at resolution; a supervisor may correct it later. The
service report counts causes per category and channel.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import msgspec

from normalizer.ids import dt_to_ms
from normalizer.language import desk_language
from normalizer.schema import ROOT_CAUSES, Amount, Complaint, ComplaintStatus, HistoryEvent, Refund
from router import templates, timers
from router.cases.answers import first_response, leave_queues
from router.cases.customer_messages import after_key
from router.cases.progress import announce
from router.cases.replies import notice, reply_id_for
from router.deadlines import DeadlinePolicy, RefundPolicy
from router.jobs import event_job
from router.store import ComplaintStore, Conflict, TxEffects

AWAITING, APPROVED, REJECTED = "awaiting_approval", "approved", "rejected"
#: Who approved a refund at or below the threshold.
BY_POLICY = "policy"
#: How a method reads in the refund notice ("we are refunding CNY 80.00 <method>").
METHOD_WORDS = {
    "original_route": {"zh": "原路退回至您的付款账户", "en": "to the account you paid from"},
    "wallet_balance": {"zh": "退至您的钱包余额", "en": "to your wallet balance"},
}
#: A decision's reason is kept up to this many characters.
DECISION_LIMIT = 1000


class RefundProposal(msgspec.Struct, frozen=True, kw_only=True):
    """A refund or compensation an agent resolves a case with (validated by the HTTP layer)."""

    amount: Amount  # a positive decimal string, an ISO 4217 code
    method: str  # one of REFUND_METHODS
    kind: str = "refund"  # refund or compensation


class NotAllowed(Exception):
    """A decision the caller may not take (their own proposal): HTTP 403."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _money(amount: Amount) -> str:
    return f"{amount.currency} {amount.value}"


def _summary(refund: Refund) -> dict[str, str]:
    """A refund in a history entry's detail (strings only)."""
    return {"amount": refund.amount.value, "currency": refund.amount.currency, "method": refund.method,
            "kind": refund.kind, "proposal": str(refund.proposal)}


def _awaiting(complaint: Complaint) -> Refund:
    """The refund awaiting a decision on this open case (``Conflict`` otherwise)."""
    if complaint.status in (ComplaintStatus.resolved, ComplaintStatus.closed):
        raise Conflict("complaint_closed", f"{complaint.case_number} is already {complaint.status.value}.")
    refund = complaint.refund
    if refund is None or refund.state != AWAITING:
        state = refund.state if refund is not None else "none"
        raise Conflict("refund_not_awaiting_approval",
                       f"{complaint.case_number} has no refund awaiting approval (refund: {state}).")
    return refund


# -- resolving: at once, or after approval --------------------------------------------------------


def settle(store: ComplaintStore, complaint: Complaint, effects: TxEffects, *, refund: RefundProposal | None,
           outcome: str, reason: str, no_survey: bool, root_cause: str | None, actor: str, agent: str | None,
           now: datetime, policy: DeadlinePolicy, reopen_window_s: int) -> None:
    """The resolve step (``router.cases.staff.resolve``, inside its change): no refund, or one the
    policy approves, resolves the case now; a refund above the threshold is proposed for approval."""
    if complaint.stage == AWAITING:
        raise Conflict("approval_pending", f"{complaint.case_number} has a refund awaiting a supervisor's "
                                           "approval; it is approved or rejected first.")
    if root_cause is not None:
        complaint.root_cause = root_cause
    if refund is None:
        conclude(store, complaint, effects, now=now, actor=actor, outcome=outcome, reason=reason,
                 no_survey=no_survey, reopen_window_s=reopen_window_s, refunds=policy.refunds)
        return
    limit = policy.refunds.threshold(refund.amount.currency)
    proposal = Refund(amount=refund.amount, method=refund.method, kind=refund.kind, state=AWAITING,
                      proposed_by=actor, proposed_at=now,
                      proposal=complaint.refund.proposal + 1 if complaint.refund is not None else 1,
                      threshold=None if limit is None else Amount(value=str(limit), currency=refund.amount.currency),
                      outcome=outcome, outcome_reason=reason, no_survey=no_survey)
    complaint.refund = proposal
    complaint.history.append(HistoryEvent(at=now, actor=actor, action="refund_proposed", detail={
        **_summary(proposal), "outcome": outcome, "reason": reason[:500],
        "threshold": _money(proposal.threshold) if proposal.threshold else "none"}))
    if limit is not None and Decimal(refund.amount.value) <= limit:
        _decide(store, complaint, effects, proposal, APPROVED, BY_POLICY, now,
                f"at or below the approval threshold of {_money(proposal.threshold or refund.amount)}")
        conclude(store, complaint, effects, now=now, actor=actor, outcome=outcome, reason=reason,
                 no_survey=no_survey, reopen_window_s=reopen_window_s, refunds=policy.refunds, refund=proposal)
        return
    # above the threshold: the plan waits for a supervisor, out of every queue and lease
    complaint.stage = AWAITING
    complaint.status = ComplaintStatus.in_progress
    if agent is not None:
        complaint.assignee = agent
    complaint.lease_expires_at = None
    effects.ops.append(lambda pipe: store.release_lease(pipe, complaint.id))
    leave_queues(store, complaint, effects)
    at_ms = dt_to_ms(now)
    effects.ops.append(lambda pipe: pipe.zadd(store.keys.refunds_awaiting, {complaint.id: at_ms}))
    effects.ops.append(lambda pipe: pipe.zrem(store.keys.refunds_returned, complaint.id))
    # the agent has handled the case: its first-response clock is met (the customer hears of it now,
    # or when quiet hours end), as when an agent answers; the resolution clock runs on
    first_response(store, complaint, effects, now)
    announce(store, complaint, effects, AWAITING, now, policy.progress)


def _decide(store: ComplaintStore, complaint: Complaint, effects: TxEffects, refund: Refund, state: str,
            actor: str, now: datetime, reason: str) -> None:
    refund.state, refund.decided_by, refund.decided_at = state, actor, now
    refund.decision_reason = reason[:DECISION_LIMIT] or None
    complaint.history.append(HistoryEvent(at=now, actor=actor, action=f"refund_{state}", detail={
        **_summary(refund), "proposed_by": refund.proposed_by, "reason": reason[:500]}))
    if state == APPROVED:  # the payment desk carries it out
        effects.jobs.append(event_job(complaint, "refund_approved", actor, _summary(refund)))


def conclude(store: ComplaintStore, complaint: Complaint, effects: TxEffects, *, now: datetime, actor: str,
             outcome: str, reason: str, no_survey: bool, reopen_window_s: int, refunds: RefundPolicy,
             refund: Refund | None = None) -> None:
    """Close the case with its outcome. The customer hears it (with an approved ``refund``: the
    amount, the method and when to expect it), then the survey; their next message within
    ``reopen_window_s`` answers the survey or reopens the case."""
    complaint.status = ComplaintStatus.resolved
    complaint.resolved_at = now
    complaint.outcome = outcome
    complaint.outcome_reason = reason or None
    complaint.lease_expires_at = None
    complaint.stage = None
    effects.ops.append(lambda pipe: store.release_lease(pipe, complaint.id))
    effects.ops.append(lambda pipe: pipe.zrem(store.keys.refunds_awaiting, complaint.id))
    effects.ops.append(lambda pipe: pipe.zrem(store.keys.refunds_returned, complaint.id))
    leave_queues(store, complaint, effects)
    effects.ops.append(lambda pipe: store.stop_first_response_clock(pipe, complaint))
    timers.stop(store, complaint, effects, {"resolution"}, "met", now)
    timers.stop(store, complaint, effects, None, "cancelled", now)
    detail = {"outcome": outcome, "reason": reason[:500], "root_cause": complaint.root_cause or "not_recorded"}
    if refund is not None:
        detail.update(_summary(refund))
    complaint.history.append(HistoryEvent(at=now, actor=actor, action="resolved", public=True, detail=detail))
    effects.jobs.append(event_job(complaint, "resolved", actor, {"outcome": outcome}))
    if refund is not None:
        lang = desk_language(complaint.language)
        refund.expected = refunds.expected_wording(refund.method, lang)
        notice(store, complaint, effects, f"outcome_{refund.kind}", reason=reason,
               reply_id=reply_id_for(complaint.id, f"refund{refund.proposal}"), amount=_money(refund.amount),
               method=METHOD_WORDS[refund.method][lang], expected=refund.expected)
    else:
        notice(store, complaint, effects, f"outcome_{outcome}", reason=reason)
    if not no_survey:
        notice(store, complaint, effects, "survey")
    if reopen_window_s:
        effects.ops.append(lambda pipe: pipe.set(after_key(store, complaint.contact), complaint.id,
                                                 ex=reopen_window_s))


# -- a supervisor's decision ----------------------------------------------------------------------


async def approve(store: ComplaintStore, complaint_id: str, *, actor: str, reason: str,
                  reopen_window_s: int) -> Complaint:
    """A supervisor approves the refund awaiting approval: the case is resolved with the proposed
    outcome and the customer told the amount and when to expect it. ``Conflict`` when nothing
    awaits approval (approved or rejected already); ``NotAllowed`` for one's own proposal."""
    await templates.refresh(store.r, store.keys)
    policy = await timers.load_policy(store)
    reason = reason.strip()

    def change(complaint: Complaint, effects: TxEffects) -> None:
        refund = _awaiting(complaint)
        if refund.proposed_by == actor:
            raise NotAllowed("own_proposal", "A refund is approved by someone other than the one who proposed it.")
        now = datetime.now(timezone.utc)
        _decide(store, complaint, effects, refund, APPROVED, actor, now, reason)
        conclude(store, complaint, effects, now=now, actor=actor, outcome=refund.outcome,
                 reason=refund.outcome_reason, no_survey=refund.no_survey, reopen_window_s=reopen_window_s,
                 refunds=policy.refunds, refund=refund)

    return await store.update(complaint_id, change)


async def reject(store: ComplaintStore, complaint_id: str, *, actor: str, reason: str) -> Complaint:
    """A supervisor rejects the refund awaiting approval, with a reason: it goes back to the agent
    who proposed it (still their case, out of the queues; ``returned``), who may propose again or
    resolve otherwise. The customer is not told: their case is still being handled."""
    reason = reason.strip()
    if not reason:
        raise ValueError("a rejection needs a reason")

    def change(complaint: Complaint, effects: TxEffects) -> None:
        refund = _awaiting(complaint)
        now = datetime.now(timezone.utc)
        _decide(store, complaint, effects, refund, REJECTED, actor, now, reason)
        complaint.stage = None
        at_ms = dt_to_ms(now)
        effects.ops.append(lambda pipe: pipe.zrem(store.keys.refunds_awaiting, complaint.id))
        effects.ops.append(lambda pipe: pipe.zadd(store.keys.refunds_returned, {complaint.id: at_ms}))

    return await store.update(complaint_id, change)


async def correct_root_cause(store: ComplaintStore, complaint_id: str, *, root_cause: str, reason: str,
                             actor: str) -> Complaint:
    """A supervisor corrects the root cause recorded for a case (the history keeps both)."""
    if root_cause not in ROOT_CAUSES:
        raise ValueError(f"root_cause must be one of {', '.join(ROOT_CAUSES)}")

    def change(complaint: Complaint, _: TxEffects) -> None:
        complaint.history.append(HistoryEvent(at=datetime.now(timezone.utc), actor=actor, action="root_cause_corrected",
                                              detail={"from": complaint.root_cause or "not_recorded", "to": root_cause,
                                                      "reason": reason.strip()[:500]}))
        complaint.root_cause = root_cause

    return await store.update(complaint_id, change)


# -- what waits for a decision --------------------------------------------------------------------


async def pending(store: ComplaintStore, state: str, *, offset: int, limit: int) -> tuple[list[Complaint], int | None]:
    """Cases whose refund is ``awaiting_approval`` (oldest first), or ``rejected`` and back with its
    agent; answers them and the offset of the next page (None: no more)."""
    key = store.keys.refunds_awaiting if state == AWAITING else store.keys.refunds_returned
    ids = [i.decode() for i in await store.r.zrange(key, offset, offset + limit)]
    found = await store.get_many(ids[:limit])
    items = [c for c in found if c.refund is not None and c.refund.state == state and c.status not in (
        ComplaintStatus.resolved, ComplaintStatus.closed)]
    kept = {c.id for c in items}
    stale = [cid for cid in ids[:limit] if cid not in kept]
    if stale:  # a case merged, deleted or closed some other way: its entry goes
        await store.r.zrem(key, *stale)
    return items, offset + limit if len(ids) > limit else None


__all__ = ["APPROVED", "AWAITING", "BY_POLICY", "METHOD_WORDS", "NotAllowed", "REJECTED", "RefundProposal",
           "approve", "conclude", "correct_root_cause", "pending", "reject", "settle"]
