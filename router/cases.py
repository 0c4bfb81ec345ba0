"""State changes of a complaint, written once and used by the HTTP handlers and the worker's jobs.

Each function here changes a ``Complaint`` inside ``ComplaintStore.update`` (so under its
optimistic lock) and plans, in ``effects``, the Redis writes and jobs that must commit with it.
Nothing here reads Redis or waits: callers load what they need first.

- ``answer``: an answer reaches the customer, whoever gave it (an agent's reply, a supervisor's
  answer to an incident). The first one is the case's first response.
- ``leave_queues``: the case leaves its skill queue and every escalation queue it was copied to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from router import metrics
from router.store import ComplaintStore, TxEffects
from normalizer.ids import new_id
from normalizer.schema import Complaint, ComplaintStatus, HistoryEvent, Reply
from router import timers
from router.jobs import event_job, send_job
from router.deadlines import DEFAULT_ESCALATION_QUEUE, ESCALATION_QUEUE_DETAIL, FIRST_RESPONSE


# -- reply ids ----------------------------------------------------------------------------------


def new_reply_id() -> str:
    """A fresh, time-ordered id for a reply nobody can send twice by mistake (an agent's)."""
    return new_id("rep")


def reply_id_for(owner_id: str, what: str) -> str:
    """A reply id fixed by what caused it (``cmp_X`` + ``inc_Y`` → ``rep_X_inc_Y``), so a step
    that runs twice finds the reply it made the first time instead of making a second one."""
    return f"rep_{owner_id.split('_', 1)[-1]}_{what}"


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


# -- answering ----------------------------------------------------------------------------------


def _responded(store: ComplaintStore, complaint: Complaint, effects: TxEffects, now: datetime) -> None:
    """An answer reached the customer: the first one is the first response (its time recorded and
    measured); the first-response clock and any escalation clock are met, their timers removed."""
    if complaint.first_responded_at is None:
        complaint.first_responded_at = now
        effects.ops.append(lambda pipe: store.stop_first_response_clock(pipe, complaint))
        waited = (now - complaint.created_at).total_seconds()
        effects.ops.append(lambda pipe: metrics.observe(pipe, store.keys.p, "gateway_first_response_seconds",
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
    complaint.replies.append(reply)
    _responded(store, complaint, effects, now)
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
    effects.ops.append(lambda pipe: store.add_to_outbox(pipe, complaint.id, reply_id))
    effects.jobs.append(send_job(complaint.id, reply_id))
    effects.jobs.append(event_job(complaint, "replied", actor, event_detail))
    return reply


def answer_incident(store: ComplaintStore, complaint: Complaint, effects: TxEffects, incident: dict[str, Any],
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


__all__ = ["answer", "answer_incident", "escalation_queues", "leave_queues", "new_reply_id", "reply_id_for"]
