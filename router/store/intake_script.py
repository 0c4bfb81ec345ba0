"""The intake's Lua script: messages taken in, durably, with their arq jobs, in one step (the
gateway answers each channel only after it ran), and the group commit that sends the messages
of concurrent requests through one call of it. Re-exported by ``router.store.scripts``.

Group commit: while one call of the script is on its way, the messages that arrive wait and go
together in the next call (up to ``MAX_BATCH``), each with its own outcome. Nothing waits for a
batch to fill: a message that finds no call under way is sent at once, so a quiet desk pays no
latency for it, and a busy one pays one round trip and one script call per batch instead of per
message (with ``appendfsync always`` Redis already fsyncs once per event-loop turn for all of
them: the batch saves the client's and the server's per-call work, bench/profile_gateway.py).
Each message's request is answered only after the call that wrote it returned, as before.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from redis.exceptions import ResponseError

from router.store.group_commit import MAX_BATCH, GroupCommit

#: The backpressure count (``ZCARD`` of the pending set) is read at most this often while the
#: desk is far below ``max_pending``: at least ``PENDING_SLACK_MIN`` and a ``PENDING_SLACK_PART``th of
#: the limit below it (``IntakeGroup._max_pending``).
PENDING_READ_EVERY_S = 1.0
PENDING_SLACK_MIN = 1000
PENDING_SLACK_PART = 10

#: Keys before the first message's: pending, arq queue, wake, metrics, none.
SHARED_KEYS = 5
#: Keys of one message: msg, idem (none = no scope), raw (none = no raw), sender's rate counter
#: (none = no limit), channel's rate counter (none = no limit). A message's job has no key of its
#: own: its id in arq's queue names it (``router.store.messages.ingest_job_bytes``).
KEYS_PER_MESSAGE = 5
#: Arguments before the first message's: wake ('1'/'0'), max pending (0 = none), sender's limit
#: per minute, channel's limit per second, idem ttl s, raw ttl s, count the outcomes in the
#: metrics hash here ('1'; '0': the caller's process tallies them), messages.
SHARED_ARGS = 8
#: Arguments of one message: message_id, data, received_ms (the job's score in arq's queue too),
#: body_hash ('' = don't compare), raw bytes, channel, job id, sender contact key, vouched-for
#: contact keys (newline-separated).
ARGS_PER_MESSAGE = 9

INTAKE_LUA = """
-- KEYS, ARGV: see router/store/intake_script.py (shared ones first, then each message's)
local none = KEYS[5]
local n = tonumber(ARGV[8])
local max_pending = tonumber(ARGV[2])
local contact_limit = tonumber(ARGV[3])
local channel_limit = tonumber(ARGV[4])
local pending_n = nil   -- read once, at the first message that needs it, then kept up to date
local channels = {}     -- a channel's rate counter: {count so far, increments taken ahead, not yet used}
local counts = {}
local out = {}
local accepted = 0
local waiting, queued = {}, {}
-- one message: its outcome and the reference answered with it
local function take(i)
  local k = 5 + (i - 1) * 5
  local a = 8 + (i - 1) * 9
  local msg, idem, raw = KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  local rate_contact, rate_channel = KEYS[k + 4], KEYS[k + 5]
  local mid, channel = ARGV[a + 1], ARGV[a + 6]
  local status, ref = nil, nil
  if idem ~= none then
    local existing = redis.call('GET', idem)
    if existing then
      local sep = string.find(existing, '|', 1, true)
      ref = string.sub(existing, 1, sep - 1)
      if ARGV[a + 4] == '' or string.sub(existing, sep + 1) == ARGV[a + 4] then
        status = 'duplicate'
      else
        status = 'conflict'
      end
    end
  end
  -- backpressure: the workers are this far behind; refuse (the caller answers 503 + Retry-After)
  if not status and max_pending > 0 then
    if pending_n == nil then pending_n = redis.call('ZCARD', KEYS[1]) end
    if pending_n >= max_pending then status, ref = 'backpressure', '' end
  end
  -- one sender, one channel: each has a budget, so a flood cannot starve everyone else
  if not status and rate_contact ~= none then
    local c = 1  -- most senders write once a minute: one SET for them, not INCR + EXPIRE
    if not redis.call('SET', rate_contact, '1', 'EX', 60, 'NX') then c = redis.call('INCR', rate_contact) end
    if c > contact_limit then status, ref = 'rate_limited', 'contact' end
  end
  if not status and rate_channel ~= none then
    local seen = channels[rate_channel]
    if seen == nil then
      -- one INCRBY for this message and the call's later ones of the channel (the usual case: all
      -- of them come this far); those that do not are given back after the loop
      local ahead = 0
      for j = i, n do
        if KEYS[5 + (j - 1) * 5 + 5] == rate_channel then ahead = ahead + 1 end
      end
      local c = redis.call('INCRBY', rate_channel, ahead)
      if c == ahead then redis.call('EXPIRE', rate_channel, 2) end
      seen = {c - ahead, ahead}  -- the count before this message, the increments not yet used
      channels[rate_channel] = seen
    end
    seen[1], seen[2] = seen[1] + 1, seen[2] - 1
    if seen[1] > channel_limit then status, ref = 'rate_limited', 'channel' end
  end
  if not status then
    if idem ~= none then
      redis.call('SET', idem, mid .. '|' .. ARGV[a + 4], 'EX', ARGV[5])
    end
    redis.call('HSET', msg, 'data', ARGV[a + 2], 'status', 'received', 'received_ms', ARGV[a + 3],
               'channel', channel, 'contact', ARGV[a + 8], 'vouched', ARGV[a + 9])
    if raw ~= none then
      redis.call('SET', raw, ARGV[a + 5], 'EX', ARGV[6])
    end
    -- the pending set and arq's queue: one ZADD each for the call's messages, after the loop (the
    -- job is its id there: the worker knows what an ingest job runs, see ingest_job_bytes)
    waiting[#waiting + 1] = ARGV[a + 3]
    waiting[#waiting + 1] = mid
    queued[#queued + 1] = ARGV[a + 3]
    queued[#queued + 1] = ARGV[a + 7]
    if pending_n ~= nil then pending_n = pending_n + 1 end
    accepted = accepted + 1
    status, ref = 'accepted', mid
  end
  if ARGV[7] == '1' then
    local field = 'gateway_messages_in|channel=' .. channel .. ',outcome=' .. status
    counts[field] = (counts[field] or 0) + 1
  end
  return status, ref
end
-- a command that fails (a key of the wrong type) fails its own message only: the others of the
-- call are answered as they were written, none of them twice
for i = 1, n do
  local ok, status, ref = pcall(take, i)
  if not ok then
    status, ref = 'error', type(status) == 'table' and (status.err or 'ERR') or tostring(status)
  end
  out[#out + 1] = status
  out[#out + 1] = ref
end
if accepted > 0 then
  redis.call('ZADD', KEYS[1], unpack(waiting))
  redis.call('ZADD', KEYS[2], unpack(queued))
end
for key, seen in pairs(channels) do
  if seen[2] > 0 then redis.call('DECRBY', key, seen[2]) end
end
-- one wake-up waiting is enough: a woken worker polls, and claims every job due it has room for
if accepted > 0 and ARGV[1] == '1' and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
for field, c in pairs(counts) do
  redis.call('HINCRBY', KEYS[4], field, c)
end
-- last: the pending count after the call, when it was read (-1: not read)
out[#out + 1] = pending_n or -1
return out
"""


class IntakeGroup:
    """The group commit (``GroupCommit``) of one store's intake script (see the module's docstring).

    ``submit(keys, args)`` takes one message's keys and arguments (``KEYS_PER_MESSAGE``,
    ``ARGS_PER_MESSAGE``) and answers ``(status, message_id or reference, replicas)`` once the
    call that carried it returned. A command that fails inside the script (a key of the wrong
    type) fails only its own message (``ResponseError``, as a call of its own would have); a call
    that fails as a whole (Redis away) fails every message it carried, none of them acknowledged.
    """

    def __init__(self, script: Any, redis: Any, shared: Callable[[], tuple[list[Any], list[Any], int, int]]) -> None:
        self.script = script
        self.redis = redis
        #: The store's settings as they are at each call: shared keys, shared arguments (all but
        #: the counting flag and the count), replicas to wait for, and how long.
        self.shared = shared
        self._group = GroupCommit(self._call)
        #: The pending count as the last call that read it answered, when (monotonic s), and the
        #: messages this process accepted since (see ``_max_pending``).
        self._pending_seen: tuple[int, float] | None = None
        self._accepted_since = 0

    def _max_pending(self, limit: int, messages: int) -> int:
        """The backpressure limit this call checks: ``limit``, or 0 (not checked, no ``ZCARD``)
        while the count read less than ``PENDING_READ_EVERY_S`` ago, plus what this process
        accepted since and this call's messages, stays ``PENDING_SLACK`` below the limit. The
        slack is for the other gateway processes' messages meanwhile: within it of the limit,
        or without a recent reading, every call reads the count, as every call did before."""
        seen = self._pending_seen
        if limit <= 0 or seen is None or time.monotonic() - seen[1] >= PENDING_READ_EVERY_S:
            return limit
        slack = max(PENDING_SLACK_MIN, limit // PENDING_SLACK_PART)
        return 0 if seen[0] + self._accepted_since + messages + slack <= limit else limit

    def _saw_pending(self, pending: int, accepted: int) -> None:
        if pending >= 0:
            self._pending_seen, self._accepted_since = (pending, time.monotonic()), 0
        else:
            self._accepted_since += accepted

    @property
    def calls(self) -> int:
        """Script calls made (a benchmark's and a test's figure)."""
        return self._group.calls

    async def submit(self, keys: list[Any], args: list[Any]) -> tuple[str, str, int | None]:
        result: tuple[str, str, int | None] = await self._group.submit((keys, args))
        return result

    async def _call(self, batch: list[tuple[list[Any], list[Any]]]
                    ) -> list[tuple[str, str, int | None] | Exception]:
        from router.metrics import tally_of  # router.metrics imports the store's keys

        tally = tally_of(self.redis)
        shared_keys, shared_args, wait_replicas, wait_ms = self.shared()
        keys = [*shared_keys]
        args = [*shared_args, "0" if tally is not None else "1", len(batch)]
        args[1] = self._max_pending(int(args[1]), len(batch))
        for k, a in batch:
            keys += k
            args += a
        replicas = None
        if wait_replicas:
            # WAIT counts the replicas that have this connection's writes, so it must follow the
            # script on the same connection: one pipeline (a failover to a replica then keeps
            # every message the gateway acknowledged)
            async with self.redis.pipeline(transaction=False) as pipe:
                await self.script(keys=keys, args=args, client=pipe)
                pipe.wait(wait_replicas, wait_ms)
                flat, replicas = await pipe.execute()
        else:
            flat = await self.script(keys=keys, args=args)
        results = []
        for i in range(0, len(flat) - 1, 2):
            status = flat[i].decode() if isinstance(flat[i], bytes) else flat[i]
            ref = flat[i + 1].decode() if isinstance(flat[i + 1], bytes) else flat[i + 1]
            results.append((status, ref, replicas) if status != "error" else ResponseError(ref))
        self._saw_pending(flat[-1], sum(isinstance(r, tuple) and r[0] == "accepted" for r in results))
        if tally is not None:
            metrics_key = shared_keys[3]
            for (_, a), result in zip(batch, results):
                if isinstance(result, tuple):
                    tally.add(metrics_key, f"gateway_messages_in|channel={a[5]},outcome={result[0]}", 1)
        return results


__all__ = ["INTAKE_LUA", "IntakeGroup", "MAX_BATCH"]
