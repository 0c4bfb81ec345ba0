"""Appeal materials (交易记录、截图、身份证明、沟通记录): an agent asks for them, the case waits for them
with its resolution clock paused, and what arrives on any channel is ticked off.

- **Asked** (``request``; ``POST /v1/complaints/{id}/materials``): each item a ``MaterialRequest``
  of the catalogue (``router.cases.catalogue``); the customer gets the list in their language on
  their channel (``materials_request``), which is also the case's ``awaiting_materials`` progress
  update (one message, not two); the stage becomes ``awaiting_materials``; the resolution clock
  pauses; a reminder is set.
- **Matched** (``take_evidence``, from a follow-up, a repeat report or a message diverted to the
  case because it brings evidence while the case waits): each piece of evidence ticks off one
  awaited item, the one its caption, file name or message names (截图 / screenshot, 流水 /
  statement, 身份证 / ID ...), else the oldest still awaited. Evidence still being fetched
  (``pending``) counts: it arrived, the fetch job handles its bytes.
- **Corrected by hand** (``mark``; ``POST /v1/complaints/{id}/materials/{material_id}``): an agent
  ticks an item as received (naming the evidence) or waives it.
- **Complete**: when nothing is awaited any more the stage clears, the paused clocks run again
  with the time they had left (``resolution_due`` moves by the time the case waited), and the
  customer is told what was received (``materials_received``).
- **Reminded** (``materials_reminder``): after ``policy.materials.reminder_seconds``, at most
  ``max_reminders`` times, out of the quiet hours; timer ``<complaint id>|materials_reminder|<request
  number>|<reminder number>``.

``Complaint.materials_missing`` lists the kinds still awaited (the case's JSON shows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from normalizer.language import desk_language
from normalizer.ids import new_id
from normalizer.schema import (
    MATERIAL_KINDS,
    Complaint,
    ComplaintStatus,
    EvidenceLink,
    HistoryEvent,
    InboundMessage,
    MaterialRequest,
)
from router import templates, timers
from router.cases import progress
from router.cases.answers import answer
from router.cases.catalogue import CARRY_ON, describe, kinds_named
from router.cases.replies import notice, reply_id_for
from router.deadlines import DeadlinePolicy
from router.store import ComplaintStore, Conflict, NotFound, TxEffects, is_open

AWAITED, RECEIVED, WAIVED = "awaited", "received", "waived"
STAGE = "awaiting_materials"
REMINDER = "materials_reminder"  # the reminders' timer kind
MAX_ITEMS = 10


class MaterialsError(ValueError):
    """A request the desk cannot carry out as asked (HTTP 422), naming the field at fault."""

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.code, self.field = code, field


def awaited(complaint: Complaint) -> list[MaterialRequest]:
    """The items still awaited, oldest request first."""
    return [m for m in complaint.materials if m.state == AWAITED]


def _requests_made(complaint: Complaint) -> int:
    return sum(1 for h in complaint.history if h.action == "materials_requested")


def _keep_missing(complaint: Complaint) -> None:
    complaint.materials_missing = [m.kind for m in awaited(complaint)]


# -- asking -------------------------------------------------------------------------------------


async def request(store: ComplaintStore, complaint_id: str, *, items: Sequence[tuple[str, str | None]],
                  message: str | None, actor: str, agent: str, claim_binds: bool, key: str | None = None) -> Complaint:
    """An agent asks the customer for materials (``items``: (kind, note) pairs). The request is
    the agent's answer to the customer (the first response if it is the first), worded from the
    ``materials_request`` template with ``message`` after it. ``claim_binds``: an agent may not ask
    on a case another agent holds. ``key``: the client's idempotency key (a retried request with
    the same key asks nothing twice)."""
    if not items or len(items) > MAX_ITEMS:
        raise MaterialsError("invalid_materials", f"between 1 and {MAX_ITEMS} items", "items")
    for n, (kind, note) in enumerate(items):
        if kind not in MATERIAL_KINDS:
            raise MaterialsError("unknown_material_kind", f"items[{n}].kind: one of {', '.join(MATERIAL_KINDS)}",
                                 f"items[{n}].kind")
        if kind == "other" and not (note or "").strip():
            raise MaterialsError("note_required", f"items[{n}].note: say what 'other' is", f"items[{n}].note")
    policy = await timers.load_policy(store)
    await templates.refresh(store.r, store.keys)
    lease_holder = await store.lease_holder(complaint_id)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if key and any(h.action == "materials_requested" and h.detail.get("key") == key for h in complaint.history):
            return  # a retry of a request made already
        if not is_open(complaint):
            raise Conflict("complaint_closed", f"{complaint.case_number} is {complaint.status.value}; reopen it first.")
        holder = lease_holder or complaint.assignee
        if claim_binds and holder is not None and holder != agent:
            raise Conflict("claimed_by_other", f"{complaint.case_number} is with agent {holder}.")
        now = datetime.now(timezone.utc)
        seq = _requests_made(complaint) + 1
        asked = [MaterialRequest(id=new_id("mat"), kind=kind, note=(note or "").strip()[:200] or None,
                                 requested_at=now, requested_by=actor) for kind, note in items]
        complaint.materials.extend(asked)
        _keep_missing(complaint)
        complaint.stage = STAGE
        lang = desk_language(complaint.language)
        text = templates.render("materials_request", lang, complaint.case_number, items=describe(asked, lang))
        if message:
            text = f"{text}\n{message}"
        rid = reply_id_for(complaint.id, f"materials_{seq}")
        answer(store, complaint, effects, reply_id=rid, text=text, actor=actor, now=now, agent=agent,
               detail={"materials_request": str(seq)})
        complaint.replies[-1].language = lang
        complaint.history.append(HistoryEvent(at=now, actor=actor, action="materials_requested", public=True, detail={
            "request": str(seq), "kinds": ",".join(m.kind for m in asked), "reply_id": rid,
            **({"key": key} if key else {})}))
        if policy.progress.enabled and STAGE in policy.progress.on_changes:  # the request says it
            complaint.history.append(HistoryEvent(at=now, actor="system", action="progress_update", public=True,
                                                  detail={"change": STAGE, "reply_id": rid}))
        if timers.pause(store, complaint, effects, "resolution", now):
            complaint.history.append(HistoryEvent(at=now, actor=actor, action="clock_paused",
                                                  detail={"deadline": "resolution", "until": "materials arrive"}))
        remind(store, complaint, effects, policy, seq, 1, now)
        progress.arm(store, complaint, effects, policy.progress)

    return await store.update(complaint_id, change)


def remind(store: ComplaintStore, complaint: Complaint, effects: TxEffects, policy: DeadlinePolicy, seq: int,
           number: int, now: datetime) -> None:
    """Set the ``number``-th reminder of request ``seq`` (none beyond the policy's maximum)."""
    rules = policy.materials
    if rules.reminder_seconds and number <= rules.max_reminders:
        at = policy.progress.release(now + timedelta(seconds=rules.reminder_seconds))
        timers.plan(store, effects, f"{complaint.id}|{REMINDER}|{seq}|{number}", at)


# -- what arrives -------------------------------------------------------------------------------


def take_evidence(store: ComplaintStore, complaint: Complaint, effects: TxEffects, *, message_id: str, channel: str,
                  text: str, evidence: Sequence[EvidenceLink], now: datetime, policy: DeadlinePolicy) -> int:
    """Evidence that reached the case (any channel) ticks off awaited items: each piece the item
    its file name or the message names, else the oldest awaited. Answers how many were ticked."""
    ticked = 0
    for link in evidence:
        waiting = awaited(complaint)
        if not waiting or any(link.id in m.evidence_ids for m in complaint.materials):
            continue
        named = kinds_named(f"{link.filename or ''} {text}")
        item = next((m for m in waiting if m.kind in named), waiting[0])
        item.state, item.received_at = RECEIVED, now
        item.evidence_ids, item.message_id, item.channel = [link.id], message_id, channel
        complaint.history.append(HistoryEvent(at=now, actor="customer", action="material_received", public=True,
                                              detail={"material_id": item.id, "kind": item.kind, "channel": channel,
                                                      "message_id": message_id, "evidence_id": link.id}))
        ticked += 1
    if ticked:
        _keep_missing(complaint)
        if not awaited(complaint):
            complete(store, complaint, effects, now, policy)
    return ticked


def complete(store: ComplaintStore, complaint: Complaint, effects: TxEffects, now: datetime,
             policy: DeadlinePolicy) -> None:
    """Nothing awaited any more: the stage clears, paused clocks run again, and the customer hears
    what was received (once per request)."""
    if complaint.stage == STAGE:
        complaint.stage = None
    if timers.resume(store, complaint, effects, now):
        complaint.history.append(HistoryEvent(at=now, actor="system", action="clock_resumed",
                                              detail={"deadline": "resolution", "why": "materials complete"}))
    received = [m for m in complaint.materials if m.state == RECEIVED]
    rid = reply_id_for(complaint.id, f"materials_received_{_requests_made(complaint)}")
    if received and not any(r.id == rid for r in complaint.replies):
        lang = desk_language(complaint.language)
        notice(store, complaint, effects, "materials_received", kind=progress.KIND, reply_id=rid,
               items=describe(received, lang), next=CARRY_ON[lang])
        complaint.history.append(HistoryEvent(at=now, actor="system", action="materials_complete", public=True,
                                              detail={"reply_id": rid, "received": str(len(received))}))
    progress.arm(store, complaint, effects, policy.progress)


async def case_awaiting(store: ComplaintStore, customer_id: str, message: InboundMessage) -> str | None:
    """The customer's open case that waits for materials and that this message, which would
    otherwise open a case of its own, belongs to: it names the case's number, or it brings
    evidence (the most recent such case)."""
    if not message.attachments and "C-" not in message.text:
        return None  # neither evidence nor a case number: nothing to look up
    ids = [cid.decode() for cid in await store.r.hkeys(store.keys.open_cases(customer_id))]
    if not ids:
        return None
    waiting = [c for c in await store.get_many(ids) if is_open(c) and awaited(c)]
    named = next((c for c in waiting if c.case_number in message.text), None)
    if named is not None:
        return named.id
    if not message.attachments or not waiting:
        return None
    return max(waiting, key=lambda c: awaited(c)[-1].requested_at).id


# -- by hand --------------------------------------------------------------------------------------


async def mark(store: ComplaintStore, complaint_id: str, material_id: str, *, state: str,
               evidence_ids: Sequence[str], actor: str) -> Complaint:
    """An agent ticks an item as received (with the evidence that brought it, if named) or waives
    it; the last awaited item completes the request."""
    if state not in (RECEIVED, WAIVED):
        raise MaterialsError("invalid_state", "state: received or waived", "state")
    policy = await timers.load_policy(store)
    await templates.refresh(store.r, store.keys)

    def change(complaint: Complaint, effects: TxEffects) -> None:
        item = next((m for m in complaint.materials if m.id == material_id), None)
        if item is None:
            raise NotFound("material_not_found", f"{complaint.case_number} asked for no material {material_id}.")
        known = {e.id for e in complaint.evidence}
        unknown = [e for e in evidence_ids if e not in known]
        if unknown:
            raise MaterialsError("evidence_not_found", f"evidence_ids: not on this case: {', '.join(unknown)}",
                                 "evidence_ids")
        if item.state == state and (not evidence_ids or list(evidence_ids) == item.evidence_ids):
            return  # said already (a retried request)
        was_awaited = item.state == AWAITED
        now = datetime.now(timezone.utc)
        item.state = state
        item.received_at = now if state == RECEIVED else None
        if evidence_ids:
            item.evidence_ids = list(evidence_ids)
        complaint.history.append(HistoryEvent(at=now, actor=actor, action=f"material_{state}", public=True, detail={
            "material_id": item.id, "kind": item.kind, "by": "hand", **({"evidence_ids": ",".join(evidence_ids)}
                                                                       if evidence_ids else {})}))
        _keep_missing(complaint)
        if was_awaited and not awaited(complaint) and complaint.status not in (ComplaintStatus.resolved,
                                                                              ComplaintStatus.closed):
            complete(store, complaint, effects, now, policy)

    return await store.update(complaint_id, change)


# -- reminders ----------------------------------------------------------------------------------


async def fire_reminder(store: ComplaintStore, complaint_id: str, phase: str, gen: int, now: datetime,
                        policy: DeadlinePolicy) -> str:
    """A reminder falls due: what is still missing, once per request and number, out of the
    quiet hours; the next one set."""
    outcome = {"result": "stale"}
    seq = int(phase) if phase.isdigit() else 0

    def change(complaint: Complaint, effects: TxEffects) -> None:
        rid = reply_id_for(complaint.id, f"materials_reminder_{seq}_{gen}")
        if (not is_open(complaint) or not awaited(complaint) or seq != _requests_made(complaint)
                or gen > policy.materials.max_reminders or any(r.id == rid for r in complaint.replies)):
            raise Conflict("stale_timer", complaint_id)
        release = policy.progress.release(now)
        if release > now:
            timers.plan(store, effects, f"{complaint.id}|{REMINDER}|{seq}|{gen}", release)
            outcome["result"] = "held"
            return
        lang = desk_language(complaint.language)
        notice(store, complaint, effects, REMINDER, kind=progress.KIND, reply_id=rid,
               items=describe(awaited(complaint), lang))
        complaint.last_update_at = now
        complaint.history.append(HistoryEvent(at=now, actor="system", action=REMINDER, public=True,
                                              detail={"reply_id": rid, "number": str(gen)}))
        remind(store, complaint, effects, policy, seq, gen + 1, now)
        progress.arm(store, complaint, effects, policy.progress)
        outcome["result"] = "sent"

    await store.update(complaint_id, change)
    return outcome["result"]


timers.register_step(REMINDER, fire_reminder)

__all__ = ["AWAITED", "RECEIVED", "STAGE", "WAIVED", "MaterialsError", "awaited", "case_awaiting", "complete",
           "mark", "remind", "request", "take_evidence"]
