"""The intake's Lua script: a message taken in, durably, with its arq job, in one step (the
gateway answers the channel only after it ran). Re-exported by ``router.store.scripts``."""

from __future__ import annotations

INTAKE_LUA = """
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
-- one wake-up waiting is enough: a woken worker polls, and claims every job due it has room for
if ARGV[9] == '1' and redis.call('LLEN', KEYS[6]) == 0 then
  redis.call('LPUSH', KEYS[6], '1')
end
redis.call('HINCRBY', KEYS[8], 'gateway_messages_in|channel=' .. ARGV[10] .. ',outcome=accepted', 1)
return {'accepted', ARGV[1]}
"""

__all__ = ["INTAKE_LUA"]
