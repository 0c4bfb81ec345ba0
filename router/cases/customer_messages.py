"""What a customer's message does to a case that exists: a follow-up on an open case, a repeat
report merged into the case it repeats, a survey answer or a reopening after resolution, a
status question answered. (A message that opens a case: ``router.cases.opening``.)

Each change also marks the message itself as taken into its case, in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from normalizer.schema import (
    Complaint,
    ComplaintStatus,
    EvidenceLink,
    HistoryEvent,
    InboundMessage,
    Merge,
    MessageEntry,
    MessageStatus,
    Reply,
)
from router import metrics, routing
from router.cases import materials, progress
from router.cases.replies import notice, queue_reply, reply_id_for
from router.deadlines import DeadlinePolicy
from router.evidence_fetch import fetch_jobs
from router.facts import facts_of_complaint
from router.jobs import event_job
from router.repeats import Match
from router.rules import Engine
from router.store import ComplaintStore, Conflict, Keys, NotFound, TxEffects, is_open
from router.survey import parse_score
from router.templates import repeat_acknowledgement
from router.timers import load_policy, resume, schedule

REPEAT_PRIORITY_STEPS = 3  # each of the first three repeats raises the priority by one


def after_key(store: ComplaintStore, contact: Any) -> str:
    """Which resolved case a customer's next message answers (survey or reopen), per contact."""
    return store.keys.after_resolved(contact)


def entry(message: InboundMessage) -> MessageEntry:
    """A message as it is kept on its case."""
    return MessageEntry(
        message_id=message.id, channel=message.channel, text=message.text, received_at=message.received_at,
        provider_message_id=message.provider_message_id, language=message.language, subject=message.subject,
        edit_of=message.metadata.get("edit_of"),
    )


def taken_into(keys: Keys, message: InboundMessage, complaint_id: str, effects: TxEffects) -> None:
    """The message's own record says where it went, in the same transaction."""
    effects.ops.append(lambda pipe: pipe.hset(
        keys.msg(message.id), mapping={"status": MessageStatus.processed.value, "complaint_id": complaint_id}))
    effects.ops.append(lambda pipe: pipe.zrem(keys.pending, message.id))


# -- follow-ups ---------------------------------------------------------------------------------


async def follow_up(store: ComplaintStore, complaint_id: str, message: InboundMessage,
                    now: datetime | None = None) -> Complaint:
    """Add a customer's further message to an open case (idempotent by message id); the evidence
    it brings ticks off awaited materials; a clock that was paused waiting on the customer runs
    again (waiting on materials: once none is awaited any more)."""
    policy = await load_policy(store)
    at = now or datetime.now(timezone.utc)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if not any(m.message_id == message.id for m in complaint.messages):
            complaint.messages.append(entry(message))
            complaint.messages.sort(key=lambda m: m.received_at)  # in the order the customer wrote
            complaint.evidence.extend(message.attachments)
            effects.jobs.extend(fetch_jobs(complaint.id, message.channel, message.attachments))
            edit_of = message.metadata.get("edit_of")
            detail = {"channel": message.channel, "message_id": message.id, **({"edit_of": edit_of} if edit_of else {})}
            complaint.history.append(HistoryEvent(at=message.received_at, actor="customer",
                                                  action="message_edited" if edit_of else "follow_up", detail=detail))
            materials.take_evidence(store, complaint, effects, message_id=message.id, channel=message.channel,
                                    text=message.text, evidence=message.attachments, now=at, policy=policy)
            if not materials.awaited(complaint):
                resume(store, complaint, effects, at)  # the customer answered
        taken_into(store.keys, message, complaint.id, effects)

    return await store.update(complaint_id, change)


# -- repeat reports -----------------------------------------------------------------------------


def _reroute_on_repeat(store: ComplaintStore, complaint: Complaint, effects: TxEffects, engine: Engine,
                       policy: DeadlinePolicy, now: datetime) -> None:
    """Rules may look at the repeat count: a case still waiting in its queue moves when the
    active rules now send it elsewhere (recorded with the rule and version that decided)."""
    if complaint.status not in (ComplaintStatus.accepted, ComplaintStatus.reopened) or not complaint.messages:
        return
    decided = engine.decide(facts_of_complaint(complaint, policy))
    if decided.skill == complaint.skill:
        return
    old_skill = complaint.skill
    complaint.skill = decided.skill
    complaint.priority = max(complaint.priority, decided.priority)
    complaint.routed_by = f"{decided.version}:{decided.rule}"
    complaint.tags.extend(t for t in decided.tags if t not in complaint.tags)
    complaint.history.append(HistoryEvent(at=now, actor="worker", action="rerouted", public=False, detail={
        "from": old_skill or "", "skill": decided.skill, "rule": decided.rule, "version": str(decided.version),
        "repeat_count": str(complaint.repeat_count)}))
    fr_due = next((d.due for d in complaint.deadlines if d.kind == "first_response" and d.state == "running"), None)

    def move(pipe: Any) -> None:  # out of the old skill's queue (an escalation copy stays), into the new
        if old_skill:
            for key in (store.keys.queue(old_skill), store.keys.queue_age(old_skill), store.keys.fr_due(old_skill)):
                pipe.zrem(key, complaint.id)
        store.enter_queue(pipe, complaint, fr_due)

    effects.ops.append(move)


def join_as_repeat(store: ComplaintStore, complaint: Complaint, effects: TxEffects, *, message_id: str,
                   entries: list[MessageEntry], evidence: list[EvidenceLink], channel: str, reason: str,
                   detail: dict[str, str], engine: Engine, policy: DeadlinePolicy, now: datetime,
                   by: str = "worker") -> None:
    """The repeat-report change itself (a customer's message the worker matched, or a whole case
    an agent merges): the messages and evidence join the case, the repeat count and priority go
    up, the rules may re-route it, the merge and its reason are recorded, the evidence ticks off
    awaited materials, a paused clock runs (waiting on materials: once none is awaited any more)."""
    known = {m.message_id for m in complaint.messages}
    complaint.messages.extend(e for e in entries if e.message_id not in known)
    complaint.messages.sort(key=lambda m: m.received_at)  # in the order the customer wrote
    have = {e.id for e in complaint.evidence}
    complaint.evidence.extend(e for e in evidence if e.id not in have)
    complaint.repeat_count += 1
    if complaint.repeat_count <= REPEAT_PRIORITY_STEPS:
        complaint.priority = min(routing.MAX_PRIORITY, complaint.priority + 1)
    _reroute_on_repeat(store, complaint, effects, engine, policy, now)
    complaint.merges.append(Merge(message_id=message_id, reason=reason, detail=detail, at=now, by=by,
                                  evidence_ids=[e.id for e in evidence]))
    effects.ops.append(lambda pipe: metrics.incr(pipe, store.keys, "gateway_repeat_merges", reason=reason))
    materials.take_evidence(store, complaint, effects, message_id=message_id, channel=channel,
                            text=" ".join(e.text for e in entries), evidence=evidence, now=now, policy=policy)
    if not materials.awaited(complaint):
        resume(store, complaint, effects, now)
    complaint.history.append(HistoryEvent(
        at=now, actor=by, action="merged",
        detail={"message_id": message_id, "reason": reason, "channel": channel,
                "repeat_count": str(complaint.repeat_count), **detail}))


async def merge_repeat(store: ComplaintStore, match: Match, message: InboundMessage, *, engine: Engine,
                       policy: DeadlinePolicy, now: datetime, listeners: bool) -> Complaint | None:
    """Attach a repeat report to the open case it repeats: the customer is told that case's
    number (on the channel they wrote on), the agent sees the message, the reason and the repeat
    count, and the case moves up its queue. Answers ``None`` when the case is gone or closed
    meanwhile (then the message opens a case of its own)."""
    reply_id = reply_id_for(message.id, "repeat")

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if not is_open(complaint):
            raise Conflict("complaint_closed", "closed meanwhile")
        if not any(m.message_id == message.id for m in complaint.messages):
            effects.jobs.extend(fetch_jobs(complaint.id, message.channel, message.attachments))
            join_as_repeat(store, complaint, effects, message_id=message.id, entries=[entry(message)],
                           evidence=list(message.attachments), channel=message.channel, reason=match.reason,
                           detail=match.detail, engine=engine, policy=policy, now=now)
            if not message.suppress_acknowledgement:
                to = None if message.sender == complaint.contact else message.sender
                text = repeat_acknowledgement(complaint.case_number, message.language)
                queue_reply(store, complaint, effects, Reply(
                    id=reply_id, kind="repeat_ack", text=text, author="system", channel=message.channel,
                    created_at=now, to=to, language=message.language))
                progress.arm(store, complaint, effects, policy.progress)
            if listeners:
                effects.jobs.append(event_job(complaint, "merged", "worker",
                                              {"message_id": message.id, "reason": match.reason}, at=now))
        taken_into(store.keys, message, complaint.id, effects)

    try:
        return await store.update(match.complaint_id, change)
    except (NotFound, Conflict):
        return None


# -- after resolution: the survey, or the case reopened -------------------------------------------


async def survey_or_reopen(store: ComplaintStore, complaint: Complaint, message: InboundMessage, *,
                           policy: DeadlinePolicy, now: datetime, listeners: bool) -> str:
    """After resolution: a score (1–5, in words or digits) answers the survey; anything else
    within the window reopens the case, back in its queue with fresh first-response and
    resolution clocks. Answers ``survey``, ``reopened`` or ``not_reopened`` (the case is no
    longer resolved)."""
    score = parse_score(message.text) if complaint.satisfaction is None else None
    outcome = "survey" if score is not None else "reopened"

    def change(c: Complaint, effects: TxEffects) -> None:
        if any(m.message_id == message.id for m in c.messages) or any(
                h.detail.get("message_id") == message.id for h in c.history):
            taken_into(store.keys, message, c.id, effects)
            return
        if score is not None:
            c.satisfaction = score
            c.history.append(HistoryEvent(at=now, actor="customer", action="survey_answered",
                                          detail={"score": str(score), "message_id": message.id}))
            notice(store, c, effects, "survey_thanks", message)
        elif c.status == ComplaintStatus.resolved:
            c.messages.append(entry(message))
            c.evidence.extend(message.attachments)
            effects.jobs.extend(fetch_jobs(c.id, message.channel, message.attachments))
            reopen(store, c, effects, policy, now, actor="customer", message=message, listeners=listeners,
                   detail={"message_id": message.id, "channel": message.channel})
        else:
            raise Conflict("not_resolved", c.status.value)
        taken_into(store.keys, message, c.id, effects)

    try:
        await store.update(complaint.id, change)
    except Conflict:
        return "not_reopened"
    return outcome


def reopen(store: ComplaintStore, c: Complaint, effects: TxEffects, policy: DeadlinePolicy, now: datetime, *,
           actor: str, detail: dict[str, str], message: InboundMessage | None = None, listeners: bool = True) -> None:
    """A resolved case open again (the customer wrote within the window, or the desk reopened it):
    back in its queue with fresh first-response and resolution clocks, the customer told (on the
    channel of ``message``, else the case's), listeners hear ``reopened``."""
    c.status = ComplaintStatus.reopened
    c.reopened_count += 1
    c.resolved_at = None
    c.history.append(HistoryEvent(at=now, actor=actor, action="reopened", public=True, detail=detail))
    fresh = policy.for_new(c, now)
    for new in fresh:
        old = next((d for d in c.deadlines if d.kind == new.kind), None)
        if old is not None:
            new.gen = old.gen + 1
            c.deadlines.remove(old)
        c.deadlines.append(new)
    c.first_response_due, c.resolution_due = fresh[0].due, fresh[1].due
    schedule(store, effects, c.id, fresh)
    effects.ops.append(lambda pipe: store.enter_queue(pipe, c, fresh[0].due))
    sender = message.sender if message is not None else c.contact
    effects.ops.append(lambda pipe: pipe.delete(after_key(store, sender)))
    notice(store, c, effects, "reopened", message)
    progress.arm(store, c, effects, policy.progress)
    if listeners:
        effects.jobs.append(event_job(c, "reopened", actor, {k: v for k, v in detail.items() if k != "channel"},
                                      at=now))


# -- status questions ---------------------------------------------------------------------------


def status_reply_id(message: InboundMessage) -> str:
    """The answer to a status question: one per question (a re-run finds it)."""
    return reply_id_for(message.id, "status")


async def status_answered(store: ComplaintStore, complaint_id: str, message: InboundMessage, text: str) -> Complaint:
    """A status question about this case, from one of its customer's contacts: the answer goes
    to the asker's channel (and contact), the question is on the case's history."""
    reply_id = status_reply_id(message)

    def change(c: Complaint, effects: TxEffects) -> None:
        if not any(r.id == reply_id for r in c.replies):
            queue_reply(store, c, effects, Reply(
                id=reply_id, kind="status", text=text, author="system", channel=message.channel,
                created_at=datetime.now(timezone.utc), language=message.language,
                to=None if message.sender == c.contact else message.sender))
            c.history.append(HistoryEvent(at=message.received_at, actor="customer", action="status_asked",
                                          detail={"channel": message.channel, "message_id": message.id}))
        taken_into(store.keys, message, c.id, effects)

    return await store.update(complaint_id, change)


__all__ = ["REPEAT_PRIORITY_STEPS", "after_key", "entry", "follow_up", "join_as_repeat", "merge_repeat", "status_answered",
           "reopen", "status_reply_id", "survey_or_reopen", "taken_into"]
