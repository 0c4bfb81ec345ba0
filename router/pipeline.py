"""``process_message``: the job that turns one stored message into a routed complaint.

One message at a time per sender, in these steps:

1. **prepare**: the message's state (gone, done already, undecodable: quarantined); its announced
   attachments become pending evidence, fetched by jobs of their own;
2. **status question** ("进度 C-…", "status C-…"): answered, nothing else;
3. **an existing case**: the case the message names (or a resolved one its sender was last
   told about) takes it: a follow-up on an open case, a survey answer or a reopening after
   resolution;
4. **categorise**: a hint, a classifier plugin, the learned categoriser (with its confidence and
   runner-up), or the keyword rules (``router.categoriser``);
5. **repeat check**: the same problem as one of the customer's open cases is merged into it; a
   possible repeat (a middle-band match) opens its own case, linked to the likely one;
6. **route**: the active routing rules decide the skill queue and priority;
7. **open**: the complaint drafted, enriched by plugins, committed with its acknowledgement,
   which is sent at once.

Every step is safe to run twice (arq runs a job at least once): the change that takes the
message in checks the message's state in its own transaction. The changes themselves are in
``router.cases``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from arq import Retry

from normalizer.ids import now_ms
from normalizer.inbound import complete_message
from normalizer.schema import (
    Amount,
    Complaint,
    ComplaintStatus,
    HistoryEvent,
    InboundMessage,
    MessageStatus,
    OutboundMessage,
)
from normalizer.status import parse_status_query, status_text
from plugins.manager import GatewayPlugins
from router import cases, incident_check, payment_check, repeats, routing, templates
from router.categoriser import Categorised
from router.categoriser import categorise_message as categorise_with
from router.context import WorkerContext, context_of, job_try
from router.delivery import deliver, send_unrecorded
from router.evidence_fetch import announce
from router.facts import facts_of
from router.jobs import complaint_id_for, opening_message
from router.sender_lock import SenderLock
from router.store import ComplaintStore, NotFound, PlannedJob, is_open

log = logging.getLogger("gateway.worker")

CONTACT_LOCK_MS = 15_000
#: How often a message whose sender's lock is held asks again.
LOCK_POLL_S = 0.02
#: An enricher's answer about the payment records (``router.payment_check`` records it on its own).
PAYMENT_CHECK_KEYS = frozenset({"payment_check", "retry_after_seconds"})


async def process_message(ctx: dict[str, Any], message_id: str) -> str:
    """One message at a time per sender: two messages a customer sends a moment apart must see
    each other (the second is a repeat of the first, not a second case). The sender's lock is
    taken by the step that loads the message and let go once what the message asked for went out."""
    w = context_of(ctx)
    if job_try(ctx) > 1:  # a try that died (or met Redis away) after its commit left the incident check to do
        await incident_check_after_commit(w, message_id)
    lock = SenderLock(w.store, CONTACT_LOCK_MS, token=message_id)
    deadline = asyncio.get_running_loop().time() + CONTACT_LOCK_MS / 1000
    try:  # (from the first prepare on: one that took the lock and then failed lets it go too)
        while True:
            prepared = await prepare(w.store, message_id, lock)
            if prepared != "locked":
                break
            if asyncio.get_running_loop().time() > deadline:
                raise Retry(defer=1)
            await asyncio.sleep(LOCK_POLL_S)
        return await _process_message(w, prepared, lock)
    finally:
        await lock.release()


async def _process_message(w: WorkerContext, prepared: tuple[InboundMessage, dict[str, Any]] | str,
                           lock: SenderLock) -> str:
    if isinstance(prepared, str):
        return prepared
    message, fields = prepared
    case_asked = parse_status_query(message.text)
    if case_asked:
        return await answer_status(w, message, case_asked)
    taken = await into_existing_case(w, message, fields.get("after_resolved"))
    if taken is not None:
        return taken
    customer_id = fields["customer_id"]
    categorised = await categorise_message(w, message)
    possible = None
    if not fields.get("nodedup"):
        match = await merge_if_repeat(w, message, fields, categorised.category)
        if match is True:
            return "merged"
        possible = match if isinstance(match, repeats.Match) else None
    return await open_case(w, message, customer_id, categorised, possible_repeat=possible, lock=lock)


# -- 1. prepare ---------------------------------------------------------------------------------


async def prepare(store: ComplaintStore, message_id: str,
                  lock: SenderLock | None = None) -> tuple[InboundMessage, dict[str, Any]] | str:
    """The message and its stored fields, or the job's outcome when there is nothing to do
    (``locked``: another job holds the sender's lock; ``lock``: taken here, held from then on)."""
    status, message, fields = await store.prepare(message_id, lock.take_with() if lock is not None else None)
    if status == "locked":
        return "locked"
    if lock is not None:
        lock.held(fields.get("sender", ""))
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
    # what a channel left to be found after its acknowledgement (amount, transaction id, language)
    message = complete_message(message)
    # announced attachments wait on the case as pending evidence, fetched by a job of their own
    # (whichever case the message joins: a new one, a follow-up, a repeat, a reopened one)
    message.attachments = announce(message)
    await templates.refresh(store.r, store.keys)
    return message, fields


# -- 2. a status question -----------------------------------------------------------------------


async def answer_status(w: WorkerContext, message: InboundMessage, case_number: str) -> str:
    """"进度 C-…" / "status C-…" on any channel: the case's state and last update, to the
    asker's channel, in their language; only a contact of the case's own customer learns it."""
    store = w.store
    complaint = await store.case_for_contact(case_number, message.sender)
    text = status_text(complaint, message.language, case_number)
    if complaint is None:
        await send_unrecorded(w, OutboundMessage(
            id=cases.status_reply_id(message), channel=message.channel, complaint_id="", case_number=case_number,
            to=message.sender, text=text, kind="status", language=message.language), "status answer")
        await store.mark_message(message.id, MessageStatus.processed)
        return "status_unknown_case"
    await cases.status_answered(store, complaint.id, message, text)
    return "status"


# -- 3. an existing case: follow-up, survey answer, reopening ---------------------------------


async def into_existing_case(w: WorkerContext, message: InboundMessage, after_resolved: str | None = None) -> str | None:
    """The message joins a case it names (or, after resolution, the case its sender was last
    told about: ``after_resolved``, when read already); ``None``: it is about something new (an
    old closed case it names is let go)."""
    store = w.store
    target = None
    if message.complaint_ref:
        try:
            target = await find_complaint(store, message.complaint_ref)
        except NotFound:
            target = None
    if target is None or not is_open(target):
        resolved = target if target is not None else await recently_resolved(store, message, after_resolved)
        if resolved is not None and within_reopen_window(w, resolved):
            return await cases.survey_or_reopen(store, resolved, message, policy=await w.deadline_policy(),
                                                now=w.now(), listeners=w.plugins.has_listeners)
    if target is not None and is_open(target):
        await cases.follow_up(store, target.id, message, w.now())
        return "follow_up"
    if target is not None:
        message.complaint_ref = None  # an old closed case: this is a new problem
    return None


async def find_complaint(store: ComplaintStore, ref: str) -> Complaint:
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


async def recently_resolved(store: ComplaintStore, message: InboundMessage,
                            complaint_id: str | None = None) -> Complaint | None:
    """The resolved case whose survey or reopening this sender's next message may be
    (``complaint_id``: which case that is, when read already; "" = none)."""
    if complaint_id is None:
        raw = await store.r.get(cases.after_key(store, message.sender))
        complaint_id = raw.decode() if raw else ""
    if not complaint_id:
        return None
    try:
        complaint = await store.get(complaint_id)
    except NotFound:
        return None
    return None if is_open(complaint) else complaint


def within_reopen_window(w: WorkerContext, complaint: Complaint) -> bool:
    if complaint.status != ComplaintStatus.resolved or complaint.resolved_at is None:
        return False
    age = datetime.now(timezone.utc) - complaint.resolved_at
    return age.total_seconds() <= w.settings.reopen_window_hours * 3600


# -- 4. categorise ------------------------------------------------------------------------------


async def categorise_message(w: WorkerContext, message: InboundMessage) -> Categorised:
    """A valid hint, else a classifier plugin's verdict (an override), else the learned
    categoriser (confidence, runner-up), else the keyword rules (``router.categoriser``)."""
    return await categorise_with(w.plugins, message, w.categoriser)


# -- 5. the repeat check ------------------------------------------------------------------------


async def merge_if_repeat(w: WorkerContext, message: InboundMessage, fields: dict[str, Any],
                          category: str) -> bool | repeats.Match:
    """The same problem as one of the customer's open cases (within the repeat window): merged
    into it (``True``). A possible repeat (middle band): the match, for the new case to link.
    ``False``: none, or that case closed meanwhile."""
    candidates = {cid: fp for cid, raw in fields.get("open_cases", {}).items()
                  if (fp := repeats.decode(raw)) is not None}
    pending = [cid for cid, fp in candidates.items() if fp.pending]
    if pending:  # opened with what its fields give: what its opening message gives is read now
        stored = await w.store.stored(pending)
        for cid in pending:
            opening = opening_message(stored[cid]) if cid in stored else None
            if opening is not None:
                candidates[cid] = repeats.completed(candidates[cid], opening.text)
            else:
                del candidates[cid]  # (gone meanwhile)
    window_ms = w.settings.repeat_window_hours * 3_600_000
    match = (repeats.find_repeat(candidates, message, category, now_ms(), window_ms, possible=True)
             if candidates else None)
    if match is None:
        return False
    if not match.confident:
        return match
    now = w.now()
    engine, policy = await w.engine(), await w.deadline_policy()
    complaint = await cases.merge_repeat(w.store, match, message, engine=engine, policy=policy, now=now,
                                         listeners=w.plugins.has_listeners)
    if complaint is None:
        return False
    log.info("message %s merged into %s (%s)", message.id, complaint.case_number, match.reason)
    return True


# -- 6, 7. route and open -----------------------------------------------------------------------


async def open_case(w: WorkerContext, message: InboundMessage, customer_id: str, categorised: Categorised, *,
                    possible_repeat: repeats.Match | None = None, lock: SenderLock | None = None) -> str:
    """Route the message by the active rules (a guess the categoriser is unsure of: to triage, if
    the rules say so), open its case and send the acknowledgement."""
    store = w.store
    policy = await w.deadline_policy()
    engine = await w.engine()
    category, formal = categorised.category, categorised.formal
    facts = replace(facts_of(message, category, formal, policy), confidence=categorised.confidence)
    decided = engine.decide(facts)
    now = datetime.now(timezone.utc)
    if w.clock is not None:
        await w.clock.refresh()
    offset = timedelta(milliseconds=w.clock.offset_ms if w.clock is not None else 0)  # the test clock's
    complaint = cases.draft_complaint(message, customer_id=customer_id, category=category, formal=formal,
                                      decided=decided, policy=policy, clock_offset=offset, now=now)
    cases.categorised_as(complaint, categorised)
    if possible_repeat is not None:
        cases.link_possible_repeat(complaint, possible_repeat, now)
    later = await apply_enrichment(w.plugins, complaint, message)
    if later:  # before the case's commit, so no crash between the two loses them (a try ahead of its case waits)
        await store.enqueue(*later)
    opened = await cases.open_complaint(store, complaint, message, categorised=categorised.detail(),
                                        decided=decided, worker_id=w.worker_id, now=now,
                                        listeners=w.plugins.has_listeners, incidents=w.incidents, lock=lock)
    if opened is None:
        return "already"
    log.info("complaint %s opened from %s (%s → %s, p%d)", complaint.case_number, message.id, category,
             decided.skill, complaint.priority)
    # The acknowledgement goes out now; if this process dies first, the outbox sends it later.
    ack = opened.acknowledgement
    if ack is not None:  # (its record lets the sender's lock go: the sender's next message may go on)
        result = await deliver(w, complaint, ack, lock=lock)
        if result.status == "failed" and result.retryable:  # the provider hiccuped: try again soon
            await store.enqueue(PlannedJob("send_reply", f"send:{ack.id}", (complaint.id, ack.id), defer_ms=1000))
    if lock is not None:  # the acknowledgement is out (or none was sent, or it is to be tried again)
        await lock.release()
    # many customers, one fault? (Redis away here: the job's retry runs the check again)
    await incident_check.check_opened(w, opened)
    return "created"


async def incident_check_after_commit(w: WorkerContext, message_id: str) -> None:
    """The incident check of the complaint this message opened, when an earlier try committed it
    (the check is safe to run again; nothing happens for a message not processed yet, or one that
    joined another case)."""
    state = await w.store.message_state(message_id)
    cid = complaint_id_for(message_id)
    if state and state.get("status") == MessageStatus.processed.value and state.get("complaint_id") == cid:
        await incident_check.check_again(w, cid, message_id)


async def apply_enrichment(plugins: GatewayPlugins, complaint: Complaint,
                           message: InboundMessage) -> list[PlannedJob]:
    """What enricher plugins know of the case (a transaction id, an amount, tags, a priority
    boost, a payment-records check), recorded on its history; an unusable answer is counted as
    the plugin's error. Answers the jobs that must follow (a payment lookup to try again later)."""
    later: list[PlannedJob] = []
    for plugin_name, facts in await plugins.enrich(complaint, message):
        if not isinstance(facts, dict):
            continue
        try:
            lookup = (payment_check.lookup_of(plugin_name, facts, complaint.payment_check, datetime.now(timezone.utc))
                      if "payment_check" in facts else None)
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
            other = {k: str(v)[:200] for k, v in facts.items() if k not in PAYMENT_CHECK_KEYS}
            if other or lookup is None:
                complaint.history.append(HistoryEvent(at=datetime.now(timezone.utc), actor=f"plugin:{plugin_name}",
                                                      action="enriched", detail=other))
            if lookup is not None:
                job = payment_check.record(complaint, plugin_name, lookup, datetime.now(timezone.utc))
                later.extend([job] if job is not None else [])
        except (KeyError, TypeError, ValueError) as exc:
            plugins.errors[plugin_name] += 1
            log.error("plugin %s returned unusable enrichment: %s", plugin_name, exc)
    return later


__all__ = ["CONTACT_LOCK_MS", "answer_status", "categorise_message", "find_complaint", "merge_if_repeat", "open_case",
           "process_message"]
