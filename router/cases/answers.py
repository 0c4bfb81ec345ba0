"""Answering the customer, whoever answers: an agent's reply, a supervisor's answer to an
incident (on every case of it, and on each case that joins it later).

The first answer a case gets is its first response (``first_response``): its time recorded
and measured, the first-response clock and any escalation clock met.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from normalizer.schema import Complaint, ComplaintStatus, HistoryEvent, Reply
from router import metrics, timers
from router.cases import progress
from router.cases.replies import new_reply_id, queue_reply, reply_id_for
from router.deadlines import DEFAULT_ESCALATION_QUEUE, ESCALATION_QUEUE_DETAIL, FIRST_RESPONSE
from router.incidents import Incidents
from router.jobs import event_job
from router.store import ComplaintStore, Conflict, NotFound, TxEffects, is_open


# -- queues -------------------------------------------------------------------------------------


def escalation_queues(complaint: Complaint) -> set[str]:
    """Every escalation queue this case was copied to: each breach records the queue the policy
    named then (a later policy change does not lose the copy). A breach recorded before queues
    were recorded went to the default queue."""
    return {h.detail.get(ESCALATION_QUEUE_DETAIL) or DEFAULT_ESCALATION_QUEUE
            for h in complaint.history if h.action == "sla_breached"}


def leave_queues(store: ComplaintStore, complaint: Complaint, effects: TxEffects) -> None:
    """Out of the skill queue and out of every escalation queue the case was copied to."""
    queues = escalation_queues(complaint)
    effects.ops.append(lambda pipe: store.leave_queue(pipe, complaint, queues))


# -- the first response -------------------------------------------------------------------------


def first_response(store: ComplaintStore, complaint: Complaint, effects: TxEffects, now: datetime) -> None:
    """An answer reached the customer: the first one is the first response (its time recorded and
    measured); the first-response clock and any escalation clock are met, their timers removed."""
    if complaint.first_responded_at is None:
        complaint.first_responded_at = now
        effects.ops.append(lambda pipe: store.stop_first_response_clock(pipe, complaint))
        waited = (now - complaint.created_at).total_seconds()
        effects.ops.append(lambda pipe: metrics.observe(pipe, store.keys, "gateway_first_response_seconds",
                                                        waited, channel=complaint.channel))
    timers.stop(store, complaint, effects, {FIRST_RESPONSE} | {
        d.kind for d in complaint.deadlines if d.kind.startswith("escalation_")}, "met", now)


def answer(store: ComplaintStore, complaint: Complaint, effects: TxEffects, *, reply_id: str, text: str,
           actor: str, now: datetime, agent: str | None = None, awaiting_customer: bool = False,
           detail: dict[str, str] | None = None) -> Reply:
    """Answer the customer on the complaint's channel (an agent's reply or an incident's answer).

    The reply is queued for sending (outbox + send job, in the same transaction); the first
    answer stops the first-response clock (and any escalation clock) exactly as an agent's reply
    does; the case is ``responded``, out of its queues, its claim lease released; listeners hear
    ``replied``. ``agent``: the agent answering, who becomes the assignee if there is none.
    ``awaiting_customer``: the answer asks the customer for something, so the resolution clock
    pauses until they reply."""
    reply = Reply(id=reply_id, kind="agent", text=text, author=actor, channel=complaint.channel, created_at=now)
    first_response(store, complaint, effects, now)
    if awaiting_customer and timers.pause(store, complaint, effects, "resolution", now):
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="clock_paused",
                                              detail={"deadline": "resolution", "until": "customer replies"}))
    complaint.status = ComplaintStatus.responded
    if agent is not None:
        complaint.assignee = complaint.assignee or agent
    complaint.lease_expires_at = None
    effects.ops.append(lambda pipe: store.release_lease(pipe, complaint.id))
    leave_queues(store, complaint, effects)
    event_detail = {"reply_id": reply_id, **(detail or {})}
    complaint.history.append(HistoryEvent(at=now, actor=actor, action="replied", public=True, detail=event_detail))
    queue_reply(store, complaint, effects, reply)
    effects.jobs.append(event_job(complaint, "replied", actor, event_detail))
    return reply


async def reply(store: ComplaintStore, complaint_id: str, *, text: str, actor: str, agent: str,
                claim_binds: bool, awaiting_customer: bool = False) -> tuple[Complaint, Reply]:
    """An agent's (or a supervisor's) reply to an open case. ``claim_binds``: the one replying
    is an agent, who may not answer a case another agent holds (by lease or as assignee)."""
    lease_holder = await store.lease_holder(complaint_id)
    reply_id = new_reply_id()
    policy = await timers.load_policy(store)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if complaint.status in (ComplaintStatus.resolved, ComplaintStatus.closed):
            raise Conflict("complaint_closed", f"{complaint.case_number} is {complaint.status.value}; reopen it first.")
        if claim_binds:
            holder = lease_holder or complaint.assignee
            if holder is not None and holder != agent:
                raise Conflict("claimed_by_other", f"{complaint.case_number} is with agent {holder}.")
        answer(store, complaint, effects, reply_id=reply_id, text=text, actor=actor, now=datetime.now(timezone.utc),
               agent=agent, awaiting_customer=awaiting_customer)
        progress.arm(store, complaint, effects, policy.progress)  # the customer heard from us: counted from now

    complaint = await store.update(complaint_id, change)
    return complaint, next(r for r in complaint.replies if r.id == reply_id)


# -- incidents ----------------------------------------------------------------------------------


def give_incident_answer(store: ComplaintStore, complaint: Complaint, effects: TxEffects, incident: dict[str, Any],
                         actor: str, now: datetime) -> str:
    """An incident's answer on one of its complaints, in the customer's language; once per
    complaint and incident (a repeat finds the reply it made)."""
    reply_id = reply_id_for(complaint.id, incident["id"])
    if any(r.id == reply_id for r in complaint.replies):
        return reply_id
    texts = incident["answer"]
    text = texts.get(complaint.language) or texts.get("en") or texts.get("zh") or ""
    answer(store, complaint, effects, reply_id=reply_id, text=text, actor=actor, now=now,
           detail={"incident_id": incident["id"]})
    return reply_id


async def answer_incident(store: ComplaintStore, incidents: Incidents, incident: dict[str, Any],
                          texts: dict[str, str], actor: str) -> tuple[int, int]:
    """A supervisor answers an incident: the answer is kept on it (every complaint that joins
    later gets it too) and every open complaint of it gets it now. Answers (answered, skipped)."""
    incident["answer"] = {**texts, "by": actor}
    incident["status"] = "answered"
    await incidents.save(incident)
    answered = skipped = 0
    for cid in await incidents.members(incident["id"]):
        def change(complaint: Complaint, effects: TxEffects) -> None:
            if complaint.status.value in ("resolved", "closed"):
                raise Conflict("complaint_closed", complaint.status.value)
            give_incident_answer(store, complaint, effects, incident, actor, datetime.now(timezone.utc))

        try:
            await store.update(cid, change)
            answered += 1
        except (Conflict, NotFound):
            skipped += 1
    return answered, skipped


async def answer_joined(store: ComplaintStore, complaint_id: str, incident: dict[str, Any]) -> Complaint | None:
    """A complaint that joined an incident whose answer was given already gets that answer now
    (once: a repeat finds the reply it made; not when it has moved to another incident since).
    The joining itself linked it (``Incidents.decide``: the link is kept beside the complaint,
    ``store.INCIDENT_LINK``, without rewriting it)."""
    given = incident.get("answer")

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if given and complaint.incident_id == incident["id"] and is_open(complaint):
            give_incident_answer(store, complaint, effects, incident, given.get("by", "supervisor"),
                                 datetime.now(timezone.utc))

    try:
        return await store.update(complaint_id, change)
    except NotFound:
        return None


__all__ = ["answer", "answer_incident", "answer_joined", "escalation_queues", "first_response", "give_incident_answer",
           "leave_queues", "reply"]
