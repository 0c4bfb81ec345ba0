"""A message that opens a case: the complaint drafted from it (category, route, deadlines), then
opened: committed with its acknowledgement, its timers, its repeat fingerprint and the jobs it
needs (incident check, attachment fetches, listeners), all in one transaction that also marks
the message processed, so a re-run of the step opens nothing twice.

Between the two the pipeline lets plugins enrich the draft (``router.pipeline``).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from normalizer.ids import dt_to_ms
from normalizer.schema import Complaint, ComplaintStatus, HistoryEvent, InboundMessage, Reply
from router import repeats
from router.categoriser import Categorised
from router.cases import materials, progress
from router.cases.customer_messages import entry, follow_up
from router.cases.replies import reply_id_for
from router.deadlines import DeadlinePolicy, timer_members
from router.evidence_fetch import evidence_jobs
from router.incidents import Incidents, comparable_tokens
from router.jobs import complaint_id_for, event_job
from router.repeats import Match
from router.rules import TRIAGE, Decision
from router.sender_lock import SenderLock
from router.store import ComplaintStore
from router.templates import acknowledgement

#: Stands for the case number until the commit allocates it.
CASE_NUMBER_PLACEHOLDER = "CASENUMBER"


def draft_complaint(message: InboundMessage, *, customer_id: str, category: str, formal: bool, decided: Decision,
                    policy: DeadlinePolicy, clock_offset: timedelta, now: datetime) -> Complaint:
    """The complaint a new message opens, routed and with its clocks, received but not yet
    committed; its case number a placeholder until the commit."""
    decision = decided.as_route()
    complaint = Complaint(
        id=complaint_id_for(message.id),
        case_number=CASE_NUMBER_PLACEHOLDER + os.urandom(8).hex(),  # replaced by the number the commit allocates
        status=ComplaintStatus.accepted,
        category=category,
        formal_complaint=formal,
        channel=message.channel,
        customer_id=customer_id,
        contact=message.sender,
        language=message.language,
        created_at=message.received_at,
        updated_at=now,
        amount=message.amount,
        transaction_id=message.transaction_id,
        skill=decision.skill,
        priority=decision.priority,
        routed_by=f"{decision.version}:{decision.rule}",
        messages=[entry(message)],
        evidence=list(message.attachments),
        customer_tier=message.metadata.get("tier") or None,
    )
    complaint.deadlines = policy.for_new(complaint, message.received_at + clock_offset,
                                         first_override=decided.first_response_seconds,
                                         resolution_override=decided.resolution_seconds)
    complaint.tags.extend(t for t in decided.tags if t not in complaint.tags)
    complaint.first_response_due = complaint.deadlines[0].due
    complaint.resolution_due = complaint.deadlines[1].due
    complaint.next_update_at = progress.next_due(complaint, policy.progress, since=message.received_at + clock_offset)
    complaint.history.append(
        HistoryEvent(at=message.received_at, actor=opened_by(message), action="received",
                     detail={"channel": message.channel, "message_id": message.id})
    )
    return complaint


def categorised_as(complaint: Complaint, categorised: Categorised) -> None:
    """The categoriser's confidence and runner-up on the draft (``None`` unless the model decided)."""
    complaint.category_confidence = categorised.confidence
    complaint.category_runner_up = categorised.runner_up
    complaint.category_runner_up_confidence = categorised.runner_up_confidence


#: The tag of a case linked to the case it may repeat.
POSSIBLE_REPEAT = "possible_repeat"


def link_possible_repeat(complaint: Complaint, match: Match, now: datetime) -> None:
    """A middle-band repeat match: the new case opens as usual, linked to the likely case for an
    agent to merge with one call (``POST /v1/complaints/{id}/merge``) rather than guessed."""
    complaint.possible_repeat_of = match.complaint_id
    if POSSIBLE_REPEAT not in complaint.tags:
        complaint.tags.append(POSSIBLE_REPEAT)
    complaint.history.append(HistoryEvent(at=now, actor="worker", action="possible_repeat", detail={
        "of": match.complaint_id, "reason": match.reason, "score": f"{match.score:.3f}", **match.detail}))


def opened_by(message: InboundMessage) -> str:
    """The customer, or the agent who recorded the complaint for them."""
    return message.recorded_by or "customer"


@dataclass
class Opened:
    complaint: Complaint
    #: The acknowledgement to send now (``None`` when the channel asked for none).
    acknowledgement: Reply | None
    #: The complaint's incident tokens and the note's time and answer (``Incidents.decide``);
    #: no tokens: its text is too short to compare (not noted).
    incident_tokens: frozenset[str] = frozenset()
    noted_at: int = 0
    incident_window: list[Any] = field(default_factory=list)


async def open_complaint(store: ComplaintStore, complaint: Complaint, message: InboundMessage, *,
                         categorised: dict[str, str], decided: Decision, worker_id: str, now: datetime,
                         listeners: bool, incidents: Incidents | None = None,
                         lock: SenderLock | None = None) -> Opened | None:
    """Commit a drafted complaint with its acknowledgement (in the outbox: if this process dies
    before sending it, housekeeping does), timers (its deadlines', its periodic progress update's),
    fingerprint and jobs. ``None``: the message was taken into a case already (a re-run), or into
    one of its customer's cases that waits for materials (the message names it or brings
    evidence: it is a follow-up there, whatever channel it came on). ``categorised``: the
    ``categorised`` event's detail (category, confidence, runner-up, by what: ``model:<version>``...).
    ``incidents``: the complaint is noted in its category's incident window by the same commit
    (``None``: not noted; the caller decides after the acknowledgement: ``Opened.incident_window``).
    ``lock``: the sender's lock this job holds (kept, not let go, if the job is cancelled while its
    commit waits to be sent)."""
    awaiting = await materials.case_awaiting(store, complaint.customer_id, message)
    if awaiting is not None:
        await follow_up(store, awaiting, message, now)
        return None
    placeholder = complaint.case_number
    decision = decided.as_route()
    timers: dict[str, int] = {}
    for deadline in complaint.deadlines:
        timers.update(timer_members(complaint.id, deadline))
    if complaint.next_update_at is not None:
        timers[progress.periodic_member(complaint.id)] = dt_to_ms(complaint.next_update_at)
    complaint.history.append(
        HistoryEvent(at=now, actor="worker", action="categorised",
                     detail={**categorised, "category": complaint.category,
                             "formal": str(complaint.formal_complaint).lower()})
    )
    complaint.history.append(
        HistoryEvent(at=now, actor="worker", action="routed", public=True,
                     detail={"skill": decision.skill, "priority": str(complaint.priority),
                             "rule": decision.rule, "version": decision.version, "worker": worker_id})
    )
    if decision.rule == TRIAGE:  # the categoriser was unsure: both suggestions for the agent
        complaint.history.append(HistoryEvent(at=now, actor="worker", action="triaged", detail={
            k: v for k, v in categorised.items() if k in ("category", "confidence", "runner_up", "runner_up_confidence", "by")}))
    ack: Reply | None = None
    if message.suppress_acknowledgement:
        complaint.history.append(HistoryEvent(at=now, actor="worker", action="acknowledgement_suppressed",
                                              detail={"reason": message.suppress_acknowledgement}))
    else:
        ack = Reply(
            id=reply_id_for(complaint.id, "ack"), kind="ack", text=acknowledgement(placeholder, message.language),
            author="system", channel=message.channel, created_at=now,
        )
        complaint.replies.append(ack)
        complaint.last_update_at = now  # the acknowledgement is the first thing the customer hears
    jobs = evidence_jobs(complaint)
    if listeners:
        jobs.append(event_job(complaint, "created", opened_by(message), at=now))
        jobs.append(event_job(complaint, "routed", "worker", {"skill": decision.skill}, at=now))
    toks = comparable_tokens(message.text) if incidents is not None else frozenset()
    note = incidents.note_args(complaint.id, complaint.customer_id, complaint.category, toks) if incidents and toks else []
    try:
        created, _, case_number, window = await store.commit_new_complaint(
            message.id, complaint, jobs, case_placeholder=placeholder,
            outbox=[f"{complaint.id}|{ack.id}"] if ack else [],
            fingerprint=repeats.pending_fingerprint_of(complaint, dt_to_ms(complaint.created_at)), timers=timers,
            incident_note=note,
        )
    except asyncio.CancelledError:
        if lock is not None:  # the commit may still be sent (with others'): the lock is not let go before it
            lock.forget()     # lands; its expiry frees it (and this message's next try takes it back at once)
        raise
    if not created:
        return None
    complaint.case_number = case_number
    if ack is not None:
        ack.text = ack.text.replace(placeholder, case_number)
    return Opened(complaint, ack, toks if note else frozenset(), int(note[1]) if note else 0, window)


__all__ = ["CASE_NUMBER_PLACEHOLDER", "POSSIBLE_REPEAT", "Opened", "categorised_as", "draft_complaint",
           "link_possible_repeat", "open_complaint", "opened_by"]
