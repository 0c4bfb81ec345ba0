"""The arq worker: turns stored messages into routed complaints and sends what must go out.

Every job is safe to run twice (arq promises at-least-once): ``process_message`` checks the
message's state inside the transaction that commits the complaint, ``send_reply`` sends only
replies still ``queued``, and listeners are told to expect repeats.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal, InvalidOperation
import logging
import os
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

from arq import Retry
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from arq.utils import timestamp_ms
from arq.worker import Worker, func

from router import metrics
from router.intake import Intake
from plugins.locks import RedisLock
from router.redis_pool import SENTINEL_SCHEME, make_pool, redis_unavailable, route_now
from plugins.settings import Settings
from router.store import ComplaintStore, Conflict, NotFound, PlannedJob, TxEffects, is_open
from normalizer.ids import dt_to_ms, ms_to_dt, new_id, now_ms
from normalizer.evidence import DirectoryBlobStore
from normalizer.pii import mask_text
from normalizer.schema import (
    Amount,
    Complaint,
    ComplaintEvent,
    ComplaintStatus,
    DeliveryResult,
    HistoryEvent,
    InboundMessage,
    Merge,
    MessageEntry,
    MessageStatus,
    OutboundMessage,
    Reply,
)
from plugins.contract import GatewayServices
from plugins.manager import GatewayPlugins
from router import routing
from router.categorise import categorise
from normalizer.categories import CATEGORIES
from router import repeats
from router.deadlines import timer_members
from router.evidence_fetch import announce, evidence_jobs, fetch_jobs
from router.jobs import complaint_id_for, event_job, send_job
from router.rules import Engine, Facts
from router.rulestore import EngineCache, RuleStore
from router.incidents import Incidents
from router.timers import Clock, PolicyCache, TimerLoop, resume, schedule
from router import cases, templates
from normalizer.status import parse_status_query, status_text
from router.survey import parse_score
from router.templates import acknowledgement, repeat_acknowledgement

log = logging.getLogger("gateway.worker")

MAX_SEND_TRIES = 8
PENDING_RECOVERY_AFTER_MS = 60_000


# -- jobs -----------------------------------------------------------------------------------


CONTACT_LOCK_MS = 15_000


async def process_message(ctx: dict[str, Any], message_id: str) -> str:
    """One message at a time per sender: two messages a customer sends a moment apart must see
    each other (the second is a repeat of the first, not a second case)."""
    store: ComplaintStore = ctx["store"]
    contact = await store.r.hget(store.keys.msg(message_id), "contact")
    if not contact:
        return await _process_message(ctx, message_id)
    lock = RedisLock(store.r, f"{store.keys.p}lock:contact:{contact.decode()}", CONTACT_LOCK_MS)
    if not await lock.wait(CONTACT_LOCK_MS / 1000):
        raise Retry(defer=1)
    try:
        return await _process_message(ctx, message_id)
    finally:
        await lock.release()


async def _process_message(ctx: dict[str, Any], message_id: str) -> str:
    store: ComplaintStore = ctx["store"]
    plugins: GatewayPlugins = ctx["plugins"]
    status, message, fields = await store.prepare(message_id)
    if status == "missing":
        log.warning("message %s vanished before processing", message_id)
        return "missing"
    if status in (MessageStatus.processed.value, MessageStatus.quarantined.value):
        return "already"
    if message is None:
        qid = await store.quarantine(channel=fields.get("channel") or "?", reason="stored message does not decode",
                                     raw=fields.get("raw") or b"", message_id=message_id)
        await store.mark_message(message_id, MessageStatus.quarantined, error="undecodable", quarantine_id=qid)
        return "quarantined"

    # announced attachments wait on the case as pending evidence, fetched by a job of their own
    # (whichever case the message joins: a new one, a follow-up, a repeat, a reopened one)
    message.attachments = announce(message)
    await templates.refresh(store.r, store.keys.p)
    case_asked = parse_status_query(message.text)
    if case_asked:
        return await answer_status(ctx, message, case_asked)

    target = None
    if message.complaint_ref:
        try:
            target = await _find_complaint(store, message.complaint_ref)
        except NotFound:
            target = None
    if target is None or not is_open(target):
        resolved = target if target is not None else await _recently_resolved(store, message)
        if resolved is not None and await _within_reopen_window(ctx, resolved):
            return await survey_or_reopen(ctx, resolved, message)
    if target is not None and is_open(target):
        await attach_follow_up(store, target.id, message, _clock_now(ctx))
        return "follow_up"
    if target is not None:
        message.complaint_ref = None  # an old closed case: this is a new problem

    customer_id = fields["customer_id"]
    category, formal, cat_source = await _categorise(plugins, message)
    if not fields.get("nodedup"):
        candidates = {cid: fp for cid, raw in fields.get("open_cases", {}).items()
                      if (fp := repeats.decode(raw)) is not None}
        window_ms = ctx["settings"].repeat_window_hours * 3_600_000
        match = repeats.find_repeat(candidates, message, category, now_ms(), window_ms) if candidates else None
        if match is not None and await merge_repeat(ctx, match, message):
            return "merged"
    policy = await _policy(ctx)
    engine = await _rules(ctx)
    decided = engine.decide(facts_of(message, category, formal, policy))
    decision = decided.as_route()
    placeholder = "CASENUMBER" + os.urandom(8).hex()  # replaced by the number the commit allocates
    now = datetime.now(timezone.utc)
    complaint = Complaint(
        id=complaint_id_for(message_id),
        case_number=placeholder,
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
        messages=[_entry(message)],
        evidence=list(message.attachments),
        customer_tier=message.metadata.get("tier") or None,
    )
    clock = ctx.get("clock")
    if clock is not None:
        await clock.refresh()
    offset = timedelta(milliseconds=clock.offset_ms if clock is not None else 0)  # the test clock's
    complaint.deadlines = policy.for_new(complaint, message.received_at + offset,
                                         first_override=decided.first_response_seconds,
                                         resolution_override=decided.resolution_seconds)
    complaint.tags.extend(t for t in decided.tags if t not in complaint.tags)
    complaint.first_response_due = complaint.deadlines[0].due
    complaint.resolution_due = complaint.deadlines[1].due
    timers: dict[str, int] = {}
    for deadline in complaint.deadlines:
        timers.update(timer_members(complaint.id, deadline))
    actor = message.recorded_by or "customer"
    complaint.history.append(
        HistoryEvent(at=message.received_at, actor=actor, action="received",
                     detail={"channel": message.channel, "message_id": message.id})
    )
    await _apply_enrichment(plugins, complaint, message)
    complaint.history.append(
        HistoryEvent(at=now, actor="worker", action="categorised",
                     detail={"category": complaint.category, "formal": str(formal).lower(), "by": cat_source})
    )
    complaint.history.append(
        HistoryEvent(at=now, actor="worker", action="routed", public=True,
                     detail={"skill": decision.skill, "priority": str(complaint.priority),
                             "rule": decision.rule, "version": decision.version,
                             "worker": ctx.get("worker_id", "")})
    )
    ack: Reply | None = None
    if message.suppress_acknowledgement:
        complaint.history.append(HistoryEvent(at=now, actor="worker", action="acknowledgement_suppressed",
                                              detail={"reason": message.suppress_acknowledgement}))
    else:
        ack = Reply(
            id=f"rep_{complaint.id[4:]}_ack", kind="ack", text=acknowledgement(placeholder, message.language),
            author="system", channel=message.channel, created_at=now,
        )
        complaint.replies.append(ack)
    jobs = incident_job(complaint, message)
    jobs.extend(evidence_jobs(complaint))
    if plugins.has_listeners:
        jobs.append(event_job(complaint, "created", actor, at=now))
        jobs.append(event_job(complaint, "routed", "worker", {"skill": decision.skill}, at=now))
    created, cid, case_number = await store.commit_new_complaint(
        message_id, complaint, jobs, case_placeholder=placeholder,
        outbox=[f"{complaint.id}|{ack.id}"] if ack else [],
        fingerprint=repeats.fingerprint_of(complaint, dt_to_ms(complaint.created_at)), timers=timers,
    )
    if not created:
        return "already"
    log.info("complaint %s opened from %s (%s → %s, p%d)", case_number, message_id, category,
             decision.skill, complaint.priority)
    # The acknowledgement goes out now; if this process dies first, the outbox sends it later.
    complaint.case_number = case_number
    if ack is not None:
        ack.text = ack.text.replace(placeholder, case_number)
        result = await deliver(ctx, complaint, ack)
        if result.status == "failed" and result.retryable:  # the provider hiccuped: try again soon
            await store.enqueue(PlannedJob("send_reply", f"send:{ack.id}", (complaint.id, ack.id), defer_ms=1000))
    return "created"


def _clock_now(ctx: dict[str, Any]) -> datetime:
    clock = ctx.get("clock")
    return clock.now() if clock is not None else datetime.now(timezone.utc)


def _decimal(amount: Any) -> Decimal | None:
    if amount is None:
        return None
    try:
        return Decimal(amount.value)
    except InvalidOperation:
        return None


def facts_of(message: InboundMessage, category: str, formal: bool, policy: Any) -> Facts:
    """What the rules look at for a new message."""
    return Facts(category=category, formal=formal, channel=message.channel, language=message.language,
                 text=message.text, amount=_decimal(message.amount),
                 currency=message.amount.currency if message.amount else None,
                 tier=message.metadata.get("tier") or None,
                 in_business_hours=policy.in_business_hours(message.received_at))


def facts_of_complaint(c: Complaint, policy: Any) -> Facts:
    """What the rules look at for a case as it stands (re-routing, dry runs)."""
    return Facts(category=c.category, formal=c.formal_complaint, channel=c.channel, language=c.language,
                 text=c.messages[0].text if c.messages else "", amount=_decimal(c.amount),
                 currency=c.amount.currency if c.amount else None, tier=c.customer_tier,
                 repeat_count=c.repeat_count, in_business_hours=policy.in_business_hours(c.created_at))


async def _rules(ctx: dict[str, Any]) -> Engine:
    if "rules" not in ctx:
        ctx["rules"] = EngineCache(RuleStore(ctx["store"].r, ctx["store"].keys.p))
    return await ctx["rules"].get()


async def _policy(ctx: dict[str, Any]) -> Any:
    if "policy" not in ctx:
        ctx["policy"] = PolicyCache(ctx["store"])
    return await ctx["policy"].get()


def _evidence_fetch_job(settings: Settings) -> Any:
    """The job that fetches announced attachments (router/evidence_fetch.py)."""
    from router import evidence_fetch

    return func(instrumented(evidence_fetch.fetch_evidence), name=evidence_fetch.JOB,
                max_tries=evidence_fetch.arq_max_tries(settings))


async def _find_complaint(store: ComplaintStore, ref: str) -> Complaint:
    """A case number, a complaint id, or the id of an earlier message of the same conversation
    (whose complaint may not exist yet: then this job waits a moment and tries again)."""
    if ref.startswith("C-"):
        return await store.find_by_case_number(ref)
    if ref.startswith("msg_"):
        state = await store.message_state(ref)
        if state is None:
            raise NotFound("message_not_found", ref)
        if state.get("complaint_id"):
            return await store.get(state["complaint_id"])
        if state.get("status") == MessageStatus.received.value:
            raise Retry(defer=1)
        raise NotFound("complaint_not_found", ref)
    return await store.get(ref)


def _entry(message: InboundMessage) -> MessageEntry:
    return MessageEntry(
        message_id=message.id, channel=message.channel, text=message.text, received_at=message.received_at,
        provider_message_id=message.provider_message_id, language=message.language, subject=message.subject,
        edit_of=message.metadata.get("edit_of"),
    )


def _taken_into(keys: Any, message: InboundMessage, complaint_id: str, effects: TxEffects) -> None:
    """The message's own record says where it went, in the same transaction."""
    effects.ops.append(lambda pipe: pipe.hset(
        keys.msg(message.id), mapping={"status": MessageStatus.processed.value, "complaint_id": complaint_id}))
    effects.ops.append(lambda pipe: pipe.zrem(keys.pending, message.id))


async def attach_follow_up(store: ComplaintStore, complaint_id: str, message: InboundMessage,
                           now: datetime | None = None) -> Complaint:
    """Add a customer's further message to an open case (idempotent by message id); a clock that
    was paused waiting on the customer runs again."""

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if not any(m.message_id == message.id for m in complaint.messages):
            complaint.messages.append(_entry(message))
            complaint.messages.sort(key=lambda m: m.received_at)  # in the order the customer wrote
            complaint.evidence.extend(message.attachments)
            effects.jobs.extend(fetch_jobs(complaint.id, message.channel, message.attachments))
            edit_of = message.metadata.get("edit_of")
            detail = {"channel": message.channel, "message_id": message.id, **({"edit_of": edit_of} if edit_of else {})}
            complaint.history.append(HistoryEvent(at=message.received_at, actor="customer",
                                                  action="message_edited" if edit_of else "follow_up", detail=detail))
            resume(store, complaint, effects, now or datetime.now(timezone.utc))  # the customer answered
        _taken_into(store.keys, message, complaint.id, effects)

    return await store.update(complaint_id, change)


def incident_job(complaint: Complaint, message: InboundMessage) -> list[PlannedJob]:
    """The incident check of a new complaint, queued in the commit that creates it (none for a
    text too short to compare)."""
    if not Incidents.comparable(message.text):
        return []
    return [PlannedJob("consider_incident", f"incident:{complaint.id}", (complaint.id, message.id))]


async def consider_incident(ctx: dict[str, Any], complaint_id: str, message_id: str) -> str:
    """Many customers, one fault: link the new complaint to an incident when it joins or forms one.
    A job of its own, so Redis being briefly away (a failover, a restart) retries it with backoff
    instead of skipping it for good; every step is safe to run again."""
    settings: Settings = ctx["settings"]
    store: ComplaintStore = ctx["store"]
    incidents = Incidents(store, settings.incident_window_minutes, settings.incident_min_customers)
    try:
        try:
            complaint = await store.get(complaint_id)
        except NotFound:
            return "missing"
        text = next((m.text for m in complaint.messages if m.message_id == message_id), "")
        iid, linked = await incidents.consider(complaint.id, complaint.customer_id, complaint.category, text)
        if not iid:
            return "none"
        incident = await incidents.get(iid)
        for cid in linked:
            await link_to_incident(store, cid, incident or {"id": iid})
        log.info("incident %s: %d complaint(s) linked", iid, len(linked))
        return "linked"
    except Exception as exc:
        if not redis_unavailable(exc):
            raise
        defer = min(60, 2 ** ctx.get("job_try", 1))
        log.warning("incident check of %s: redis unavailable (%s); again in %d s", complaint_id,
                    type(exc).__name__, defer)
        raise Retry(defer=defer) from None


async def link_to_incident(store: ComplaintStore, complaint_id: str, incident: dict[str, Any]) -> Complaint | None:
    """Mark a complaint as part of an incident; if the incident has been answered already, the
    customer gets that answer now."""
    iid = incident["id"]
    answer = incident.get("answer")

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if complaint.incident_id == iid:
            return
        complaint.incident_id = iid
        if "incident" not in complaint.tags:
            complaint.tags.append("incident")
        complaint.history.append(HistoryEvent(at=datetime.now(timezone.utc), actor="worker", action="incident_linked",
                                              detail={"incident_id": iid}))
        if answer and is_open(complaint):
            answer_from_incident(store, complaint, effects, incident, answer.get("by", "supervisor"))

    try:
        return await store.update(complaint_id, change)
    except NotFound:
        return None


def answer_from_incident(store: ComplaintStore, complaint: Complaint, effects: TxEffects, incident: dict[str, Any],
                         actor: str) -> str:
    """One incident answer as an agent reply on one complaint (in the customer's language): the
    same first response as an agent's reply (``router.cases.answer``)."""
    return cases.answer_incident(store, complaint, effects, incident, actor, datetime.now(timezone.utc))


# -- status, survey, reopen -----------------------------------------------------------------


async def answer_status(ctx: dict[str, Any], message: InboundMessage, case_number: str) -> str:
    """"进度 C-…" / "status C-…" on any channel: the case's state and last update, to the
    asker's channel, in their language; only a contact of the case's own customer learns it."""
    store: ComplaintStore = ctx["store"]
    complaint = await store.case_for_contact(case_number, message.sender)
    text = status_text(complaint, message.language, case_number)
    if complaint is None:
        sender = ctx["plugins"].sender(message.channel, ctx["services"])
        if sender is not None:
            try:
                await sender.send(OutboundMessage(
                    id=f"rep_{message.id.split('_', 1)[-1]}_status", channel=message.channel, complaint_id="",
                    case_number=case_number, to=message.sender, text=text, kind="status", language=message.language))
            except Exception as exc:  # noqa: BLE001 - an answer to a stranger is not retried
                log.warning("status answer on %s failed: %s", message.channel, type(exc).__name__)
        await store.mark_message(message.id, MessageStatus.processed)
        return "status_unknown_case"
    reply_id = f"rep_{message.id.split('_', 1)[-1]}_status"

    def change(c: Complaint, effects: TxEffects) -> None:
        if not any(r.id == reply_id for r in c.replies):
            c.replies.append(Reply(id=reply_id, kind="status", text=text, author="system", channel=message.channel,
                                   created_at=datetime.now(timezone.utc), language=message.language,
                                   to=None if message.sender == c.contact else message.sender))
            c.history.append(HistoryEvent(at=message.received_at, actor="customer", action="status_asked",
                                          detail={"channel": message.channel, "message_id": message.id}))
            effects.ops.append(lambda pipe: store.add_to_outbox(pipe, c.id, reply_id))
            effects.jobs.append(send_job(c.id, reply_id))
        _taken_into(store.keys, message, c.id, effects)

    await store.update(complaint.id, change)
    return "status"


def after_key(store: ComplaintStore, contact: Any) -> str:
    """Which resolved case a customer's next message answers (survey or reopen), per contact."""
    return f"{store.keys.p}after:{contact.kind}:{contact.value}"


async def _recently_resolved(store: ComplaintStore, message: InboundMessage) -> Complaint | None:
    cid = await store.r.get(after_key(store, message.sender))
    if cid is None:
        return None
    try:
        complaint = await store.get(cid.decode())
    except NotFound:
        return None
    return None if is_open(complaint) else complaint


async def _within_reopen_window(ctx: dict[str, Any], complaint: Complaint) -> bool:
    if complaint.status != ComplaintStatus.resolved or complaint.resolved_at is None:
        return False
    age = datetime.now(timezone.utc) - complaint.resolved_at
    return age.total_seconds() <= ctx["settings"].reopen_window_hours * 3600


async def survey_or_reopen(ctx: dict[str, Any], complaint: Complaint, message: InboundMessage) -> str:
    """After resolution: a score (1–5, in words or digits) answers the survey; anything else
    within the window reopens the case, back in its queue with fresh first-response and
    resolution clocks."""
    store: ComplaintStore = ctx["store"]
    policy = await _policy(ctx)
    score = parse_score(message.text) if complaint.satisfaction is None else None
    now = _clock_now(ctx)
    result = {"outcome": "survey" if score is not None else "reopened"}

    def change(c: Complaint, effects: TxEffects) -> None:
        if any(m.message_id == message.id for m in c.messages) or any(
                h.detail.get("message_id") == message.id for h in c.history):
            _taken_into(store.keys, message, c.id, effects)
            return
        if score is not None:
            c.satisfaction = score
            c.history.append(HistoryEvent(at=now, actor="customer", action="survey_answered",
                                          detail={"score": str(score), "message_id": message.id}))
            _reply_template(store, c, effects, "survey_thanks", message)
        elif c.status == ComplaintStatus.resolved:
            c.status = ComplaintStatus.reopened
            c.reopened_count += 1
            c.resolved_at = None
            c.messages.append(_entry(message))
            c.evidence.extend(message.attachments)
            effects.jobs.extend(fetch_jobs(c.id, message.channel, message.attachments))
            c.history.append(HistoryEvent(at=now, actor="customer", action="reopened", public=True,
                                          detail={"message_id": message.id, "channel": message.channel}))
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
            effects.ops.append(lambda pipe: pipe.delete(after_key(store, message.sender)))
            _reply_template(store, c, effects, "reopened", message)
            if ctx["plugins"].has_listeners:
                effects.jobs.append(event_job(c, "reopened", "customer", {"message_id": message.id}, at=now))
        else:
            raise Conflict("not_resolved", c.status.value)
        _taken_into(store.keys, message, c.id, effects)

    try:
        await store.update(complaint.id, change)
    except Conflict:
        return "not_reopened"
    return result["outcome"]


def _reply_template(store: ComplaintStore, c: Complaint, effects: TxEffects, name: str,
                    message: InboundMessage | None = None, reason: str = "") -> None:
    language = message.language if message is not None else c.language
    reply_id = f"rep_{new_id('r')[2:]}_{name}"
    to = message.sender if message is not None and message.sender != c.contact else None
    c.replies.append(Reply(id=reply_id, kind="survey" if name == "survey" else "notice",
                           text=templates.render(name, language, c.case_number, reason), author="system",
                           channel=message.channel if message is not None else c.channel,
                           created_at=datetime.now(timezone.utc), to=to, language=language))
    effects.ops.append(lambda pipe: store.add_to_outbox(pipe, c.id, reply_id))
    effects.jobs.append(send_job(c.id, reply_id))


REPEAT_PRIORITY_STEPS = 3  # each of the first three repeats raises the priority by one


def _reroute_on_repeat(store: ComplaintStore, complaint: Complaint, effects: TxEffects, engine: Engine, policy: Any,
                       now: datetime) -> None:
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


async def merge_repeat(ctx: dict[str, Any], match: repeats.Match, message: InboundMessage) -> bool:
    """Attach a repeat report to the open case it repeats: the customer is told that case's
    number (on the channel they wrote on), the agent sees the message, the reason and the repeat
    count, and the case moves up its queue. Answers ``False`` when the case is gone or closed
    meanwhile (then the message opens a case of its own)."""
    store: ComplaintStore = ctx["store"]
    plugins: GatewayPlugins = ctx["plugins"]
    now = _clock_now(ctx)
    reply_id = f"rep_{message.id.split('_', 1)[-1]}_repeat"
    engine, policy = await _rules(ctx), await _policy(ctx)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if not is_open(complaint):
            raise Conflict("complaint_closed", "closed meanwhile")
        if not any(m.message_id == message.id for m in complaint.messages):
            complaint.messages.append(_entry(message))
            complaint.messages.sort(key=lambda m: m.received_at)  # in the order the customer wrote
            complaint.evidence.extend(message.attachments)
            effects.jobs.extend(fetch_jobs(complaint.id, message.channel, message.attachments))
            complaint.repeat_count += 1
            if complaint.repeat_count <= REPEAT_PRIORITY_STEPS:
                complaint.priority = min(routing.MAX_PRIORITY, complaint.priority + 1)
            _reroute_on_repeat(store, complaint, effects, engine, policy, now)
            complaint.merges.append(Merge(message_id=message.id, reason=match.reason, detail=match.detail, at=now,
                                          evidence_ids=[e.id for e in message.attachments]))
            effects.ops.append(lambda pipe: metrics.incr(pipe, store.keys.p, "gateway_repeat_merges",
                                                         reason=match.reason))
            resume(store, complaint, effects, now)
            complaint.history.append(HistoryEvent(
                at=now, actor="worker", action="merged",
                detail={"message_id": message.id, "reason": match.reason, "channel": message.channel,
                        "repeat_count": str(complaint.repeat_count), **match.detail}))
            if not message.suppress_acknowledgement:
                to = None if message.sender == complaint.contact else message.sender
                complaint.replies.append(Reply(
                    id=reply_id, kind="repeat_ack", text=repeat_acknowledgement(complaint.case_number, message.language),
                    author="system", channel=message.channel, created_at=now, to=to, language=message.language))
                effects.ops.append(lambda pipe: store.add_to_outbox(pipe, complaint.id, reply_id))
                effects.jobs.append(send_job(complaint.id, reply_id))
            if plugins.has_listeners:
                effects.jobs.append(event_job(complaint, "merged", "worker",
                                              {"message_id": message.id, "reason": match.reason}, at=now))
        _taken_into(store.keys, message, complaint.id, effects)

    try:
        complaint = await store.update(match.complaint_id, change)
    except (NotFound, Conflict):
        return False
    log.info("message %s merged into %s (%s)", message.id, complaint.case_number, match.reason)
    return True


async def _categorise(plugins: GatewayPlugins, message: InboundMessage) -> tuple[str, bool, str]:
    keyword = categorise(message.text, message.category_hint)
    verdict = await plugins.classify(message)
    if verdict is not None:
        plugin_name, classification = verdict
        if classification.category in CATEGORIES:
            return (classification.category, classification.formal_complaint or keyword.formal_complaint,
                    f"plugin:{plugin_name}")
        plugins.errors[plugin_name] += 1
        log.error("plugin %s classified into unknown category %r; ignored", plugin_name, classification.category)
    return keyword.category, keyword.formal_complaint, keyword.source


async def _apply_enrichment(plugins: GatewayPlugins, complaint: Complaint, message: InboundMessage) -> None:
    for plugin_name, facts in await plugins.enrich(complaint, message):
        if not isinstance(facts, dict):
            continue
        try:
            if facts.get("transaction_id") and not complaint.transaction_id:
                complaint.transaction_id = str(facts["transaction_id"])[:64]
            amount = facts.get("amount")
            if isinstance(amount, dict) and complaint.amount is None:
                complaint.amount = Amount(value=str(amount["value"]), currency=str(amount["currency"]))
            for tag in facts.get("tags", ()) or ():
                if str(tag) not in complaint.tags:
                    complaint.tags.append(str(tag)[:64])
            boost = int(facts.get("priority_boost", 0) or 0)
            if boost:
                complaint.priority = max(0, min(routing.MAX_PRIORITY, complaint.priority + boost))
            complaint.history.append(
                HistoryEvent(at=datetime.now(timezone.utc), actor=f"plugin:{plugin_name}", action="enriched",
                             detail={k: str(v)[:200] for k, v in facts.items()})
            )
        except (KeyError, TypeError, ValueError) as exc:
            plugins.errors[plugin_name] += 1
            log.error("plugin %s returned unusable enrichment: %s", plugin_name, exc)


async def send_reply(ctx: dict[str, Any], complaint_id: str, reply_id: str) -> str:
    """The job behind every reply that was not sent inline (agent replies, outbox retries)."""
    store: ComplaintStore = ctx["store"]
    try:
        complaint = await store.get(complaint_id)
    except NotFound:
        return "missing"
    reply = next((r for r in complaint.replies if r.id == reply_id), None)
    if reply is None or reply.delivery != "queued":
        await store.drop_from_outbox(complaint_id, reply_id)  # nothing left to send for it
        return "already"
    result = await deliver(ctx, complaint, reply)
    if result.status == "failed" and result.retryable:
        job_try = ctx.get("job_try", 1)
        if job_try < MAX_SEND_TRIES:
            log.warning("send %s on %s failed (try %d), retrying: %s", reply_id, reply.channel, job_try,
                        mask_text(result.error or ""))
            raise Retry(defer=min(300, 2**job_try))
        await _record(store, complaint.id, reply.id, DeliveryResult(status="failed", error=result.error))
    return result.status


async def deliver(ctx: dict[str, Any], complaint: Complaint, reply: Reply) -> DeliveryResult:
    """Hand one reply to its channel's sender and record the outcome (a retryable failure is
    left queued for the caller to retry)."""
    store: ComplaintStore = ctx["store"]
    plugins: GatewayPlugins = ctx["plugins"]
    sender = plugins.sender(reply.channel, ctx["services"])
    if sender is None:
        result = DeliveryResult(status="failed", error=f"no sender for channel {reply.channel!r}")
        await _record(store, complaint.id, reply.id, result)
        return result
    outbound = OutboundMessage(
        id=reply.id, channel=reply.channel, complaint_id=complaint.id, case_number=complaint.case_number,
        to=reply.to or complaint.contact, text=reply.text, kind=reply.kind, language=reply.language or complaint.language,
        thread=thread_of(complaint, reply.channel),
    )
    if not await store.replicated("send"):  # what led to this reply must survive a failover first
        return DeliveryResult(status="failed", error="not yet copied to a standby", retryable=True)
    gate = _send_gate(ctx, reply.channel)
    try:
        await asyncio.wait_for(gate.acquire(), timeout=SEND_GATE_WAIT_S)
    except asyncio.TimeoutError:  # the channel's provider is stalling: back off, keep the slot for others
        return DeliveryResult(status="failed", error="channel busy: too many sends in flight", retryable=True)
    try:
        result = await sender.send(outbound)
    except Exception as exc:  # a sender that raises is a transient failure until tries run out
        plugins.errors[reply.channel] += 1
        result = DeliveryResult(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], retryable=True)
    finally:
        gate.release()
    if not (result.status == "failed" and result.retryable):
        await _record(store, complaint.id, reply.id, result)
    return result


SEND_GATE_WAIT_S = 0.5


def _send_gate(ctx: dict[str, Any], channel: str) -> asyncio.Semaphore:
    """Sends in flight per channel are capped at a quarter of the worker's job slots: a provider
    that stalls (each send waiting out its timeout) must not hold every slot, or all channels'
    messages would wait behind it. A send that finds its channel full backs off and retries."""
    gates: dict[str, asyncio.Semaphore] = ctx.setdefault("send_gates", {})
    gate = gates.get(channel)
    if gate is None:
        settings = ctx.get("settings")
        gate = gates[channel] = asyncio.Semaphore(max(1, (settings.worker_max_jobs if settings else 50) // 4))
    return gate


def thread_of(complaint: Complaint, channel: str) -> dict[str, str]:
    """What a threaded channel (e-mail) needs to answer in the customer's thread: the provider ids
    of the customer's messages on that channel, newest last, and the subject."""
    ids = [m.provider_message_id for m in complaint.messages if m.channel == channel and m.provider_message_id]
    thread: dict[str, str] = {}
    if ids:
        thread["in_reply_to"] = ids[-1]
        thread["references"] = " ".join(ids[-10:])
    subject = next((m.subject for m in reversed(complaint.messages) if m.channel == channel and m.subject), None)
    if subject:
        thread["subject"] = subject
    return thread


async def _record(store: ComplaintStore, complaint_id: str, reply_id: str, result: DeliveryResult) -> None:
    state: dict[str, Any] = {"delivery": result.status, "provider_message_id": result.provider_message_id,
                             "error": result.error}
    if result.status == "delivered":
        state["delivered_at"] = datetime.now(timezone.utc).isoformat()
    await store.record_delivery(complaint_id, reply_id, state)


async def dispatch_event(
    ctx: dict[str, Any], complaint_id: str, kind: str, at_ms: int, actor: str, detail: dict[str, str]
) -> str:
    store: ComplaintStore = ctx["store"]
    plugins: GatewayPlugins = ctx["plugins"]
    try:
        complaint = await store.get(complaint_id)
    except NotFound:
        return "missing"
    event = ComplaintEvent(kind=kind, complaint_id=complaint.id, case_number=complaint.case_number,
                           at=ms_to_dt(at_ms), actor=actor, detail=detail)
    await plugins.emit(event, complaint)
    return "sent"


# -- housekeeping ---------------------------------------------------------------------------


async def requeue_expired_leases(store: ComplaintStore) -> int:
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


async def recover_pending(store: ComplaintStore) -> int:
    """Messages stored but never processed (their job lost or expired) are queued again."""
    recovered = 0
    for mid in await store.stale_pending(PENDING_RECOVERY_AFTER_MS):
        if not await store.job_exists(f"ingest:{mid}"):
            await store.enqueue(PlannedJob("process_message", f"ingest:{mid}", (mid,)))
            recovered += 1
    if recovered:
        log.warning("re-queued %d messages whose processing job was lost", recovered)
    return recovered


async def resend_overdue(store: ComplaintStore) -> int:
    """Replies whose inline send never completed (a crash) get a send job."""
    overdue = await store.overdue_outbox()
    if overdue:
        await store.enqueue(*(send_job(cid, rid) for cid, rid in overdue))
        log.warning("re-sending %d replies left in the outbox", len(overdue))
    return len(overdue)


async def _housekeeping(ctx: dict[str, Any]) -> None:
    store: ComplaintStore = ctx["store"]
    worker_id = ctx["worker_id"]
    ticks = 0
    while True:
        try:
            await store.worker_heartbeat(worker_id)
            await requeue_expired_leases(store)
            await resend_overdue(store)
            if ticks % 15 == 0:
                await recover_pending(store)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis blips must not kill housekeeping
            log.warning("housekeeping: %s: %s", type(exc).__name__, exc)
        ticks += 1
        await asyncio.sleep(2)


async def _run_poller(services: GatewayServices, plugin: str, poller: Any, plugins: GatewayPlugins) -> None:
    backoff = 1.0
    while True:
        try:
            await poller.run(services)
            backoff = 1.0
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            plugins.errors[plugin] += 1
            log.error("poller %s/%s failed: %s: %s; restarting in %.0f s", plugin, poller.name,
                      type(exc).__name__, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(60.0, backoff * 2)


# -- the worker process ---------------------------------------------------------------------


def build_services(settings: Settings, store: ComplaintStore) -> GatewayServices:
    blobs = DirectoryBlobStore(settings.evidence_dir, max_bytes=settings.max_evidence_bytes)
    return GatewayServices(settings=settings, intake=Intake(store), store=store, blobs=blobs)


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    await route_now(ctx["redis"])
    store = ComplaintStore(settings.redis_prefix, worker_wake=settings.worker_wake, limits=settings.intake_limits())
    store.bind(ctx["redis"])
    services = build_services(settings, store)
    services.redis = ctx["redis"]
    ctx["store"] = store
    ctx["services"] = services
    if "plugins" not in ctx:
        ctx["plugins"] = GatewayPlugins.load(settings.plugins_path, autoload=settings.plugins_autoload)
    ctx["worker_id"] = f"{socket.gethostname()}:{os.getpid()}:{new_id('w')[-6:]}"
    ctx["plugin_errors_reported"] = {}  # shared by the per-job copies of ctx
    ctx["send_gates"] = {}  # sends in flight per channel, shared likewise
    ctx["clock"] = Clock(store, settings.test_clock)
    ctx["policy"] = PolicyCache(store)
    ctx["timers"] = TimerLoop(ctx)
    tasks = [asyncio.create_task(_housekeeping(ctx), name="housekeeping"),
             asyncio.create_task(ctx["timers"].run(), name="timers")]
    for plugin_name, poller in ctx["plugins"].pollers(services):
        tasks.append(asyncio.create_task(_run_poller(services, plugin_name, poller, ctx["plugins"]),
                                         name=f"poller:{plugin_name}:{poller.name}"))
    ctx["background"] = tasks
    while True:  # a worker may start before its Redis (or during a failover): wait for it
        try:
            await store.worker_heartbeat(ctx["worker_id"])
            break
        except Exception as exc:  # noqa: BLE001 - Redis's "not now" comes as more than RedisError
            if not redis_unavailable(exc):
                raise
            log.warning("worker %s: redis unavailable at start (%s); trying again in 1 s", ctx["worker_id"],
                        type(exc).__name__)
            await asyncio.sleep(1)
    log.info("worker %s started", ctx["worker_id"])


async def shutdown(ctx: dict[str, Any]) -> None:
    for task in ctx.get("background", ()):
        task.cancel()
    await asyncio.gather(*ctx.get("background", ()), return_exceptions=True)


_CLAIM_JOB_LUA = """
-- KEYS: in-progress key, queue; ARGV: job id, now ms, in-progress timeout ms, claim token
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then return false end
redis.call('PSETEX', KEYS[1], ARGV[3], ARGV[4])
return score
"""

_FREE_CLAIM_LUA = """
-- KEYS: in-progress key; ARGV: the claim token that set it
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class WakeableWorker(Worker):
    """An arq worker that the gateway wakes through a Redis list as soon as it queues a job.

    arq polls its queue every ``poll_delay`` (0.5 s by default), which alone puts up to half a
    second between intake and routing. Here the worker blocks on ``BLPOP wake`` with the poll
    delay as timeout: a new job starts within a round trip, and the poll still runs when no
    wake-up comes (jobs deferred into the future, retries).
    """

    def __init__(self, *args: Any, wake_key: str, redis_url: str, slot_key: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wake_key = wake_key
        self.slot_key = slot_key  # the key prefix: its Redis Cluster slot is where this desk lives
        self.redis_url = redis_url
        self._slot_free = asyncio.Event()
        self._token_prefix = new_id("w") + ":"  # claims: <this worker>:<n>
        self._claims = 0
        self._claimed: dict[str, tuple[str, float]] = {}  # job id → (claim token, loop time before the claim)
        self._freeing: set[asyncio.Task[None]] = set()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq's start_jobs with its WATCH / EXISTS / ZSCORE / MULTI claim done in one script:
        the same check (not running elsewhere, still queued, due) in one round trip, not three.
        Jobs this worker is already running stay at the head of the queue until they finish;
        they are skipped without asking Redis (arq asks, once per poll each: under a backlog
        that is most of its round trips)."""
        for job_id_b in job_ids:
            if job_id_b.decode() in self.tasks:
                continue
            await self.sem.acquire()
            if self.job_counter >= self.max_jobs:
                self.sem.release()
                return None
            self.job_counter = self.job_counter + 1
            job_id = job_id_b.decode()
            self._claims += 1
            token = f"{self._token_prefix}{self._claims}"  # the in-progress key's value: ours, not another's
            claimed_at = self.loop.time()  # no later than the in-progress key's start
            try:
                score = await self._claim_job(
                    keys=[in_progress_key_prefix + job_id, self.queue_name],
                    args=[job_id, timestamp_ms(), int(self.in_progress_timeout_s * 1000), token],
                )
            except BaseException:  # Redis away, the claim may have been made: give the slot back
                score = None       # (each blip kept one for good: after max_jobs, no job was taken)
                self._freeing.add(self.loop.create_task(self._free(job_id, token, claimed_at)))
                raise
            finally:
                if not score:
                    self.job_counter = self.job_counter - 1
                    self.sem.release()
            if not score:
                continue
            self._claimed[job_id] = (token, claimed_at)
            task = self.loop.create_task(self.run_job(job_id, int(score)))
            task.add_done_callback(lambda _: self._release_sem_dec_counter_on_complete())
            self.tasks[job_id] = task

    async def run_job(self, job_id: str, score: int) -> None:
        """arq's run_job. When Redis fails over under the job's own start or finish (the job's
        function turns Redis errors into a retry itself), the job is freed for the next poll
        instead of waiting for its in-progress key to expire (job timeout + 10 s); it is safe to
        run again, like every job here."""
        try:
            await super().run_job(job_id, score)
        except Exception as exc:  # noqa: BLE001 - only Redis's "not now" is ridden out
            if not redis_unavailable(exc):
                raise
            log.warning("job %s met Redis failing over at its start or finish; it runs again shortly", job_id)
            await self._free(job_id, *self._claimed[job_id])
        finally:
            self._claimed.pop(job_id, None)

    async def _free(self, job_id: str, token: str, claimed_at: float) -> None:
        """Remove this claim's in-progress key (only if it is still this claim's), trying while
        Redis is away; after the key's own expiry there is nothing left to free."""
        try:
            while self.loop.time() < claimed_at + self.in_progress_timeout_s:
                try:
                    await self._free_claim(keys=[in_progress_key_prefix + job_id], args=[token])
                    return
                except Exception as exc:  # noqa: BLE001
                    if not redis_unavailable(exc):
                        raise
                    await asyncio.sleep(1)
        finally:
            self._freeing.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def main(self) -> None:  # mirrors arq.Worker.main, with BLPOP in place of sleep
        if self._pool is None:
            self._pool = ArqRedis(
                make_pool(self.redis_url, socket_connect_timeout=2, socket_keepalive=True,
                          max_connections=self.max_jobs * 2 + 20, follow_slot_of=self.slot_key),
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        self._claim_job = self.pool.register_script(_CLAIM_JOB_LUA)
        self._free_claim = self.pool.register_script(_FREE_CLAIM_LUA)
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        from router.redis_pool import transition_code  # what to log of a Redis reply (never its text)

        while True:
            try:
                if await self._iteration():
                    return None
            except Exception as exc:  # noqa: BLE001 - only Redis's "not now" is ridden out
                if not redis_unavailable(exc):
                    raise
                # Redis restarting or failing over (the wake-up BLPOP ended with UNBLOCKED, a write
                # met READONLY, a reset, a job's own claim or finish failed): keep the process and
                # its running jobs, poll again shortly; arq's own loop would end the worker here
                log.warning("redis unavailable (%s); polling again in 1 s",
                            transition_code(exc) or type(exc).__name__)
                await asyncio.sleep(1)

    async def _iteration(self) -> bool:
        """One poll; True when a burst run is done."""
        await self._poll_iteration()
        if self.burst:
            if 0 <= self.max_burst_jobs <= self._jobs_started():
                await asyncio.gather(*self.tasks.values())
                return True
            if await self.pool.zcard(self.queue_name) == 0:
                await asyncio.gather(*self.tasks.values())
                return True
        if self.job_counter >= self.max_jobs:
            # at capacity with work waiting: poll again as soon as a slot frees, not after
            # the poll delay (which left the worker idle while draining a backlog)
            self._slot_free.clear()
            try:
                await asyncio.wait_for(self._slot_free.wait(), timeout=self.poll_delay_s)
            except asyncio.TimeoutError:
                pass
        else:
            await self.pool.blpop([self.wake_key], timeout=self.poll_delay_s)
        return False

    def _release_sem_dec_counter_on_complete(self) -> None:
        super()._release_sem_dec_counter_on_complete()
        self._slot_free.set()

    # arq's finish_job / finish_failed_job, less the ZREM of its global abort set: this worker
    # never aborts jobs, and that key (arq:abort, no hash tag) lives outside the desk's Redis
    # Cluster slot, where it would break the transaction.

    async def finish_job(self, job_id: str, finish: bool, result_data: bytes | None, result_timeout_s: float | None,
                         keep_result_forever: bool, incr_score: int | None, keep_in_progress: float | None) -> None:
        async with self.pool.pipeline(transaction=True) as tr:
            delete_keys = []
            in_progress_key = in_progress_key_prefix + job_id
            if keep_in_progress is None:
                delete_keys.append(in_progress_key)
            else:
                tr.pexpire(in_progress_key, int(keep_in_progress * 1000))
            if finish:
                if result_data:
                    tr.set(result_key_prefix + job_id, result_data,
                           px=None if keep_result_forever or result_timeout_s is None else int(result_timeout_s * 1000))
                delete_keys += [retry_key_prefix + job_id, job_key_prefix + job_id]
                tr.zrem(self.queue_name, job_id)
            elif incr_score:
                tr.zincrby(self.queue_name, incr_score, job_id)
            if delete_keys:
                tr.delete(*delete_keys)
            await tr.execute()

    async def finish_failed_job(self, job_id: str, result_data: bytes | None) -> None:
        async with self.pool.pipeline(transaction=True) as tr:
            tr.delete(retry_key_prefix + job_id, in_progress_key_prefix + job_id, job_key_prefix + job_id)
            tr.zrem(self.queue_name, job_id)
            await tr.execute()  # keep_result=0: no result is kept


def instrumented(fn: Any) -> Any:
    """Count a job's result (ok, retry, failed) and time it, in the shared metrics; pass on the
    plugin errors this process counted since the last job."""
    import functools
    import time as _time

    @functools.wraps(fn)
    async def run(ctx: dict[str, Any], *args: Any) -> Any:
        started = _time.perf_counter()
        result = "ok"
        settings = ctx.get("settings")
        # arq cancels a job at its timeout and counts it failed, never retried: stop it a little
        # earlier and retry it with backoff instead (every step is safe to run again)
        limit = max(1.0, settings.job_timeout_seconds - 2) if settings is not None else None
        try:
            async with asyncio.timeout(limit):
                return await fn(ctx, *args)
        except TimeoutError:
            result = "retry"
            log.warning("%s ran out of time (%.0f s); retrying", fn.__name__, limit)
            raise Retry(defer=min(60, 2 ** ctx.get("job_try", 1))) from None
        except Retry:
            result = "retry"
            raise
        except Exception as exc:
            if not redis_unavailable(exc):
                result = "failed"
                raise
            # Redis restarting, a failover, a slot moving, a connection reset (raised as a plain
            # OSError): the step did not finish and is safe to run again (arq would otherwise
            # count it failed and drop it)
            result = "retry"
            raise Retry(defer=1) from exc
        finally:
            store: ComplaintStore | None = ctx.get("store")
            if store is not None:
                try:
                    async with store.r.pipeline(transaction=False) as pipe:
                        metrics.incr(pipe, store.keys.p, "gateway_worker_jobs", job=fn.__name__, result=result)
                        metrics.observe(pipe, store.keys.p, "gateway_worker_job_seconds",
                                        _time.perf_counter() - started, job=fn.__name__)
                        plugins = ctx.get("plugins")
                        seen = ctx.setdefault("plugin_errors_reported", {})
                        for name, count in (plugins.errors.items() if plugins is not None else ()):
                            if count > seen.get(name, 0):
                                metrics.incr(pipe, store.keys.p, "gateway_plugin_errors", count - seen.get(name, 0),
                                             plugin=name)
                                seen[name] = count
                        await pipe.execute()
                except Exception:  # noqa: BLE001 - metrics never fail a job
                    pass

    return run


def create_worker(settings: Settings, *, burst: bool = False, plugins: GatewayPlugins | None = None,
                  handle_signals: bool = True) -> WakeableWorker:
    store_keys = ComplaintStore(settings.redis_prefix).keys
    ctx: dict[str, Any] = {"settings": settings}
    if plugins is not None:
        ctx["plugins"] = plugins
    redis_url = settings.redis_url or "redis://127.0.0.1:6379/0"
    return WakeableWorker(
        functions=[
            func(instrumented(process_message), name="process_message", max_tries=10),
            func(instrumented(send_reply), name="send_reply", max_tries=MAX_SEND_TRIES + 1),
            func(instrumented(dispatch_event), name="dispatch_event", max_tries=3),
            func(instrumented(consider_incident), name="consider_incident", max_tries=15),
            _evidence_fetch_job(settings),
        ],
        # arq's own settings are not used to connect (main() builds the pool from redis_url)
        redis_settings=RedisSettings() if redis_url.startswith(SENTINEL_SCHEME) else RedisSettings.from_dsn(redis_url),
        queue_name=store_keys.arq_queue,
        on_startup=startup,
        on_shutdown=shutdown,
        ctx=ctx,
        max_jobs=settings.worker_max_jobs,
        job_timeout=settings.job_timeout_seconds,
        keep_result=0,  # nobody reads job results; the complaint is the result
        poll_delay=settings.worker_poll_seconds,
        health_check_interval=60,
        burst=burst,
        handle_signals=handle_signals,
        wake_key=store_keys.wake,
        redis_url=redis_url,
        slot_key=settings.redis_prefix,
    )


def run_worker(settings: Settings) -> None:
    """The worker process (``python -m gateway worker`` loads the settings and calls this)."""
    if settings.log_level != "DEBUG":
        logging.getLogger("arq.worker").setLevel(logging.WARNING)  # two lines per job otherwise
    worker = create_worker(settings)
    worker.run()


__all__ = ["create_worker", "run_worker", "process_message", "send_reply", "dispatch_event"]
