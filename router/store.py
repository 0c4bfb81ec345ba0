"""Everything the gateway keeps in Redis, and the only code that knows the key layout.

Durability rules:
- intake is one Lua script: idempotency check, message record, pending set and the arq job
  are written together or not at all, so a 202 means the message *and* its job are stored;
- every later change is a WATCH/MULTI transaction that re-reads what it changes, so a worker
  retry or two agents at once cannot double-apply it;
- jobs that must follow a change (send a reply, tell listeners) are written in the same
  transaction as the change.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterable, Sequence

import msgspec
from arq.constants import default_queue_name, in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis
from redis.exceptions import WatchError

from router.redis_pool import hash_tag
from normalizer.ids import dt_to_ms, ms_to_dt, new_id, now_ms
from plugins.contract import IntakeLimits, IntakeOutcome
from normalizer.schema import (
    OPEN_STATUSES,
    Complaint,
    ComplaintStatus,
    Contact,
    InboundMessage,
    MessageStatus,
)
from router.repeats import fingerprint_of

JOB_EXPIRES_MS = 7 * 86_400_000  # a job waits up to a week for a worker before Redis drops it
IDEMPOTENCY_TTL_S = 7 * 86_400  # providers (WhatsApp) retry for days
OUTBOUND_TTL_S = 30 * 86_400  # how long a provider's status callback can still find its reply
DELIVERY_RANK = {"sent": 1, "delivered": 2, "read": 3, "failed": 4}
RAW_TTL_S = 30 * 86_400
DEADLINE_NEAR_MS = 30_000  # a first response due within this counts as "near" in queue views
OUTBOX_GRACE_MS = 30_000  # a reply not handed over by then is sent again by housekeeping

_json_encoder = msgspec.json.Encoder()
_complaint_decoder = msgspec.json.Decoder(Complaint)
_message_encoder = msgspec.msgpack.Encoder()
_message_decoder = msgspec.msgpack.Decoder(InboundMessage)


def queue_score(priority: int, created_ms: int) -> float:
    """Skill queues pop the lowest score: higher priority first, then oldest first."""
    priority = max(0, min(9, priority))
    return float((9 - priority) * 10**13 + created_ms)


class Conflict(Exception):
    """A change that cannot apply to the record as it is now (HTTP 409)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class NotFound(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class PlannedJob:
    """An arq job to write in the same transaction as a change."""

    function: str
    job_id: str
    args: tuple[Any, ...] = ()
    defer_ms: int = 0


@dataclass
class TxEffects:
    """Extra writes a complaint change asks for (queued into the same MULTI)."""

    jobs: list[PlannedJob] = field(default_factory=list)
    ops: list[Callable[[Any], None]] = field(default_factory=list)


_INTAKE_LUA = """
-- KEYS: msg, idem (none = no scope), pending, job, arq queue, wake, raw (none = no raw), metrics,
--       sender's rate counter (none = no limit), channel's rate counter (none = no limit),
--       11 none: the key that stands for "no key" (in the desk's cluster slot, unlike '')
-- ARGV: message_id, data, received_ms, body_hash ('' = don't compare), job bytes,
--       job expiry ms, idem ttl s, raw bytes, wake ('1'/'0'), channel, job id, raw ttl s,
--       sender contact key, vouched-for contact keys (newline-separated), max pending (0 = none),
--       sender's limit per minute, channel's limit per second
if KEYS[2] ~= KEYS[11] then
  local existing = redis.call('GET', KEYS[2])
  if existing then
    local sep = string.find(existing, '|', 1, true)
    local mid = string.sub(existing, 1, sep - 1)
    if ARGV[4] == '' or string.sub(existing, sep + 1) == ARGV[4] then
      redis.call('HINCRBY', KEYS[8], 'gateway_messages_in|channel=' .. ARGV[10] .. ',outcome=duplicate', 1)
      return {'duplicate', mid}
    end
    redis.call('HINCRBY', KEYS[8], 'gateway_messages_in|channel=' .. ARGV[10] .. ',outcome=conflict', 1)
    return {'conflict', mid}
  end
end
-- backpressure: the workers are this far behind; refuse (the caller answers 503 + Retry-After)
if tonumber(ARGV[15]) > 0 and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[15]) then
  redis.call('HINCRBY', KEYS[8], 'gateway_messages_in|channel=' .. ARGV[10] .. ',outcome=backpressure', 1)
  return {'backpressure', ''}
end
-- one sender, one channel: each has a budget, so a flood cannot starve everyone else
local function over_budget(counter, window_s, limit)
  if counter == KEYS[11] then return false end
  local n = redis.call('INCR', counter)
  if n == 1 then redis.call('EXPIRE', counter, window_s) end
  return n > tonumber(limit)
end
for _, budget in ipairs({{KEYS[9], 60, ARGV[16], 'contact'}, {KEYS[10], 2, ARGV[17], 'channel'}}) do
  if over_budget(budget[1], budget[2], budget[3]) then
    redis.call('HINCRBY', KEYS[8], 'gateway_messages_in|channel=' .. ARGV[10] .. ',outcome=rate_limited', 1)
    return {'rate_limited', budget[4]}
  end
end
if KEYS[2] ~= KEYS[11] then
  redis.call('SET', KEYS[2], ARGV[1] .. '|' .. ARGV[4], 'EX', ARGV[7])
end
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'status', 'received', 'received_ms', ARGV[3], 'channel', ARGV[10],
           'contact', ARGV[13], 'vouched', ARGV[14])
if KEYS[7] ~= KEYS[11] then
  redis.call('SET', KEYS[7], ARGV[8], 'EX', ARGV[12])
end
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('PSETEX', KEYS[4], ARGV[6], ARGV[5])
redis.call('ZADD', KEYS[5], ARGV[3], ARGV[11])
if ARGV[9] == '1' then
  redis.call('LPUSH', KEYS[6], '1')
  redis.call('LTRIM', KEYS[6], 0, 7)
end
redis.call('HINCRBY', KEYS[8], 'gateway_messages_in|channel=' .. ARGV[10] .. ',outcome=accepted', 1)
return {'accepted', ARGV[1]}
"""

_PREPARE_LUA = """
-- Load a message for processing, resolve its customer, and read that customer's open-case
-- fingerprints (the repeat-report candidates), in one round trip.
-- KEYS: msg; ARGV: new customer id (used when nobody knows the sender), key prefix, now ms
-- The customer is the sender contact's; else that of a contact the channel vouches for (the
-- app says "this user's phone is P" and P wrote by SMS before); else a new one. Vouched-for
-- contacts nobody owns yet join the customer; each link is written to the customer's history.
local f = redis.call('HMGET', KEYS[1], 'status', 'data', 'channel', 'contact', 'vouched', 'complaint_id', 'nodedup')
if not f[1] then return {'missing'} end
if f[1] == 'processed' or f[1] == 'quarantined' then return {f[1], f[6] or ''} end
local cust = ''
local fps = {}
if f[4] and f[4] ~= '' then
  local p = ARGV[2]
  local vouched = {}
  if f[5] and f[5] ~= '' then
    for label in string.gmatch(f[5], '[^\\n]+') do table.insert(vouched, label) end
  end
  local contact_key = p .. 'contact:' .. f[4]
  cust = redis.call('GET', contact_key)
  local how = 'channel'
  if not cust then
    for _, label in ipairs(vouched) do
      cust = redis.call('GET', p .. 'contact:' .. label)
      if cust then how = 'vouched:' .. label break end
    end
  end
  if not cust then
    cust = ARGV[1]
    how = 'new'
  end
  local history = p .. 'customer:' .. cust .. ':history'
  local contacts = p .. 'customer:' .. cust .. ':contacts'
  if redis.call('SET', contact_key, cust, 'NX') then
    redis.call('SADD', contacts, f[4])
    redis.call('RPUSH', history, cjson.encode({at_ms = tonumber(ARGV[3]), action = 'linked', contact = f[4],
                                               by = 'system', reason = how}))
  end
  for _, label in ipairs(vouched) do
    local key = p .. 'contact:' .. label
    if redis.call('SET', key, cust, 'NX') then
      redis.call('SADD', contacts, label)
      redis.call('RPUSH', history, cjson.encode({at_ms = tonumber(ARGV[3]), action = 'linked', contact = label,
                                                 by = 'system', reason = 'vouched by ' .. f[3]}))
    end
  end
  fps = redis.call('HGETALL', p .. 'customer:' .. cust .. ':open')
end
return {f[1], f[2] or '', f[3] or '', cust, f[7] or '', fps}
"""

_STATUS_LUA = """
-- KEYS: delivery hash, outbox; ARGV: reply id, new state json, new rank, outbox member
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local ok, old = pcall(cjson.decode, cur)
  if ok and type(old) == 'table' then
    local ranks = {queued = 0, sent = 1, delivered = 2, read = 3, failed = 4}
    local old_rank = ranks[old['delivery']] or 0
    if old_rank >= tonumber(ARGV[3]) then return 0 end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('ZREM', KEYS[2], ARGV[4]) end
return 1
"""

_CASE_LUA = """
-- The case number of a message's complaint, allocated once: a retried job gets the same one.
-- KEYS: msg, day sequence; ARGV: yyyymmdd
local s = redis.call('HMGET', KEYS[1], 'status', 'complaint_id', 'case_number')
if s[1] == 'processed' then return {'processed', s[2] or '', s[3] or ''} end
if s[3] then return {'ok', '', s[3]} end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], 259200)
local case = 'C-' .. ARGV[1] .. '-' .. string.format('%06d', n)
redis.call('HSET', KEYS[1], 'case_number', case)
return {'ok', '', case}
"""

_COMMIT_LUA = """
-- Open a complaint for a message, once. The case number is allocated here, so a retried job
-- neither opens a second complaint nor burns a second number.
-- KEYS: 1 msg, 2 complaint, 3 pending, 4 case sequence, 5 queue, 6 queue age, 7 first-response due,
--       8 idx all, 9 idx status, 10 idx category, 11 idx customer, 12 idx channel, 13 idx skill,
--       14 skills, 15 outbox, 16 arq queue, 17 wake, 18 the customer's open-case fingerprints, 19 timers
-- ARGV: 1 complaint id, 2 complaint record, 3 case number, 4 yyyymmdd, 5 created ms, 6 queue score,
--       7 first-response due ms ('' = none), 8 message id, 9 outbox member ('' = none), 10 outbox due ms,
--       11 case key prefix, 12 skill ('' = none), 13 wake ('1'/'0'), 14 job count, then per job:
--       job key, job id, job bytes, score, expiry ms; then the fingerprint ('' = none), the timer
--       count and per timer: member, due ms
local state = redis.call('HMGET', KEYS[1], 'status', 'complaint_id', 'case_number')
if state[1] == 'processed' then
  return {'already', state[2], state[3] or ''}
end
local case = ARGV[3]
local body = ARGV[2]
local cid = ARGV[1]
local created = ARGV[5]
redis.call('SET', KEYS[2], body)
redis.call('SET', ARGV[11] .. case, cid)
for i = 8, 12 do redis.call('ZADD', KEYS[i], created, cid) end
if ARGV[12] ~= '' then
  redis.call('ZADD', KEYS[13], created, cid)
  redis.call('SADD', KEYS[14], ARGV[12])
  redis.call('ZADD', KEYS[5], ARGV[6], cid)
  redis.call('ZADD', KEYS[6], created, cid)
  if ARGV[7] ~= '' then redis.call('ZADD', KEYS[7], ARGV[7], cid) end
end
-- the complaint holds the text now: the message record keeps only where it went (rewritten,
-- not HDEL'd, so that Redis gives the larger allocation back)
local kept = redis.call('HMGET', KEYS[1], 'received_ms', 'channel')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'processed', 'complaint_id', cid, 'case_number', case,
           'received_ms', kept[1] or '0', 'channel', kept[2] or '')
redis.call('ZREM', KEYS[3], ARGV[8])
if ARGV[9] ~= '' then redis.call('ZADD', KEYS[15], ARGV[10], ARGV[9]) end
local n = tonumber(ARGV[14])
for j = 0, n - 1 do
  local b = 15 + j * 5
  redis.call('PSETEX', ARGV[b], ARGV[b + 4], ARGV[b + 2])
  redis.call('ZADD', KEYS[16], ARGV[b + 3], ARGV[b + 1])
end
if n > 0 and ARGV[13] == '1' then
  redis.call('LPUSH', KEYS[17], '1')
  redis.call('LTRIM', KEYS[17], 0, 7)
end
local fp = ARGV[15 + n * 5]
if fp and fp ~= '' then redis.call('HSET', KEYS[18], cid, fp) end
local t0 = 16 + n * 5
local timers = tonumber(ARGV[t0] or '0')
for j = 0, timers - 1 do
  redis.call('ZADD', KEYS[19], ARGV[t0 + 1 + j * 2 + 1], ARGV[t0 + 1 + j * 2])
end
return {'created', cid, case}
"""

_CLAIM_LUA = """
-- KEYS: queue, queue age index, leases, lease hash prefix is ARGV[4]
-- ARGV: now ms, lease ms, agent, lease key prefix, skill
local items = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #items == 0 then return false end
local cid = items[1]
redis.call('ZREM', KEYS[1], cid)
local age = redis.call('ZSCORE', KEYS[2], cid)
redis.call('ZREM', KEYS[2], cid)
local expires = tonumber(ARGV[1]) + tonumber(ARGV[2])
redis.call('ZADD', KEYS[3], expires, cid)
redis.call('HSET', ARGV[4] .. cid, 'agent', ARGV[3], 'score', items[2], 'age', age or ARGV[1],
           'skill', ARGV[5], 'expires', expires)
return {cid, tostring(expires)}
"""

_REQUEUE_EXPIRED_LUA = """
-- KEYS: leases; ARGV: now ms, lease key prefix, queue key prefix, queue-age key prefix, limit
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[5]))
local back = {}
for _, cid in ipairs(due) do
  local lease = ARGV[2] .. cid
  local skill = redis.call('HGET', lease, 'skill')
  if skill then
    redis.call('ZADD', ARGV[3] .. skill, redis.call('HGET', lease, 'score'), cid)
    redis.call('ZADD', ARGV[4] .. skill, redis.call('HGET', lease, 'age'), cid)
    table.insert(back, cid)
    table.insert(back, redis.call('HGET', lease, 'agent') or '')
  end
  redis.call('DEL', lease)
  redis.call('ZREM', KEYS[1], cid)
end
return back
"""


class Keys:
    """The key layout. Every key starts with the configured prefix."""

    def __init__(self, prefix: str) -> None:
        self.p = prefix
        # arq names a job's keys arq:job:<id>, arq:in-progress:<id>...: a job id that starts with
        # the prefix's hash tag puts them in the desk's Redis Cluster slot with everything else
        self.tag = hash_tag(prefix)
        self.none = prefix + "-"  # never written: stands for an absent key in a script's KEYS
        self.arq_queue = prefix + default_queue_name
        self.wake = prefix + "wake"
        self.pending = prefix + "pending"
        self.leases = prefix + "leases"
        self.skills = prefix + "skills"
        self.quarantine = prefix + "quarantine"
        self.workers = prefix + "workers"
        self.outbox = prefix + "outbox"
        self.timers = prefix + "timers"
        self.timers_inflight = prefix + "timers:inflight"
        self.escalations = prefix + "escalations"

    def msg(self, mid: str) -> str:
        return f"{self.p}msg:{mid}"

    def raw(self, mid: str) -> str:
        return f"{self.p}raw:{mid}"

    def idem(self, channel: str, scope: str) -> str:
        return f"{self.p}idem:{channel}:{scope}"

    def complaint(self, cid: str) -> str:
        return f"{self.p}complaint:{cid}"

    def case(self, case_number: str) -> str:
        return f"{self.p}case:{case_number}"

    def case_seq(self, day: str) -> str:
        return f"{self.p}caseseq:{day}"

    def queue(self, skill: str) -> str:
        return f"{self.p}queue:{skill}"

    def queue_age(self, skill: str) -> str:
        return f"{self.p}queueage:{skill}"

    def lease(self, cid: str) -> str:
        return f"{self.p}lease:{cid}"

    def fr_due(self, skill: str) -> str:
        return f"{self.p}frdue:{skill}"

    def idx(self, field_name: str, value: str) -> str:
        return f"{self.p}idx:{field_name}:{value}"

    @property
    def idx_all(self) -> str:
        return f"{self.p}idx:all"

    def contact(self, contact: Contact) -> str:
        return f"{self.p}contact:{contact.kind}:{contact.value}"

    def open_cases(self, customer_id: str) -> str:
        """The customer's open cases' fingerprints (repeat-report lookup)."""
        return f"{self.p}customer:{customer_id}:open"

    def customer_history(self, customer_id: str) -> str:
        return f"{self.p}customer:{customer_id}:history"

    def customer_contacts(self, customer_id: str) -> str:
        return f"{self.p}customer:{customer_id}:contacts"

    def delivery(self, cid: str) -> str:
        return f"{self.p}delivery:{cid}"

    def quarantined(self, qid: str) -> str:
        return f"{self.p}quarantine:{qid}"

    def outbound(self, channel: str, provider_id: str) -> str:
        return f"{self.p}outbound:{channel}:{provider_id}"

    def outbound_by_contact(self, channel: str, contact_value: str) -> str:
        return f"{self.p}outbound-to:{channel}:{contact_value}"

    def last_inbound(self, channel: str, contact_value: str) -> str:
        return f"{self.p}lastin:{channel}:{contact_value}"


def job_key(job_id: str) -> str:
    return job_key_prefix + job_id


def body_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class ComplaintStore:
    """Reads and writes messages, complaints, queues and leases."""

    def __init__(self, prefix: str = "cg:", *, worker_wake: bool = True, limits: IntakeLimits | None = None) -> None:
        self.keys = Keys(prefix)
        self.redis: Redis | None = None
        self.worker_wake = worker_wake
        self.limits = limits or IntakeLimits()
        self._intake_script: Any = None
        self._prepare_script: Any = None
        self._commit_script: Any = None
        self._claim_script: Any = None
        self._requeue_script: Any = None

    def bind(self, redis: Redis) -> None:
        self.redis = redis
        self._intake_script = redis.register_script(_INTAKE_LUA)
        self._prepare_script = redis.register_script(_PREPARE_LUA)
        self._commit_script = redis.register_script(_COMMIT_LUA)
        self._claim_script = redis.register_script(_CLAIM_LUA)
        self._requeue_script = redis.register_script(_REQUEUE_EXPIRED_LUA)
        self._status_script = redis.register_script(_STATUS_LUA)
        self._case_script = redis.register_script(_CASE_LUA)

    @property
    def r(self) -> Redis:
        if self.redis is None:
            raise RuntimeError("ComplaintStore is not bound to Redis")
        return self.redis

    # -- jobs --------------------------------------------------------------------------------

    def _job_bytes(self, job: PlannedJob, enqueue_ms: int) -> bytes:
        return serialize_job(job.function, job.args, {}, None, enqueue_ms)

    def queue_jobs(self, pipe: Any, jobs: Sequence[PlannedJob]) -> None:
        """Write arq jobs inside an open MULTI (same layout as ``ArqRedis.enqueue_job``)."""
        if not jobs:
            return
        enqueue_ms = now_ms()
        for job in jobs:
            score = enqueue_ms + job.defer_ms
            job_id = self.keys.tag + job.job_id
            pipe.psetex(job_key(job_id), JOB_EXPIRES_MS + job.defer_ms, self._job_bytes(job, enqueue_ms))
            pipe.zadd(self.keys.arq_queue, {job_id: score})
        if self.worker_wake:
            pipe.lpush(self.keys.wake, "1")
            pipe.ltrim(self.keys.wake, 0, 7)

    async def enqueue(self, *jobs: PlannedJob) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            self.queue_jobs(pipe, jobs)
            await pipe.execute()

    async def count_replicated(self, metrics_field: str) -> bool:
        """Add one to a metrics counter; with ``wait_replicas``, True only once that many
        replicas hold every write made so far. The counter is a write, and WAIT follows it on the
        same connection: replication is in order, so the replicas having the counter means they
        have everything before it."""
        wanted = self.limits.wait_replicas
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.hincrby(self.keys.p + "metrics", metrics_field, 1)
            if wanted:
                pipe.wait(wanted, self.limits.wait_ms)
            answers = await pipe.execute()
        return not wanted or answers[-1] >= wanted

    async def replicated(self, why: str) -> bool:
        """With ``wait_replicas``: True once that many replicas hold every write made so far.
        Before anything goes out to a customer, so a failover cannot make the gateway forget it
        sent it."""
        if not self.limits.wait_replicas:
            return True
        return await self.count_replicated(f"gateway_replication_waits|for={why}")

    # -- intake ------------------------------------------------------------------------------

    async def intake(
        self,
        message: InboundMessage,
        *,
        idempotency_scope: str | None,
        request_hash: str = "",
        raw: bytes | None = None,
        limits: bool = True,
    ) -> IntakeOutcome:
        """Store a message and its processing job atomically (one round trip); refused with
        ``backpressure`` or ``rate_limited`` (nothing stored) when over a limit."""
        k = self.keys
        now_s = int(time.time())
        received_ms = dt_to_ms(message.received_at)
        job_id = f"{k.tag}ingest:{message.id}"
        job = PlannedJob("process_message", job_id, (message.id,))
        none = k.none
        keys_and_args = dict(
            keys=[
                k.msg(message.id),
                k.idem(message.channel, idempotency_scope) if idempotency_scope else none,
                k.pending,
                job_key(job_id),
                k.arq_queue,
                k.wake,
                k.raw(message.id) if raw is not None else none,
                k.p + "metrics",
                f"{k.p}rate:contact:{message.sender.kind}:{message.sender.value}:{now_s // 60}"
                if limits and self.limits.contact_per_minute else none,
                f"{k.p}rate:channel:{message.channel}:{now_s}" if limits and self.limits.channel_per_second else none,
                none,
            ],
            args=[
                message.id,
                _message_encoder.encode(message),
                received_ms,
                request_hash,
                self._job_bytes(job, received_ms),
                JOB_EXPIRES_MS,
                IDEMPOTENCY_TTL_S,
                raw or b"",
                "1" if self.worker_wake else "0",
                message.channel,
                job_id,
                RAW_TTL_S,
                f"{message.sender.kind}:{message.sender.value}",
                "\n".join(f"{c.kind}:{c.value}" for c in message.verified_contacts),
                self.limits.max_pending, self.limits.contact_per_minute, self.limits.channel_per_second,
            ],
        )
        replicas = None
        if self.limits.wait_replicas:
            # WAIT counts the replicas that have this connection's writes, so it must follow the
            # script on the same connection: one pipeline (a failover to a replica then keeps
            # every message the gateway acknowledged)
            async with self.r.pipeline(transaction=False) as pipe:
                await self._intake_script(**keys_and_args, client=pipe)
                pipe.wait(self.limits.wait_replicas, self.limits.wait_ms)
                result, replicas = await pipe.execute()
        else:
            result = await self._intake_script(**keys_and_args)
        status, mid = (x.decode() if isinstance(x, bytes) else x for x in result)
        return IntakeOutcome(status, mid, replicas)

    async def idempotent_message(self, channel: str, scope: str) -> str | None:
        """The id of the message an idempotency scope was first taken as (within the TTL)."""
        value = await self.r.get(self.keys.idem(channel, scope))
        return value.decode().split("|", 1)[0] if value else None

    async def message_state(self, mid: str) -> dict[str, str] | None:
        raw = await self.r.hmget(self.keys.msg(mid), "status", "complaint_id", "channel", "received_ms", "error")
        if raw[0] is None:
            return None
        status, complaint_id, channel, received_ms, error = (v.decode() if v else None for v in raw)
        return {
            "status": status or MessageStatus.received.value,
            "complaint_id": complaint_id,
            "channel": channel,
            "received_ms": received_ms,
            "error": error,
        }

    # -- customers ---------------------------------------------------------------------------

    async def prepare(self, mid: str) -> tuple[str, InboundMessage | None, dict[str, Any]]:
        """Load message ``mid`` for processing and resolve its sender to a customer (a first
        contact creates one; contacts the channel vouches for join the same customer unless they
        are someone's already), in one round trip.

        Returns (status, message, fields): status ``missing``, ``processed``, ``quarantined`` or
        ``received``; message ``None`` when it is not to be processed or does not decode; fields
        ``channel``, ``customer_id``, ``raw``, ``nodedup`` (an agent split this message off a
        case: open a case of its own) and ``open_cases`` (complaint id → fingerprint bytes).
        """
        result = await self._prepare_script(keys=[self.keys.msg(mid)], args=[new_id("cus"), self.keys.p, now_ms()])
        values = [v.decode() if isinstance(v, bytes) and i != 1 else v for i, v in enumerate(result)]
        status = values[0]
        if status != "received" and status != MessageStatus.received.value:
            fields = {"complaint_id": values[1]} if len(values) > 1 else {}
            return status, None, fields
        data, channel, customer = result[1], values[2], values[3]
        flat = result[5] if len(result) > 5 else []
        open_cases = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat) - 1, 2)}
        fields = {"channel": channel, "customer_id": customer, "raw": data, "nodedup": values[4] == "1",
                  "open_cases": open_cases}
        try:
            return status, _message_decoder.decode(data), fields
        except msgspec.DecodeError:
            return status, None, fields

    async def customer_of(self, contact: Contact) -> str | None:
        value = await self.r.get(self.keys.contact(contact))
        return value.decode() if value else None

    # -- complaints --------------------------------------------------------------------------

    async def commit_new_complaint(
        self,
        mid: str,
        complaint: Complaint,
        jobs: Sequence[PlannedJob] = (),
        *,
        case_placeholder: str,
        outbox: Sequence[str] = (),
        fingerprint: bytes = b"",
        timers: dict[str, int] | None = None,
    ) -> tuple[bool, str, str]:
        """Store a new complaint for message ``mid`` unless that message was processed already.

        ``complaint`` carries ``case_placeholder`` wherever the case number goes; the number is
        allocated in the same script. Returns (created, complaint id, case number). Safe to call
        twice: the second call changes nothing and answers what the first made.
        """
        k = self.keys
        day = complaint.created_at.strftime("%Y%m%d")
        state, done_cid, case = (x.decode() if isinstance(x, bytes) else x for x in await self._case_script(
            keys=[k.msg(mid), k.case_seq(day)], args=[day]))
        if state == "processed":
            return False, done_cid, case
        created_ms = dt_to_ms(complaint.created_at)
        skill = complaint.skill or ""
        enqueue_ms = now_ms()
        job_args: list[Any] = []
        for job in jobs:
            job_args += [job_key(k.tag + job.job_id), k.tag + job.job_id, self._job_bytes(job, enqueue_ms),
                         enqueue_ms + job.defer_ms, JOB_EXPIRES_MS + job.defer_ms]
        result = await self._commit_script(
            keys=[
                k.msg(mid), k.complaint(complaint.id), k.pending, k.case_seq(day),
                k.queue(skill), k.queue_age(skill), k.fr_due(skill),
                k.idx_all, k.idx("status", complaint.status.value), k.idx("category", complaint.category),
                k.idx("customer", complaint.customer_id), k.idx("channel", complaint.channel), k.idx("skill", skill),
                k.skills, k.outbox, k.arq_queue, k.wake, k.open_cases(complaint.customer_id), k.timers,
            ],
            args=[
                complaint.id, encode_complaint(complaint, {case_placeholder: case}), case,
                day, created_ms, queue_score(complaint.priority, created_ms),
                dt_to_ms(complaint.first_response_due) if complaint.first_response_due else "",
                mid, outbox[0] if outbox else "", now_ms() + OUTBOX_GRACE_MS, k.p + "case:", skill,
                "1" if self.worker_wake else "0", len(jobs), *job_args, fingerprint,
                len(timers or {}), *[x for member, due in (timers or {}).items() for x in (member, due)],
            ],
        )
        status, cid, case = (x.decode() if isinstance(x, bytes) else x for x in result)
        return status == "created", cid, case

    # -- deliveries --------------------------------------------------------------------------

    async def record_delivery(self, complaint_id: str, reply_id: str, state: dict[str, Any]) -> bool:
        """Delivery state lives beside the complaint, so provider callbacks never rewrite it; it only
        moves forward (a provider's "delivered" that beats our own "sent" to Redis stays)."""
        changed = await self._status_script(
            keys=[self.keys.delivery(complaint_id), self.keys.outbox],
            args=[reply_id, _json_encoder.encode({k: v for k, v in state.items() if v is not None}), DELIVERY_RANK.get(state.get("delivery", ""), 0),
                  f"{complaint_id}|{reply_id}"],
        )
        return bool(changed)

    async def remember_outbound(self, channel: str, provider_id: str, complaint_id: str, reply_id: str, *,
                                contact_value: str | None = None) -> None:
        """Note which reply a provider's message id belongs to, so its status callbacks find it.
        With ``contact_value`` the id is also kept per recipient, for read receipts that only say
        "everything up to this time" (Messenger's watermark)."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.set(self.keys.outbound(channel, provider_id), f"{complaint_id}|{reply_id}", ex=OUTBOUND_TTL_S)
            if contact_value:
                key = self.keys.outbound_by_contact(channel, contact_value)
                pipe.zadd(key, {provider_id: now_ms()})
                pipe.expire(key, OUTBOUND_TTL_S)
            await pipe.execute()

    async def apply_provider_status(self, channel: str, provider_id: str, status: str, *,
                                    error: str | None = None, at: datetime | None = None) -> bool:
        """A provider's delivery report for one of our messages. Reports arrive late, twice and out
        of order, so a state only moves forward (sent → delivered → read; failed is final).
        Answers whether anything changed."""
        target = await self.r.get(self.keys.outbound(channel, provider_id))
        if target is None or status not in DELIVERY_RANK:
            return False
        complaint_id, _, reply_id = target.decode().partition("|")
        state: dict[str, Any] = {"delivery": status, "provider_message_id": provider_id, "error": error}
        if status in ("delivered", "read"):
            state["delivered_at"] = (at or datetime.now(timezone.utc)).isoformat()
        return await self.record_delivery(complaint_id, reply_id, state)

    async def apply_read_watermark(self, channel: str, contact_value: str, watermark_ms: int) -> int:
        """Everything we sent to ``contact_value`` up to ``watermark_ms`` has been read."""
        key = self.keys.outbound_by_contact(channel, contact_value)
        ids = await self.r.zrangebyscore(key, "-inf", watermark_ms, start=0, num=500)
        changed = 0
        for pid in ids:
            changed += await self.apply_provider_status(channel, pid.decode(), "read", at=ms_to_dt(watermark_ms))
        if ids:
            await self.r.zrem(key, *ids)
        return changed

    async def overdue_outbox(self, limit: int = 200) -> list[tuple[str, str]]:
        """Replies still not handed to their channel after the grace period (their sender crashed)."""
        due = await self.r.zrangebyscore(self.keys.outbox, "-inf", now_ms(), start=0, num=limit)
        pairs = []
        for member in due:
            cid, _, rid = member.decode().partition("|")
            pairs.append((cid, rid))
            # XX: only an entry still there; one the reply's send removed meanwhile stays removed
            await self.r.zadd(self.keys.outbox, {member: now_ms() + OUTBOX_GRACE_MS * 2}, xx=True)
        return pairs

    async def drop_from_outbox(self, complaint_id: str, reply_id: str) -> None:
        await self.r.zrem(self.keys.outbox, f"{complaint_id}|{reply_id}")

    def add_to_outbox(self, pipe: Any, complaint_id: str, reply_id: str) -> None:
        pipe.zadd(self.keys.outbox, {f"{complaint_id}|{reply_id}": now_ms() + OUTBOX_GRACE_MS})

    def _index_new(self, pipe: Any, complaint: Complaint, created_ms: int) -> None:
        k = self.keys
        pipe.zadd(k.idx_all, {complaint.id: created_ms})
        pipe.zadd(k.idx("status", complaint.status.value), {complaint.id: created_ms})
        pipe.zadd(k.idx("category", complaint.category), {complaint.id: created_ms})
        pipe.zadd(k.idx("customer", complaint.customer_id), {complaint.id: created_ms})
        pipe.zadd(k.idx("channel", complaint.channel), {complaint.id: created_ms})
        if complaint.skill:
            pipe.zadd(k.idx("skill", complaint.skill), {complaint.id: created_ms})

    async def mark_message(self, mid: str, status: MessageStatus, **fields: str) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.msg(mid), mapping={"status": status.value, **fields})
            pipe.zrem(self.keys.pending, mid)
            await pipe.execute()

    async def get(self, cid: str) -> Complaint:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.complaint(cid))
            pipe.hgetall(self.keys.delivery(cid))
            data, deliveries = await pipe.execute()
        if data is None:
            raise NotFound("complaint_not_found", f"no complaint {cid}")
        return _with_deliveries(decode_complaint(data), deliveries)

    async def get_many(self, cids: Sequence[str]) -> list[Complaint]:
        if not cids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.mget([self.keys.complaint(c) for c in cids])
            for c in cids:
                pipe.hgetall(self.keys.delivery(c))
            values, *deliveries = await pipe.execute()
        return [_with_deliveries(decode_complaint(v), d) for v, d in zip(values, deliveries) if v is not None]

    async def case_for_contact(self, case_number: str, contact: Contact) -> Complaint | None:
        """The case, if ``contact`` is its customer's (directly or through a linked contact)."""
        try:
            complaint = await self.find_by_case_number(case_number)
        except NotFound:
            return None
        if complaint.contact.kind == contact.kind and complaint.contact.value == contact.value:
            return complaint
        if await self.customer_of(contact) == complaint.customer_id:
            return complaint
        return None

    async def find_by_case_number(self, case_number: str) -> Complaint:
        cid = await self.r.get(self.keys.case(case_number))
        if cid is None:
            raise NotFound("complaint_not_found", f"no complaint {case_number}")
        return await self.get(cid.decode())

    async def update(
        self,
        cid: str,
        change: Callable[[Complaint, TxEffects], Awaitable[None] | None],
    ) -> Complaint:
        """Apply ``change`` to the stored complaint under optimistic locking.

        ``change`` mutates the complaint and may add jobs or extra writes to ``effects``; it may
        raise ``Conflict``. Status, skill and category index moves are derived here.
        """
        k = self.keys
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(k.complaint(cid))
                    data = await pipe.get(k.complaint(cid))
                    if data is None:
                        raise NotFound("complaint_not_found", f"no complaint {cid}")
                    before = decode_complaint(data)
                    after = decode_complaint(data)
                    effects = TxEffects()
                    result = change(after, effects)
                    if result is not None:
                        await result
                    after.updated_at = datetime.now(timezone.utc)
                    pipe.multi()
                    pipe.set(k.complaint(cid), encode_complaint(after))
                    created_ms = dt_to_ms(after.created_at)
                    for name, old, new in (
                        ("status", before.status.value, after.status.value),
                        ("category", before.category, after.category),
                        ("skill", before.skill, after.skill),
                    ):
                        if old != new:
                            if old:
                                pipe.zrem(k.idx(name, old), cid)
                            if new:
                                pipe.zadd(k.idx(name, new), {cid: created_ms})
                    if is_open(before) and not is_open(after):
                        pipe.hdel(k.open_cases(after.customer_id), cid)
                    elif is_open(after) and not is_open(before):
                        pipe.hset(k.open_cases(after.customer_id), cid, fingerprint_of(after, created_ms))
                    if before.priority != after.priority and after.skill:  # re-rank it where it waits
                        pipe.zadd(k.queue(after.skill), {cid: queue_score(after.priority, created_ms)}, xx=True)
                    for op in effects.ops:
                        op(pipe)
                    self.queue_jobs(pipe, effects.jobs)
                    await pipe.execute()
                    return after
                except WatchError:
                    continue

    async def list(
        self,
        *,
        status: str | None = None,
        skill: str | None = None,
        category: str | None = None,
        customer_id: str | None = None,
        channel: str | None = None,
        limit: int = 50,
        before: tuple[int, str] | None = None,
    ) -> tuple[list[Complaint], tuple[int, str] | None]:
        """Newest first. Scans the most selective index and filters the rest."""
        k = self.keys
        filters = {"status": status, "skill": skill, "category": category, "customer": customer_id, "channel": channel}
        given = [(name, value) for name, value in filters.items() if value]
        index = k.idx(*given[0]) if given else k.idx_all
        max_score: str | float = "+inf"
        if before is not None:
            max_score = before[0]
        found: list[Complaint] = []
        scanned = 0
        while len(found) < limit and scanned < 5000:
            batch = await self.r.zrevrangebyscore(index, max_score, "-inf", start=0, num=limit * 2 + 10, withscores=True)
            if not batch:
                break
            ids = []
            for member, score in batch:
                cid = member.decode()
                if before is not None and int(score) == before[0] and cid >= before[1]:
                    continue
                ids.append(cid)
            scanned += len(batch)
            for complaint in await self.get_many(ids):
                if (
                    (not status or complaint.status.value == status)
                    and (not skill or complaint.skill == skill)
                    and (not category or complaint.category == category)
                    and (not customer_id or complaint.customer_id == customer_id)
                    and (not channel or complaint.channel == channel)
                ):
                    found.append(complaint)
                    if len(found) == limit:
                        break
            last_member, last_score = batch[-1]
            before = (int(last_score), last_member.decode())
            max_score = before[0]
            if len(batch) < limit * 2 + 10:
                break
        cursor = None
        if len(found) == limit:
            last = found[-1]
            cursor = (dt_to_ms(last.created_at), last.id)
        return found, cursor

    # -- skill queues ------------------------------------------------------------------------

    async def claim(self, skill: str, agent: str, lease_seconds: int) -> tuple[str, int] | None:
        """Lease the next complaint of a queue (highest priority, then oldest) to an agent."""
        k = self.keys
        await self.requeue_expired()
        result = await self._claim_script(
            keys=[k.queue(skill), k.queue_age(skill), k.leases],
            args=[now_ms(), lease_seconds * 1000, agent, self.keys.p + "lease:", skill],
        )
        if not result:
            return None
        cid, expires = (x.decode() if isinstance(x, bytes) else x for x in result)
        return cid, int(float(expires))

    async def requeue_expired(self, limit: int = 100) -> list[tuple[str, str]]:
        """Put complaints whose claim lease ran out back in their queue; returns (cid, agent)."""
        k = self.keys
        back = await self._requeue_script(
            keys=[k.leases],
            args=[now_ms(), k.p + "lease:", k.p + "queue:", k.p + "queueage:", limit],
        )
        values = [x.decode() if isinstance(x, bytes) else x for x in back]
        return list(zip(values[0::2], values[1::2]))

    def release_lease(self, pipe: Any, cid: str) -> None:
        pipe.zrem(self.keys.leases, cid)
        pipe.delete(self.keys.lease(cid))

    def enter_queue(self, pipe: Any, complaint: Complaint, first_response_due: datetime | None) -> None:
        """Put a waiting complaint in its skill queue (priority, then age) with its first-response
        due time (the queue's breach count reads it)."""
        if not complaint.skill:
            return
        created_ms = dt_to_ms(complaint.created_at)
        pipe.zadd(self.keys.queue(complaint.skill), {complaint.id: queue_score(complaint.priority, created_ms)})
        pipe.zadd(self.keys.queue_age(complaint.skill), {complaint.id: created_ms})
        pipe.sadd(self.keys.skills, complaint.skill)
        if first_response_due is not None:
            pipe.zadd(self.keys.fr_due(complaint.skill), {complaint.id: dt_to_ms(first_response_due)})

    def leave_queue(self, pipe: Any, complaint: Complaint, escalation_queues: Iterable[str]) -> None:
        """Out of its skill queue and the escalation queues it was copied to (the deadline
        policy names them; ``router.cases.leave_queues`` knows which)."""
        if complaint.skill:
            pipe.zrem(self.keys.queue(complaint.skill), complaint.id)
            pipe.zrem(self.keys.queue_age(complaint.skill), complaint.id)
        for queue in escalation_queues:
            pipe.zrem(self.keys.queue(queue), complaint.id)

    def stop_first_response_clock(self, pipe: Any, complaint: Complaint) -> None:
        if complaint.skill:
            pipe.zrem(self.keys.fr_due(complaint.skill), complaint.id)

    async def lease_holder(self, cid: str) -> str | None:
        agent = await self.r.hget(self.keys.lease(cid), "agent")
        return agent.decode() if agent else None

    async def queue_stats(self, extra: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Each skill queue (those complaints went to, and ``extra``: the rules' queues, empty or not)."""
        k = self.keys
        skills = sorted({s.decode() for s in await self.r.smembers(k.skills)} | set(extra))
        now = now_ms()
        async with self.r.pipeline(transaction=False) as pipe:
            for skill in skills:
                pipe.zcard(k.queue(skill))
                pipe.zrange(k.queue_age(skill), 0, 0, withscores=True)
                pipe.zcount(k.fr_due(skill), "-inf", now)
                pipe.zcard(k.fr_due(skill))
                pipe.zcount(k.fr_due(skill), now, now + DEADLINE_NEAR_MS)
            raw = await pipe.execute()
        stats = []
        for i, skill in enumerate(skills):
            depth, oldest, breached, awaiting, near = raw[i * 5 : i * 5 + 5]
            oldest_age = (now - int(oldest[0][1])) / 1000 if oldest else 0.0
            stats.append(
                {
                    "skill": skill,
                    "depth": depth,
                    "oldest_age_seconds": round(max(0.0, oldest_age), 3),
                    "awaiting_first_response": awaiting,
                    "deadlines_breached": breached,
                    "deadlines_near": near,
                }
            )
        return stats

    # -- quarantine --------------------------------------------------------------------------

    async def quarantine(self, *, channel: str, reason: str, raw: bytes, message_id: str | None = None) -> str:
        qid = new_id("q")
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.quarantined(qid),
                mapping={
                    "channel": channel,
                    "reason": reason[:500],
                    "raw": raw,
                    "received_ms": now_ms(),
                    "message_id": message_id or "",
                },
            )
            pipe.zadd(self.keys.quarantine, {qid: now_ms()})
            await pipe.execute()
        return qid

    async def quarantined(self, limit: int, before_ms: int | None = None) -> list[dict[str, Any]]:
        ids = await self.r.zrevrangebyscore(
            self.keys.quarantine, before_ms - 1 if before_ms else "+inf", "-inf", start=0, num=limit
        )
        items = []
        for qid_b in ids:
            qid = qid_b.decode()
            fields = await self.r.hgetall(self.keys.quarantined(qid))
            if fields:
                items.append({"id": qid, **{k.decode(): v for k, v in fields.items()}})
        return items

    async def quarantined_one(self, qid: str) -> dict[str, Any]:
        fields = await self.r.hgetall(self.keys.quarantined(qid))
        if not fields:
            raise NotFound("quarantine_not_found", f"no quarantined input {qid}")
        return {"id": qid, **{k.decode(): v for k, v in fields.items()}}

    async def discard_quarantined(self, qid: str) -> None:
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.quarantined(qid))
            pipe.zrem(self.keys.quarantine, qid)
            removed = await pipe.execute()
        if not removed[0]:
            raise NotFound("quarantine_not_found", f"no quarantined input {qid}")

    # -- workers -----------------------------------------------------------------------------

    async def worker_alive(self, within_ms: int = 15_000) -> bool:
        return bool(await self.r.zcount(self.keys.workers, now_ms() - within_ms, "+inf"))

    async def worker_heartbeat(self, worker_id: str) -> None:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.workers, {worker_id: now_ms()})
            pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms() - 3_600_000)
            await pipe.execute()

    async def job_exists(self, job_id: str) -> bool:
        job_id = self.keys.tag + job_id
        return bool(await self.r.exists(job_key(job_id), in_progress_key_prefix + job_id, result_key_prefix + job_id))

    async def stale_pending(self, older_than_ms: int, limit: int = 500) -> list[str]:
        ids = await self.r.zrangebyscore(self.keys.pending, "-inf", now_ms() - older_than_ms, start=0, num=limit)
        return [i.decode() for i in ids]


def _with_deliveries(complaint: Complaint, deliveries: dict[bytes, bytes]) -> Complaint:
    if deliveries:
        for reply in complaint.replies:
            state = deliveries.get(reply.id.encode())
            if state is not None:
                fields = msgspec.json.decode(state)
                reply.delivery = fields.get("delivery", reply.delivery)
                reply.provider_message_id = fields.get("provider_message_id")
                reply.error = fields.get("error")
                at = fields.get("delivered_at")
                reply.delivered_at = datetime.fromisoformat(at) if at else None
    return complaint


def _strip(value: Any) -> Any:
    """Drop None, empty lists and empty dicts (every such field has that default, so decoding
    restores them): stored complaints carry only what they say."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


COMPRESSED = b"z"


def encode_complaint(complaint: Complaint, replace: dict[str, str] | None = None) -> bytes:
    """A complaint as stored: JSON without empty fields, zlib-compressed (about a third of the
    plain JSON; Redis memory per open complaint is a design goal). ``replace`` substitutes text
    (the case number for its placeholder) before compression."""
    data = _json_encoder.encode(_strip(msgspec.to_builtins(complaint)))
    for old, new in (replace or {}).items():
        data = data.replace(old.encode(), new.encode())
    return COMPRESSED + zlib.compress(data, 1)


def decode_complaint(data: bytes) -> Complaint:
    if data[:1] == COMPRESSED:
        data = zlib.decompress(data[1:])
    return _complaint_decoder.decode(data)


def is_open(complaint: Complaint) -> bool:
    return complaint.status in OPEN_STATUSES


__all__ = [
    "ComplaintStore",
    "ComplaintStatus",
    "Conflict",
    "IntakeOutcome",
    "Keys",
    "NotFound",
    "PlannedJob",
    "TxEffects",
    "body_hash",
    "dt_to_ms",
    "ms_to_dt",
    "new_id",
    "now_ms",
    "queue_score",
]
