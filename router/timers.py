"""Deadline timers: one Redis sorted set of timers scored by due time, a loop in every worker
that fires what is due, and a fire step that is safe to run twice.

- **On time however many are pending**: the loop asks for what is due (``ZRANGEBYSCORE`` with a
  limit: O(log n)) and sleeps until the next due time, at most ``TICK_MS``; no sweep over all
  cases.
- **Survives crashes**: timers live in Redis (AOF). A worker claims due timers with a script that
  moves them to an in-flight set with a lease; if it dies before it is done, housekeeping puts
  them back and another worker fires them.
- **Fires once**: the effect is applied under the complaint's optimistic lock and only to a
  running deadline of the same generation, so a second firing (after a lease ran out, or two
  workers racing) changes nothing. A breach that finds its warning not yet given gives it first,
  so a warning is never lost to a breach that fell due with it.
- **Not only deadlines**: the appeal process's timers share the set and the loop: a case's periodic
  progress update and a held state-change update (``router.cases.progress``), a materials reminder
  (``router.cases.materials``). Their owners register a fire step per kind (``register_step``) and
  move their own timer (``plan``); each step finds its earlier reply by a fixed id, so it too is
  safe to run twice.
- **A controllable clock** (tests, benchmarks): with ``GATEWAY_TEST_CLOCK=1`` the clock is real
  time plus an offset kept in Redis (``Keys.clock_offset``: ``<prefix>clock:offset``, ms), shared by
  every process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

from router import metrics
from router.store import ComplaintStore, Conflict, NotFound, TxEffects
from normalizer.ids import dt_to_ms
from normalizer.schema import Complaint, HistoryEvent
from router.jobs import event_job
from router.deadlines import (
    ESCALATION_QUEUE_DETAIL,
    FIRST_RESPONSE,
    RESOLUTION,
    DeadlinePolicy,
    decode_policy,
    parse_member,
    timer_members,
)

log = logging.getLogger("gateway.timers")

TICK_MS = 25  # the loop looks at least this often (lateness bound: one tick + the fire itself)
LEASE_MS = 30_000
BATCH = 200

_CLAIM_LUA = """
-- KEYS: timers, in flight; ARGV: now ms, lease ms, limit, tick ms
-- Claims up to limit timers due now (each into the in-flight set with its lease); answers the
-- due time of the next timer within a tick ('' = none), then the claimed members and due times.
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local soon = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + tonumber(ARGV[4]), 'WITHSCORES', 'LIMIT', 0, limit + 1)
local until_ms = now + tonumber(ARGV[2])
local out = {''}
for i = 1, #soon, 2 do
  if tonumber(soon[i + 1]) > now or #out > limit * 2 then
    out[1] = soon[i + 1]
    break
  end
  redis.call('ZREM', KEYS[1], soon[i])
  redis.call('ZADD', KEYS[2], until_ms, soon[i] .. '@' .. soon[i + 1])
  out[#out + 1] = soon[i]
  out[#out + 1] = soon[i + 1]
end
return out
"""

_REQUEUE_LUA = """
-- KEYS: timers, in flight; ARGV: now ms. Timers whose worker died go back (due at once).
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 1000)
for _, entry in ipairs(stale) do
  local at = string.find(entry, '@[^@]*$')
  redis.call('ZADD', KEYS[1], string.sub(entry, at + 1), string.sub(entry, 1, at - 1))
  redis.call('ZREM', KEYS[2], entry)
end
return #stale
"""


class Clock:
    """Wall-clock ms, plus a shared offset when the test clock is on."""

    def __init__(self, store: ComplaintStore, controllable: bool = False) -> None:
        self.store = store
        self.controllable = controllable
        self.offset_ms = 0

    async def refresh(self) -> None:
        if self.controllable:
            value = await self.store.r.get(self.store.keys.clock_offset)
            self.offset_ms = int(value) if value else 0

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, tz=timezone.utc)


async def load_policy(store: ComplaintStore) -> DeadlinePolicy:
    data = await store.r.get(store.keys.deadline_policy)
    if data is None:
        return DeadlinePolicy()
    try:
        return decode_policy(data)
    except Exception:  # noqa: BLE001 - a bad stored policy must not stop the clocks
        log.error("stored deadline policy does not decode; using the defaults")
        return DeadlinePolicy()


class PolicyCache:
    """The policy as supervisors last saved it, re-read at most once a second."""

    def __init__(self, store: ComplaintStore) -> None:
        self.store = store
        self.policy = DeadlinePolicy()
        self.read_at = 0.0

    async def get(self) -> DeadlinePolicy:
        if time.monotonic() - self.read_at > 1.0:
            self.policy = await load_policy(self.store)
            self.read_at = time.monotonic()
        return self.policy


#: The fire step of a timer that is not a deadline (a progress update, a materials reminder):
#: ``(store, complaint id, phase, generation, now, policy) -> outcome``. Each such step changes its
#: complaint under the optimistic lock, finds its own earlier effect by a fixed reply id (so a
#: second firing sends nothing), and may set its timer again (``plan``) to move it.
TimerStep = Callable[[ComplaintStore, str, str, int, datetime, DeadlinePolicy], Awaitable[str]]
_steps: dict[str, TimerStep] = {}


def register_step(kind: str, step: TimerStep) -> None:
    """Who fires timers of ``kind`` (``<complaint id>|<kind>|<phase>|<generation>``): the module
    that owns the kind registers itself when imported (``router.cases`` imports them all; this
    module sits below them and cannot import them)."""
    _steps[kind] = step


def plan(store: ComplaintStore, effects: TxEffects, member: str, at: datetime) -> None:
    """Set a timer of a registered kind to fire at ``at`` (moved if it is set already: one member,
    one due time), in the change's transaction."""
    due_ms = dt_to_ms(at)
    effects.ops.append(lambda pipe: pipe.zadd(store.keys.timers, {member: due_ms}))


def schedule(store: ComplaintStore, effects: TxEffects, complaint_id: str, deadlines: list[Any]) -> None:
    members: dict[str, int] = {}
    for deadline in deadlines:
        members.update(timer_members(complaint_id, deadline))
    if members:
        effects.ops.append(lambda pipe: pipe.zadd(store.keys.timers, members))


def unschedule(store: ComplaintStore, effects: TxEffects, complaint_id: str, deadline: Any) -> None:
    base = f"{complaint_id}|{deadline.kind}"
    members = [f"{base}|due|{deadline.gen}", f"{base}|warn|{deadline.gen}"]
    effects.ops.append(lambda pipe: pipe.zrem(store.keys.timers, *members))


def stop(store: ComplaintStore, complaint: Complaint, effects: TxEffects, kinds: set[str] | None, state: str,
         now: datetime) -> None:
    """Stop running (or paused) deadlines: ``met`` (answered in time or late), or ``cancelled``."""
    for deadline in complaint.deadlines:
        if deadline.state in ("running", "paused") and (kinds is None or deadline.kind in kinds):
            unschedule(store, effects, complaint.id, deadline)
            deadline.state = state
            deadline.met_at = now if state == "met" else None


def pause(store: ComplaintStore, complaint: Complaint, effects: TxEffects, kind: str, now: datetime) -> bool:
    for deadline in complaint.deadlines:
        if deadline.kind == kind and deadline.state == "running":
            unschedule(store, effects, complaint.id, deadline)
            deadline.state = "paused"
            deadline.remaining_ms = max(0, int((deadline.due - now).total_seconds() * 1000))
            deadline.gen += 1
            return True
    return False


def resume(store: ComplaintStore, complaint: Complaint, effects: TxEffects, now: datetime) -> bool:
    """The customer answered: paused clocks run again with the time they had left."""
    resumed = []
    for deadline in complaint.deadlines:
        if deadline.state == "paused":
            left = timedelta(milliseconds=deadline.remaining_ms or 0)
            if deadline.warn_at is not None and not deadline.warned:
                deadline.warn_at = now + left * 0.5
            deadline.due = now + left
            deadline.state, deadline.remaining_ms = "running", None
            deadline.gen += 1
            resumed.append(deadline)
            if deadline.kind == RESOLUTION:  # the case's own due time moves by the time it waited
                complaint.resolution_due = deadline.due
            elif deadline.kind == FIRST_RESPONSE:
                complaint.first_response_due = deadline.due
    schedule(store, effects, complaint.id, resumed)
    return bool(resumed)


async def fire(store: ComplaintStore, clock: "Clock", policies: "PolicyCache", member: str, due_ms: int) -> str:
    """Apply one due timer. Safe to run twice: only a running deadline of the same generation
    changes; a timer of a registered kind goes to its owner's step."""

    parsed = parse_member(member)
    if parsed is None:
        return "malformed"
    cid, kind, phase, gen = parsed
    policy = await policies.get()
    now = clock.now()
    step = _steps.get(kind)
    if step is not None:
        try:
            return await step(store, cid, phase, gen, now, policy)
        except (Conflict, NotFound):
            return "stale"
    outcome = {"result": "stale"}

    def change(complaint: Complaint, effects: TxEffects) -> None:
        deadline = next((d for d in complaint.deadlines if d.kind == kind), None)
        if deadline is None or deadline.gen != gen or deadline.state != "running":
            raise Conflict("stale_timer", member)
        detail = {"deadline": kind, "level": str(deadline.level), "due": deadline.due.isoformat(),
                  "late_ms": str(max(0, clock.now_ms() - due_ms))}
        if phase == "warn":
            if deadline.warned:
                raise Conflict("stale_timer", member)
            deadline.warned = True
            complaint.history.append(HistoryEvent(at=now, actor="system", action="sla_warning", detail=detail))
            effects.jobs.append(event_job(complaint, "sla_warning", "system", detail, at=now))
            schedule(store, effects, cid, [deadline])  # its due time's timer, in the same change
            outcome["result"] = "warned"
            return
        if deadline.warn_at is not None and not deadline.warned:
            # its warning came due first but has not fired (both fell due together: no worker ran,
            # or one died holding them): the warning goes first, once, whichever timer wins the race
            deadline.warned = True
            warn_ms = dt_to_ms(deadline.warn_at)
            warning = {**detail, "late_ms": str(max(0, clock.now_ms() - warn_ms))}
            complaint.history.append(HistoryEvent(at=now, actor="system", action="sla_warning", detail=warning))
            effects.jobs.append(event_job(complaint, "sla_warning", "system", warning, at=now))
        deadline.state, deadline.breached_at = "breached", now
        detail[ESCALATION_QUEUE_DETAIL] = policy.escalation_queue  # where the copy goes: it leaves from there
        effects.ops.append(lambda pipe: metrics.incr(pipe, store.keys, "gateway_deadline_breaches",
                                                     deadline=kind.split("_")[0] if kind.startswith("escalation")
                                                     else kind))
        complaint.priority = min(9, complaint.priority + policy.breach_priority_boost)
        complaint.history.append(HistoryEvent(at=now, actor="system", action="sla_breached", detail=detail))
        effects.jobs.append(event_job(complaint, "sla_breached", "system", detail, at=now))
        if "escalated" not in complaint.tags:
            complaint.tags.append("escalated")
        created_ms = dt_to_ms(complaint.created_at)
        effects.ops.append(lambda pipe: pipe.zadd(store.keys.queue(policy.escalation_queue),
                                                  {complaint.id: created_ms}))
        effects.ops.append(lambda pipe: pipe.sadd(store.keys.skills, policy.escalation_queue))
        nxt = policy.next_level(deadline, now)
        if nxt is not None and not any(d.kind == nxt.kind for d in complaint.deadlines):
            complaint.deadlines.append(nxt)
            schedule(store, effects, complaint.id, [nxt])
        outcome["result"] = "breached"

    try:
        await store.update(cid, change)
    except (Conflict, NotFound):
        return "stale"
    return outcome["result"]


class TimerLoop:
    def __init__(self, store: ComplaintStore, clock: "Clock", policies: "PolicyCache") -> None:
        self.store = store
        self.clock = clock
        self.policies = policies
        self.claim = self.store.r.register_script(_CLAIM_LUA)
        self.requeue = self.store.r.register_script(_REQUEUE_LUA)
        self.fired = 0
        self.next_due_ms: int | None = None
        #: Ticks completed. Once it has grown by two since a moment (and fewer than ``BATCH``
        #: timers were due), every timer due at that moment has been fired or found stale: tests
        #: wait for that before checking that something did not happen.
        self.ticks = 0

    async def tick(self) -> int:
        """Fire everything due now; answers how many."""
        await self.clock.refresh()
        k = self.store.keys
        now_ms = self.clock.now_ms()
        answer = await self.claim(keys=[k.timers, k.timers_inflight], args=[now_ms, LEASE_MS, BATCH, TICK_MS])
        #: when the next timer within a tick falls due (``None``: none does), as the claim saw it
        self.next_due_ms = int(float(answer[0])) if answer[0] else None
        pairs = [(answer[i].decode(), int(float(answer[i + 1]))) for i in range(1, len(answer), 2)]
        if pairs:
            await asyncio.gather(*(self._fire_one(m, d) for m, d in pairs))
        self.ticks += 1
        return len(pairs)

    async def _fire_one(self, member: str, due_ms: int) -> None:
        try:
            await fire(self.store, self.clock, self.policies, member, due_ms)
        except Exception as exc:  # noqa: BLE001 - the lease brings it back; log and go on
            log.error("timer %s failed: %s", member, type(exc).__name__)
            return
        await self.store.r.zrem(self.store.keys.timers_inflight, f"{member}@{due_ms}")
        self.fired += 1

    async def requeue_stale(self) -> int:
        k = self.store.keys
        return int(await self.requeue(keys=[k.timers, k.timers_inflight], args=[self.clock.now_ms()]))

    async def run(self) -> None:
        """Until cancelled: fire what is due, then sleep until the next due time (≤ one tick)."""
        last_requeue = 0.0
        while True:
            try:
                fired = await self.tick()
                if time.monotonic() - last_requeue > 5:
                    await self.requeue_stale()
                    last_requeue = time.monotonic()
                if fired >= BATCH:
                    continue
                # the claim said when the next timer within a tick falls due: no second look
                nxt = self.next_due_ms
                wait_ms = TICK_MS if nxt is None else max(1, min(TICK_MS, nxt - self.clock.now_ms()))
                await asyncio.sleep(wait_ms / 1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: try again shortly
                log.warning("timer loop: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
