"""What an agent does when the worker guessed wrong: correct a case's category (the case is
re-routed, the correction kept as a labelled example for the next model), or merge a case into
the one it repeats (a "possible repeat" the worker linked but did not merge).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from normalizer.schema import Complaint, ComplaintStatus, HistoryEvent
from router import routing, timers
from router.cases.answers import leave_queues
from router.cases.customer_messages import REPEAT_PRIORITY_STEPS, join_as_repeat
from router.cases.opening import POSSIBLE_REPEAT
from router.deadlines import DeadlinePolicy
from router.facts import facts_of_complaint
from router.jobs import event_job
from router.rules import Engine
from router.store import ComplaintStore, Conflict, TxEffects, is_open
from router.understanding.corrections import CorrectionError, record_complaint_correction

#: Waiting in a queue (or held by an agent): a re-route moves it.
QUEUED = (ComplaintStatus.received, ComplaintStatus.accepted, ComplaintStatus.reopened, ComplaintStatus.in_progress)
#: The outcome of a case merged into another.
MERGED = "merged"
#: ``Merge.reason`` of a case an agent merged.
AGENT_MERGE = "agent_merge"


class MergeRefused(ValueError):
    """A merge that makes no sense (into itself, into another customer's case): HTTP 422."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _retried(complaint: Complaint, to_category: str, reason: str) -> bool:
    """The same correction again (a retried request): the category is already the one asked for
    and the last correction was this one."""
    last = next((h for h in reversed(complaint.history) if h.action == "category_corrected"), None)
    return (complaint.category == to_category and last is not None and last.detail.get("to") == to_category
            and last.detail.get("reason") == reason[:500])


async def correct_category(store: ComplaintStore, complaint_id: str, *, to_category: str, reason: str, actor: str,
                           engine: Engine, policy: DeadlinePolicy, key: str | None = None,
                           now: datetime | None = None) -> Complaint:
    """An agent corrects the category: the correction is kept (text and reason masked) as a
    labelled example, the category set (confidence 1.0, by the agent), ``category_corrected`` on
    the history, and an open case re-routed by the active rules - out of its old queue (triage
    included; a claim on it released) into the new one. A retried request changes nothing.
    ``CorrectionError`` (unknown category, no change, blank reason)."""
    reason = reason.strip()
    complaint = await store.get(complaint_id)
    if _retried(complaint, to_category, reason):
        return complaint
    correction, _ = await record_complaint_correction(store.r, store.keys, complaint, to_category=to_category,
                                                      reason=reason, by=actor, key=key)
    at = now or datetime.now(timezone.utc)

    def change(c: Complaint, effects: TxEffects) -> None:
        if any(h.action == "category_corrected" and h.detail.get("correction") == correction.id for h in c.history):
            return  # this very correction was applied already
        if c.category == to_category:
            raise CorrectionError(f"the complaint is already {to_category}")
        old = c.category
        c.category = to_category
        c.category_confidence = 1.0
        c.category_runner_up = None
        c.category_runner_up_confidence = None
        c.history.append(HistoryEvent(at=at, actor=actor, action="category_corrected", detail={
            "from": old, "to": to_category, "reason": reason[:500], "by": actor, "correction": correction.id}))
        effects.jobs.append(event_job(c, "category_corrected", actor, {"from": old, "to": to_category}, at=at))
        if is_open(c):
            _reroute(store, c, effects, engine, policy, at, actor)

    return await store.update(complaint_id, change)


def _reroute(store: ComplaintStore, c: Complaint, effects: TxEffects, engine: Engine, policy: DeadlinePolicy,
             now: datetime, actor: str) -> None:
    """Route the corrected case again: a waiting or held case leaves its queue (and its claim)
    for the queue the rules now give; an answered one only changes skill."""
    decided = engine.decide(facts_of_complaint(c, policy))
    old_skill = c.skill
    held = c.status == ComplaintStatus.in_progress
    c.skill = decided.skill
    c.priority = min(routing.MAX_PRIORITY, decided.priority + min(c.repeat_count, REPEAT_PRIORITY_STEPS))
    c.routed_by = f"{decided.version}:{decided.rule}"
    c.tags.extend(t for t in decided.tags if t not in c.tags)
    c.history.append(HistoryEvent(at=now, actor=actor, action="rerouted", public=False, detail={
        "from": old_skill or "", "skill": decided.skill, "rule": decided.rule, "version": str(decided.version),
        "why": "category_corrected"}))
    effects.jobs.append(event_job(c, "routed", actor, {"skill": decided.skill}, at=now))
    if c.status not in QUEUED:
        return
    if held:  # back to waiting, in the new queue, for whoever works it
        c.status = ComplaintStatus.accepted
        c.assignee = None
        c.lease_expires_at = None
    fr_due = next((d.due for d in c.deadlines if d.kind == "first_response" and d.state == "running"), None)

    def move(pipe: Any) -> None:
        if held:
            store.release_lease(pipe, c.id)
        if old_skill:
            for key in (store.keys.queue(old_skill), store.keys.queue_age(old_skill), store.keys.fr_due(old_skill)):
                pipe.zrem(key, c.id)
        store.enter_queue(pipe, c, fr_due)

    effects.ops.append(move)


# -- an agent merges a case into the case it repeats ----------------------------------------------


async def merge_case(store: ComplaintStore, complaint_id: str, *, into: str, reason: str, actor: str,
                     engine: Engine, policy: DeadlinePolicy, now: datetime | None = None) -> tuple[Complaint, Complaint]:
    """Merge this case into another open case of the same customer, in one call: its messages,
    evidence and replies join the target as a repeat report (the target's priority and route as
    for any repeat); this case is closed as merged, out of its queue, its claim released and its
    timers cancelled; both histories say so. ``(this case, the target)``. ``Conflict`` when either
    is closed; ``MergeRefused`` into itself or another customer's case. A retried call finds the
    merge done and changes nothing."""
    reason = reason.strip()
    at = now or datetime.now(timezone.utc)
    source = await store.get(complaint_id)
    target = await store.get(into)
    if source.id == target.id:
        raise MergeRefused("merge_into_itself", "A case cannot be merged into itself.")
    if source.customer_id != target.customer_id:
        raise MergeRefused("other_customer", f"{target.case_number} is another customer's case.")
    if source.status == ComplaintStatus.closed and source.outcome == MERGED and any(
            h.action == "merged_into" and h.detail.get("into") == target.id for h in source.history):
        return source, target  # done already (a retry)
    if not is_open(source):
        raise Conflict("complaint_closed", f"{source.case_number} is {source.status.value}.")
    first_id = source.messages[0].message_id if source.messages else source.id
    detail = {"from_complaint": source.id, "from_case": source.case_number, "note": reason[:500]}

    def join(c: Complaint, effects: TxEffects) -> None:
        if any(m.message_id == first_id and m.by == actor for m in c.merges):
            return  # joined already: a retry after this step
        if not is_open(c):
            raise Conflict("complaint_closed", f"{c.case_number} is {c.status.value}.")
        join_as_repeat(store, c, effects, message_id=first_id, entries=list(source.messages),
                       evidence=list(source.evidence), channel=source.channel, reason=AGENT_MERGE, detail=detail,
                       engine=engine, policy=policy, now=at, by=actor)
        have = {r.id for r in c.replies}
        c.replies.extend(r for r in source.replies if r.id not in have)
        c.replies.sort(key=lambda r: r.created_at)
        effects.jobs.append(event_job(c, "merged", actor, {"from": source.id, "reason": AGENT_MERGE}, at=at))

    target = await store.update(target.id, join)

    def close(c: Complaint, effects: TxEffects) -> None:
        if not is_open(c):
            raise Conflict("complaint_closed", f"{c.case_number} is {c.status.value}.")
        c.status = ComplaintStatus.closed
        c.outcome = MERGED
        c.outcome_reason = f"merged into {target.case_number}"
        c.lease_expires_at = None
        c.assignee = None
        if POSSIBLE_REPEAT in c.tags and c.possible_repeat_of == target.id:
            c.tags.remove(POSSIBLE_REPEAT)
        effects.ops.append(lambda pipe: store.release_lease(pipe, c.id))
        leave_queues(store, c, effects)
        effects.ops.append(lambda pipe: store.stop_first_response_clock(pipe, c))
        timers.stop(store, c, effects, None, "cancelled", at)
        c.history.append(HistoryEvent(at=at, actor=actor, action="merged_into", detail={
            "into": target.id, "case_number": target.case_number, "reason": reason[:500]}))
        effects.jobs.append(event_job(c, "merged_into", actor, {"into": target.id}, at=at))

    source = await store.update(source.id, close)
    return source, target


__all__ = ["AGENT_MERGE", "MERGED", "MergeRefused", "correct_category", "merge_case"]
