"""Deadline timers: one Redis sorted set of timers scored by due time, a loop in every worker
that fires what is due, and a fire step that is safe to run twice.

- **On time however many are pending**: the loop asks for what is due (``ZRANGEBYSCORE`` with a
  limit: O(log n)) and sleeps until the next due time; no sweep over all cases.
- **Quiet when nothing is due**: with nothing due within ``IDLE_LOOK_MS`` the loop looks again
  after that long, not every tick: a timer another process adds meanwhile is seen within it, and
  deadline timers are written seconds ahead (a first response warns at 48 s by default). Idle, a
  worker's loop sends 4 claims a second instead of ~38 (bench/timers.py, idle phase).
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
- **Events in batches**: a warning or breach is written, in the change's own transaction, to the
  event outbox (``Keys.escalations``, a list: one ``RPUSH``) instead of an arq job per event; one
  ``dispatch_events`` job (``router.delivery``) sends what the outbox holds to the listeners, in
  order, and drops it once they took it. The claim makes sure such a job exists whenever the
  outbox holds events (looked at after a tick that raised some, and every ``EVENTS_LOOK_S``: a
  worker that died between its fires and that look leaves nothing behind).
- **A controllable clock** (tests, benchmarks): with ``GATEWAY_TEST_CLOCK=1`` the clock is real
  time plus an offset kept in Redis (``Keys.clock_offset``: ``<prefix>clock:offset``, ms), shared by
  every process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, NamedTuple

import msgspec

from router import metrics
from router.cached_read import CachedRead
from router.store import JOB_EXPIRES_MS, Change, ComplaintStore, Conflict, Keys, NotFound, PlannedJob, TxEffects, job_bytes
from normalizer.ids import dt_to_ms
from normalizer.schema import Complaint, HistoryEvent
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

#: After a tick that fired something, the loop looks again this soon (what a firing set may be
#: due already: a late warning's due time); also the lateness bound while timers keep falling due.
TICK_MS = 25
#: With nothing due sooner, the loop looks again after this long: the lateness bound of a timer
#: another process adds due sooner than that (deadline timers are written seconds ahead). 25 ms
#: before: ~77 Redis commands a second from an idle worker's loop (bench/cost.py idle), now ~8.
IDLE_LOOK_MS = 250
LEASE_MS = 30_000
BATCH = 200
#: Deadline timers of a claim whose complaints are changed in one transaction (``fire_many``):
#: one WATCH, one read and one MULTI for them all; any of them changed meanwhile by another
#: client sends the group one by one instead, so a group is kept small.
FIRE_TOGETHER = 50
#: The job that sends the event outbox to listeners (``router.delivery.dispatch_events``), its id
#: (one for the desk: one sender at a time keeps the events in order), and how long after the
#: first event it waits for more to join the batch.
DISPATCH_EVENTS = "dispatch_events"
DISPATCH_EVENTS_ID = "events"
EVENTS_GATHER_MS = 250
#: The outbox is looked at at least this often, events raised here or not.
EVENTS_LOOK_S = 5.0


class QueuedEvent(msgspec.Struct, array_like=True, frozen=True):
    """A complaint event waiting in the outbox. ``id`` (complaint, kind, its place in the
    complaint's history) is unique and the same however often the change is retried: listeners
    de-duplicate by it."""

    id: str
    complaint_id: str
    kind: str
    at_ms: int
    actor: str
    detail: dict[str, str]


_event_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(QueuedEvent)


def decode_event(data: bytes) -> QueuedEvent:
    return _event_decoder.decode(data)


def raise_event(store: ComplaintStore, effects: TxEffects, complaint: Complaint, kind: str, detail: dict[str, str],
                at: datetime) -> None:
    """Put an event in the outbox in the change's transaction (after its history entry)."""
    entry = _event_encoder.encode(QueuedEvent(id=f"{complaint.id}:{kind}:{len(complaint.history)}",
                                              complaint_id=complaint.id, kind=kind, at_ms=dt_to_ms(at),
                                              actor="system", detail=dict(detail)))
    effects.ops.append(lambda pipe: pipe.rpush(store.keys.escalations, entry))


_CLAIM_LUA = """
-- KEYS: 1 timers, 2 in flight, 3 event outbox, 4 and 5 the events job's key and in-progress key, 6 arq queue
-- ARGV: 1 now ms, 2 lease ms, 3 limit, 4 look-ahead ms, 5 the events job's id ('' = do not look at
--       the outbox), 6 its bytes, 7 its expiry ms, 8 when it runs (ms, wall clock: arq's, not the test clock)
-- Claims up to limit timers due now (each into the in-flight set with its lease), and, asked to,
-- makes sure that a job will send what the outbox holds. Answers the due time of the next timer
-- within the look-ahead ('' = none); the outbox: '' (not looked at), 'empty', 'queued' (a job
-- will take it) or 'running' (a job is sending: it may have looked for the last time, look again);
-- then the claimed members and their due times.
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
local soon = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now + tonumber(ARGV[4]), 'WITHSCORES', 'LIMIT', 0, limit + 1)
local until_ms = now + tonumber(ARGV[2])
local out = {'', ''}
local taken, leased = {}, {}
for i = 1, #soon, 2 do
  if tonumber(soon[i + 1]) > now or #taken >= limit then
    out[1] = soon[i + 1]
    break
  end
  taken[#taken + 1] = soon[i]
  leased[#leased + 1] = until_ms
  leased[#leased + 1] = soon[i] .. '@' .. soon[i + 1]
  out[#out + 1] = soon[i]
  out[#out + 1] = soon[i + 1]
end
if #taken > 0 then  -- one ZREM and one ZADD for the whole batch
  redis.call('ZREM', KEYS[1], unpack(taken))
  redis.call('ZADD', KEYS[2], unpack(leased))
end
if ARGV[5] ~= '' then
  if redis.call('LLEN', KEYS[3]) == 0 then
    out[2] = 'empty'
  elseif redis.call('EXISTS', KEYS[5]) == 1 then
    out[2] = 'running'
  else
    if redis.call('EXISTS', KEYS[4]) == 0 then
      redis.call('PSETEX', KEYS[4], ARGV[7], ARGV[6])
      redis.call('ZADD', KEYS[6], ARGV[8], ARGV[5])
    end
    out[2] = 'queued'
  end
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
    """The policy as supervisors last saved it, re-read at most once a second (one read for the
    callers that find it due at the same time)."""

    def __init__(self, store: ComplaintStore) -> None:
        self.store = store
        self._reads: CachedRead[DeadlinePolicy] = CachedRead(lambda: load_policy(store), 1.0)

    async def get(self) -> DeadlinePolicy:
        return await self._reads.get()


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


class _Firing(NamedTuple):
    """A due deadline timer's change of its complaint, and what it did once applied."""

    cid: str
    change: Change
    outcome: dict[str, str]


async def fire(store: ComplaintStore, clock: "Clock", policies: "PolicyCache", member: str, due_ms: int, *,
               listeners: bool = True) -> str:
    """Apply one due timer. Safe to run twice: only a running deadline of the same generation
    changes; a timer of a registered kind goes to its owner's step. Its events (``sla_warning``,
    ``sla_breached``) go to the outbox unless ``listeners`` is false (no plugin listens)."""
    firing = await _firing(store, clock, policies, member, due_ms, listeners=listeners)
    if isinstance(firing, str):
        return firing
    try:
        await store.update(firing.cid, firing.change)
    except (Conflict, NotFound):
        return "stale"
    return firing.outcome["result"]


async def fire_many(store: ComplaintStore, clock: "Clock", policies: "PolicyCache", due: list[tuple[str, int]], *,
                    listeners: bool = True) -> list[str]:
    """``fire`` for each of ``due`` (member, due ms), the deadlines' changes written together
    (``Complaints.update_many``, ``FIRE_TOGETHER`` at a time: one transaction instead of one per
    complaint, when an outage's complaints all warn, then breach). Answers each one's outcome, in
    order; "failed" for one that raised (logged; its lease brings it back)."""

    async def planned(member: str, due_ms: int) -> str | _Firing:
        try:
            return await _firing(store, clock, policies, member, due_ms, listeners=listeners)
        except Exception as exc:  # noqa: BLE001 - the lease brings it back; log and go on
            log.error("timer %s failed: %s", member, type(exc).__name__)
            return "failed"

    plans = await asyncio.gather(*(planned(member, due_ms) for member, due_ms in due))
    outcomes = [p if isinstance(p, str) else "" for p in plans]
    firings = [(i, p) for i, p in enumerate(plans) if not isinstance(p, str)]
    groups = [firings[n:n + FIRE_TOGETHER] for n in range(0, len(firings), FIRE_TOGETHER)]
    answers = await asyncio.gather(*(store.update_many([(f.cid, f.change) for _, f in group]) for group in groups))
    for group, results in zip(groups, answers):
        for (i, firing), result in zip(group, results):
            if isinstance(result, (Conflict, NotFound)):
                outcomes[i] = "stale"
            elif isinstance(result, Exception):
                log.error("timer %s failed: %s", due[i][0], type(result).__name__)
                outcomes[i] = "failed"
            else:
                outcomes[i] = firing.outcome["result"]
    return outcomes


async def _firing(store: ComplaintStore, clock: "Clock", policies: "PolicyCache", member: str, due_ms: int, *,
                  listeners: bool) -> str | _Firing:
    """A due timer's change of its complaint (a deadline's), or its outcome when there is none to
    make (malformed; a registered kind's step, run here)."""
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
            if listeners:
                raise_event(store, effects, complaint, "sla_warning", detail, now)
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
            if listeners:
                raise_event(store, effects, complaint, "sla_warning", warning, now)
        deadline.state, deadline.breached_at = "breached", now
        detail[ESCALATION_QUEUE_DETAIL] = policy.escalation_queue  # where the copy goes: it leaves from there
        effects.ops.append(lambda pipe: metrics.incr(pipe, store.keys, "gateway_deadline_breaches",
                                                     deadline=kind.split("_")[0] if kind.startswith("escalation")
                                                     else kind))
        complaint.priority = min(9, complaint.priority + policy.breach_priority_boost)
        complaint.history.append(HistoryEvent(at=now, actor="system", action="sla_breached", detail=detail))
        if listeners:
            raise_event(store, effects, complaint, "sla_breached", detail, now)
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

    return _Firing(cid, change, outcome)


class TimerLoop:
    def __init__(self, store: ComplaintStore, clock: "Clock", policies: "PolicyCache", *,
                 listeners: bool = True) -> None:
        self.store = store
        self.clock = clock
        self.policies = policies
        #: Whether any plugin listens to complaint events (none: no events are written).
        self.listeners = listeners
        self.claim = self.store.r.register_script(_CLAIM_LUA)
        self.requeue = self.store.r.register_script(_REQUEUE_LUA)
        self.fired = 0
        self.next_due_ms: int | None = None
        #: The outbox is to be looked at (events were raised, or it is time to) ...
        self.events_waiting = True
        #: ... once the wall clock (s) is past this: a job found queued takes what is raised meanwhile.
        self.look_after = 0.0
        #: Ticks completed. Once it has grown by two since a moment (and fewer than ``BATCH``
        #: timers were due), every timer due at that moment has been fired or found stale: tests
        #: wait for that before checking that something did not happen.
        self.ticks = 0

    def _events_job(self) -> list[Any]:
        """The claim's arguments that make sure the outbox has a job (none: it is not looked at)."""
        wall = time.time()
        if not self.events_waiting or wall < self.look_after:
            return ["", "", 0, 0]
        job_id = self.store.keys.job_id(DISPATCH_EVENTS_ID)
        wall_ms = int(wall * 1000)
        return [job_id, job_bytes(PlannedJob(DISPATCH_EVENTS, DISPATCH_EVENTS_ID), wall_ms), JOB_EXPIRES_MS,
                wall_ms + EVENTS_GATHER_MS]

    async def tick(self) -> int:
        """Fire everything due now; answers how many."""
        await self.clock.refresh()
        k = self.store.keys
        now_ms = self.clock.now_ms()
        job_id = k.job_id(DISPATCH_EVENTS_ID)
        answer = await self.claim(
            keys=[k.timers, k.timers_inflight, k.escalations, Keys.arq_job(job_id), Keys.arq_in_progress(job_id),
                  k.arq_queue],
            args=[now_ms, LEASE_MS, BATCH, IDLE_LOOK_MS, *self._events_job()])
        #: when the next timer within the look-ahead falls due (``None``: none does), as the claim saw it
        self.next_due_ms = int(float(answer[0])) if answer[0] else None
        if answer[1] == b"empty":
            self.events_waiting = False
        elif answer[1] == b"queued":  # it takes what fires raise before it starts: no look until then
            self.events_waiting = False
            self.look_after = time.time() + EVENTS_GATHER_MS / 1000
        elif answer[1] == b"running":  # it may have looked for the last time: look again shortly
            self.look_after = time.time() + EVENTS_GATHER_MS / 1000
        pairs = [(answer[i].decode(), int(float(answer[i + 1]))) for i in range(2, len(answer), 2)]
        if pairs:
            outcomes = await fire_many(self.store, self.clock, self.policies, pairs, listeners=self.listeners)
            done = [f"{m}@{d}" for (m, d), outcome in zip(pairs, outcomes) if outcome != "failed"]
            if done:  # one ZREM for the batch; a crash before it: the lease brings them back, stale
                await self.store.r.zrem(k.timers_inflight, *done)
                self.fired += len(done)
            if self.listeners and any(o in ("warned", "breached") for o in outcomes):
                self.events_waiting = True
        self.ticks += 1
        return len(pairs)

    async def requeue_stale(self) -> int:
        k = self.store.keys
        return int(await self.requeue(keys=[k.timers, k.timers_inflight], args=[self.clock.now_ms()]))

    async def run(self) -> None:
        """Until cancelled: fire what is due, then sleep until the next due time: at most a tick
        after firing something, at most ``IDLE_LOOK_MS`` otherwise."""
        last_requeue = 0.0
        while True:
            try:
                fired = await self.tick()
                if time.monotonic() - last_requeue > EVENTS_LOOK_S:
                    await self.requeue_stale()
                    last_requeue = time.monotonic()
                    self.events_waiting = self.listeners  # the next claim looks at the outbox
                if fired >= BATCH:
                    continue
                # the claim said when the next timer within its look-ahead falls due: no second look
                bound = TICK_MS if fired else IDLE_LOOK_MS
                nxt = self.next_due_ms
                wait_ms = bound if nxt is None else max(1, min(bound, nxt - self.clock.now_ms()))
                await asyncio.sleep(wait_ms / 1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: try again shortly
                log.warning("timer loop: %s", type(exc).__name__)
                await asyncio.sleep(0.5)
