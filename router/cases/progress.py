"""Progress without asking (处理过程中，定期向申诉人反馈进度): the customer hears how the case stands on
their own channel when it changes state, and when nothing customer-visible was sent for a while.

``announce`` is the one place a state change tells the customer; the policy is
``DeadlinePolicy.progress`` (``router.deadlines.ProgressPolicy``), which supervisors change with
``PUT /v1/policy/deadlines``. Every update is a reply of kind ``progress`` (sent through the normal
reply path, so each channel's own rules hold: WhatsApp's template outside its 24-hour window, no
SMS to a number that sent STOP) and a public ``progress_update`` entry in the history.

The rules that keep it from being noise:

- **A minimum gap** (``min_gap_seconds``, 10 minutes by default) for the update that carries no
  news of its own, ``taken``: within the gap of the last customer-visible message (an agent
  claims a case a minute after its acknowledgement) it is *held* until the gap has passed, and
  dropped if the customer heard from us meanwhile (the agent answered at once: one message, not
  two). A change that is news (awaiting materials, awaiting approval, decided) goes at once; the
  periodic update counts its interval from the last message, so it never follows one closely.
- **Quiet hours** (the desk's night, its time zone): an automatic update that falls in them waits
  until they end. An agent's own answer is never held.
- **The periodic update** goes out when nothing customer-visible was sent for the case's interval
  (per category, ``formal``, ``default``; 0 = none) while the case is open, worded as ``open``
  plus the stage it waits in (materials, approval). One timer per case
  (``<complaint id>|progress|due|1``) checks ``last_update_at`` when it fires: it sends, or sets
  itself again from the last update. ``next_update_at`` on the case says when it is due.
- Held state changes have timers of their own (``<complaint id>|progress|<change>|<held at, ms>``).

Every step finds its own earlier reply by a fixed id (``replies.reply_id_for``): a timer that
fires twice sends once.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from normalizer.ids import dt_to_ms
from normalizer.language import desk_language
from normalizer.schema import Complaint, HistoryEvent, Reply
from router import timers
from router.cases.catalogue import describe
from router.cases.replies import notice, reply_id_for
from router.deadlines import DeadlinePolicy, ProgressPolicy
from router.store import ComplaintStore, Conflict, TxEffects, is_open

#: The state changes a customer is told of, and how each is worded (state, what happens next).
CHANGES: dict[str, dict[str, tuple[str, str]]] = {
    "taken": {"zh": ("客服专员已开始处理您的案件", "我们会核实情况并尽快答复您。"),
              "en": ("an agent is now handling your case", "we will check the facts and answer you soon.")},
    "awaiting_materials": {"zh": ("等待您提供材料", "收到材料后我们会立即继续处理。"),
                           "en": ("waiting for materials from you", "we carry on as soon as they arrive.")},
    "awaiting_approval": {"zh": ("处理方案已提交审批", "审批通过后我们会通知您处理结果。"),
                          "en": ("the proposed solution is awaiting approval",
                                 "we will tell you the outcome once it is approved.")},
    "decided": {"zh": ("已作出处理决定", "请留意处理结果通知。"),
                "en": ("a decision has been made", "you will receive the outcome shortly.")},
    "open": {"zh": ("仍在处理中", "我们会继续跟进并尽快答复您。"),
             "en": ("still being handled", "we are following it up and will answer you as soon as we can.")},
}
KIND = "progress"  # the timers' kind and the replies' kind
#: Changes with no news of their own: held by the minimum gap, dropped if anything reached the
#: customer meanwhile.
HELD_BY_GAP = frozenset({"taken"})
PERIODIC = "due"  # the periodic update's timer phase


def periodic_member(complaint_id: str) -> str:
    """The one timer of a case's periodic update (setting it again moves it)."""
    return f"{complaint_id}|{KIND}|{PERIODIC}|1"


def next_due(complaint: Complaint, policy: ProgressPolicy, since: datetime | None = None) -> datetime | None:
    """When the periodic update falls due (out of the quiet hours), counted from the last
    customer-visible message (``since``: the case's start, before anything was sent); ``None``: no
    periodic update for this case (closed, switched off, interval 0)."""
    if not policy.enabled or not is_open(complaint):
        return None
    interval = policy.interval_for(complaint.category, complaint.formal_complaint)
    if interval <= 0:
        return None
    base = complaint.last_update_at or since or complaint.created_at
    return policy.release(base + timedelta(seconds=interval))


def arm(store: ComplaintStore, complaint: Complaint, effects: TxEffects, policy: ProgressPolicy) -> None:
    """The periodic update counted again from the last update (after anything was sent)."""
    complaint.next_update_at = next_due(complaint, policy)
    if complaint.next_update_at is not None:
        timers.plan(store, effects, periodic_member(complaint.id), complaint.next_update_at)


def wording(complaint: Complaint, change: str) -> tuple[str, str]:
    """(state, what happens next) in the customer's language; ``open`` says the stage it waits in."""
    lang = desk_language(complaint.language)
    state, next_step = CHANGES[change][lang]
    if change == "open" and complaint.stage in CHANGES:
        stage_state, next_step = CHANGES[complaint.stage][lang]
        state = f"{state}，{stage_state}" if lang == "zh" else f"{state}, {stage_state}"
        missing = [m for m in complaint.materials if m.state == "awaited"]
        if complaint.stage == "awaiting_materials" and missing:
            state += f"：{describe(missing, lang)}" if lang == "zh" else f": {describe(missing, lang)}"
    return state, next_step


def send(store: ComplaintStore, complaint: Complaint, effects: TxEffects, change: str, now: datetime,
         policy: ProgressPolicy, reply_id: str | None = None) -> Reply:
    """The update itself: a ``progress`` reply, its public history entry, the periodic update
    counted again from now."""
    state, next_step = wording(complaint, change)
    reply = notice(store, complaint, effects, "progress_update", kind=KIND, reply_id=reply_id, state=state,
                   next=next_step)
    complaint.last_update_at = now  # on the deadline clock, as the timers count
    complaint.history.append(HistoryEvent(at=now, actor="system", action="progress_update", public=True,
                                          detail={"change": change, "reply_id": reply.id}))
    arm(store, complaint, effects, policy)
    return reply


def announce(store: ComplaintStore, complaint: Complaint, effects: TxEffects, change: str, now: datetime,
             policy: ProgressPolicy) -> Reply | None:
    """Tell the customer of a state change (one of ``CHANGES``), if the policy says so; the
    update is a reply of kind ``progress`` and an entry in the case history. In the quiet hours,
    or (``taken``) within the minimum gap of the last customer-visible message, it is held
    (``None``) until it may go; a held ``taken`` is dropped then if the customer heard from us
    meanwhile."""
    if not policy.enabled or change not in policy.on_changes or change not in CHANGES:
        return None
    gap_ends = (complaint.last_update_at + timedelta(seconds=policy.min_gap_seconds)
                if complaint.last_update_at is not None and change in HELD_BY_GAP else now)
    at = policy.release(max(now, gap_ends))
    if at <= now:
        return send(store, complaint, effects, change, now, policy)
    timers.plan(store, effects, f"{complaint.id}|{KIND}|{change}|{dt_to_ms(now)}", at)
    complaint.history.append(HistoryEvent(at=now, actor="system", action="progress_held", detail={
        "change": change, "until": at.isoformat(), "why": "min_gap" if at == gap_ends else "quiet_hours"}))
    return None


async def fire(store: ComplaintStore, complaint_id: str, phase: str, gen: int, now: datetime,
               policy: DeadlinePolicy) -> str:
    """A progress timer fires: the periodic update (phase ``due``) or a held state change
    (phase: the change; generation: when it was held, ms)."""
    progress = policy.progress
    outcome = {"result": "stale"}

    def change(complaint: Complaint, effects: TxEffects) -> None:
        if not is_open(complaint) or not progress.enabled:
            raise Conflict("stale_timer", complaint_id)
        release = progress.release(now)
        if phase == PERIODIC:
            due = next_due(complaint, progress)
            if due is None:
                complaint.next_update_at = None
                outcome["result"] = "off"
            elif due > now or release > now:  # heard from us since, or night now: set again
                complaint.next_update_at = max(due, release)
                timers.plan(store, effects, periodic_member(complaint.id), complaint.next_update_at)
                outcome["result"] = "rescheduled"
            else:
                rid = reply_id_for(complaint.id, f"progress_{dt_to_ms(due)}")
                if any(r.id == rid for r in complaint.replies):
                    raise Conflict("stale_timer", complaint_id)
                send(store, complaint, effects, "open", now, progress, reply_id=rid)
                outcome["result"] = "sent"
            return
        rid = reply_id_for(complaint.id, f"progress_{phase}_{gen}")
        if phase not in CHANGES or any(r.id == rid for r in complaint.replies):
            raise Conflict("stale_timer", complaint_id)
        held_at = datetime.fromtimestamp(gen / 1000, tz=timezone.utc)
        if complaint.last_update_at is not None and complaint.last_update_at > held_at:
            complaint.history.append(HistoryEvent(at=now, actor="system", action="progress_dropped", detail={
                "change": phase, "why": "the customer heard from us since"}))
            outcome["result"] = "dropped"
        elif release > now:
            timers.plan(store, effects, f"{complaint.id}|{KIND}|{phase}|{gen}", release)
            outcome["result"] = "held"
        else:
            send(store, complaint, effects, phase, now, progress, reply_id=rid)
            outcome["result"] = "sent"

    await store.update(complaint_id, change)
    return outcome["result"]


timers.register_step(KIND, fire)

__all__ = ["CHANGES", "announce", "arm", "next_due", "periodic_member", "send", "wording"]
