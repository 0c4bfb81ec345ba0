"""The store's Lua scripts: each is one atomic step in Redis (what its header says it takes).

A script that only learns a key's variable part as it runs (the customer a message resolves to,
the skill of an expired lease) is given that key's head and tail from ``Keys`` (keys.py), so the
layout is still named in one place. ``ComplaintStore.bind`` registers them all.
"""

from __future__ import annotations

from router.store.intake_script import INTAKE_LUA

INCIDENT_NOTE_FN = """
-- Note a complaint in its category's incident window and read the window back.
-- recent (sorted set: complaint id by time), texts (hash: complaint id -> customer TAB tokens),
-- open (the category's open incidents, a set); a: {complaint id, its entry (customer TAB tokens),
-- now ms, window start ms, most kept, since ms (the texts of entries noted from then on are
-- returned), sweep ('1': drop a bounded number of text entries whose complaint left the window
-- without its text being dropped)}. Returns {kept ids oldest first, {id, entry, ...} noted since,
-- open incident ids}.
local function note_incident(recent, texts, open, a)
  redis.call('ZADD', recent, a[3], a[1])
  redis.call('HSET', texts, a[1], a[2])
  local all = redis.call('ZRANGE', recent, 0, -1, 'WITHSCORES')
  local n = #all / 2
  -- what leaves: the oldest beyond the most kept, and whatever is older than the window (a prefix)
  local drop = math.max(0, n - tonumber(a[5]))
  local cutoff = tonumber(a[4])
  while drop < n and tonumber(all[drop * 2 + 2]) <= cutoff do drop = drop + 1 end
  if drop > 0 then
    local gone = {}
    for i = 1, drop do gone[i] = all[i * 2 - 1] end
    redis.call('ZREMRANGEBYRANK', recent, 0, drop - 1)
    redis.call('HDEL', texts, unpack(gone))
  end
  if a[7] == '1' and redis.call('HLEN', texts) > 2 * tonumber(a[5]) then
    local page = redis.call('HSCAN', texts, 0, 'COUNT', 500)[2]
    for i = 1, #page, 2 do
      if not redis.call('ZSCORE', recent, page[i]) then redis.call('HDEL', texts, page[i]) end
    end
  end
  local ids, fresh = {}, {}
  local since = tonumber(a[6])
  for i = drop + 1, n do
    ids[#ids + 1] = all[i * 2 - 1]
    if tonumber(all[i * 2]) >= since then fresh[#fresh + 1] = all[i * 2 - 1] end
  end
  local entries = {}
  if #fresh > 0 then
    local values = redis.call('HMGET', texts, unpack(fresh))
    for i, id in ipairs(fresh) do
      if values[i] then
        entries[#entries + 1] = id
        entries[#entries + 1] = values[i]
      end
    end
  end
  return {ids, entries, redis.call('SMEMBERS', open)}
end
"""

PREPARE_LUA = """
-- Load a message for processing, resolve its customer, and read that customer's open-case
-- fingerprints (the repeat-report candidates), in one round trip.
-- KEYS: msg; ARGV: 1 new customer id (used when nobody knows the sender), 2 contact key head (the
--       contact's kind:value follows), 3 now ms, then head and tail of a customer's keys (the customer
--       id goes between): 4, 5 history; 6, 7 contacts; 8, 9 open-case fingerprints
-- The customer is the sender contact's; else that of a contact the channel vouches for (the
-- app says "this user's phone is P" and P wrote by SMS before); else a new one. Vouched-for
-- contacts nobody owns yet join the customer; each link is written to the customer's history.
local f = redis.call('HMGET', KEYS[1], 'status', 'data', 'channel', 'contact', 'vouched', 'complaint_id', 'nodedup')
if not f[1] then return {'missing'} end
if f[1] == 'processed' or f[1] == 'quarantined' then return {f[1], f[6] or ''} end
local cust = ''
local fps = {}
if f[4] and f[4] ~= '' then
  local vouched = {}
  if f[5] and f[5] ~= '' then
    for label in string.gmatch(f[5], '[^\\n]+') do table.insert(vouched, label) end
  end
  local contact_key = ARGV[2] .. f[4]
  cust = redis.call('GET', contact_key)
  local how = 'channel'
  if not cust then
    for _, label in ipairs(vouched) do
      cust = redis.call('GET', ARGV[2] .. label)
      if cust then how = 'vouched:' .. label break end
    end
  end
  if not cust then
    cust = ARGV[1]
    how = 'new'
  end
  local history = ARGV[4] .. cust .. ARGV[5]
  local contacts = ARGV[6] .. cust .. ARGV[7]
  if redis.call('SET', contact_key, cust, 'NX') then
    redis.call('SADD', contacts, f[4])
    redis.call('RPUSH', history, cjson.encode({at_ms = tonumber(ARGV[3]), action = 'linked', contact = f[4],
                                               by = 'system', reason = how}))
  end
  for _, label in ipairs(vouched) do
    local key = ARGV[2] .. label
    if redis.call('SET', key, cust, 'NX') then
      redis.call('SADD', contacts, label)
      redis.call('RPUSH', history, cjson.encode({at_ms = tonumber(ARGV[3]), action = 'linked', contact = label,
                                                 by = 'system', reason = 'vouched by ' .. f[3]}))
    end
  end
  fps = redis.call('HGETALL', ARGV[8] .. cust .. ARGV[9])
end
return {f[1], f[2] or '', f[3] or '', cust, f[7] or '', fps}
"""

STATUS_LUA = """
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

CASE_BLOCK_LUA = """
-- A block of case numbers for one process: the day's sequence moved on by ARGV[1] (a retried job
-- takes the next free number; a number of a block a process did not use is never given out).
-- KEYS: day sequence; ARGV: block size, expiry s (set once, when the day's first block is taken)
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
"""

COMMIT_LUA = INCIDENT_NOTE_FN + """
-- Open a complaint for a message, once (a retried job opens nothing twice), and note it in its
-- category's incident window.
-- KEYS: 1 msg, 2 complaint, 3 pending, 4 case sequence, 5 queue, 6 queue age, 7 first-response due,
--       8 idx all, 9 idx status, 10 idx category, 11 idx customer, 12 idx channel, 13 idx skill,
--       14 skills, 15 outbox, 16 arq queue, 17 wake, 18 the customer's open-case fingerprints, 19 timers,
--       20, 21, 22 the category's incident window: recent, texts, open incidents
-- ARGV: 1 complaint id, 2 complaint record, 3 case number, 4 yyyymmdd, 5 created ms, 6 queue score,
--       7 first-response due ms ('' = none), 8 message id, 9 outbox member ('' = none), 10 outbox due ms,
--       11 case key prefix, 12 skill ('' = none), 13 wake ('1'/'0'; '2': wake, and the skill is known
--       to be in the skills set already), 14 job count, then per job:
--       job key, job id, job bytes, score, expiry ms; then the fingerprint ('' = none), the timer
--       count and per timer: member, due ms; then the incident note's 6 values after the complaint
--       id (note_incident's a[2..7]; its entry '' = the text is too short to compare: not noted)
-- Returns {'already', complaint id, case} or {'created', complaint id, case, note_incident's answer
-- (or nothing)}.
local state = redis.call('HMGET', KEYS[1], 'status', 'complaint_id', 'case_number', 'received_ms', 'channel')
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
  if ARGV[13] ~= '2' then redis.call('SADD', KEYS[14], ARGV[12]) end
  redis.call('ZADD', KEYS[5], ARGV[6], cid)
  redis.call('ZADD', KEYS[6], created, cid)
  if ARGV[7] ~= '' then redis.call('ZADD', KEYS[7], ARGV[7], cid) end
end
-- the complaint holds the text now: the message record keeps only where it went (rewritten,
-- not HDEL'd, so that Redis gives the larger allocation back)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'processed', 'complaint_id', cid, 'case_number', case,
           'received_ms', state[4] or '0', 'channel', state[5] or '')
redis.call('ZREM', KEYS[3], ARGV[8])
if ARGV[9] ~= '' then redis.call('ZADD', KEYS[15], ARGV[10], ARGV[9]) end
local n = tonumber(ARGV[14])
for j = 0, n - 1 do
  local b = 15 + j * 5
  redis.call('PSETEX', ARGV[b], ARGV[b + 4], ARGV[b + 2])
  redis.call('ZADD', KEYS[16], ARGV[b + 3], ARGV[b + 1])
end
if n > 0 and ARGV[13] == '1' and redis.call('LLEN', KEYS[17]) == 0 then
  redis.call('LPUSH', KEYS[17], '1')
end
local fp = ARGV[15 + n * 5]
if fp and fp ~= '' then redis.call('HSET', KEYS[18], cid, fp) end
local t0 = 16 + n * 5
local timers = tonumber(ARGV[t0] or '0')
if timers > 0 then
  local pairs_ = {}
  for j = 0, timers - 1 do
    pairs_[#pairs_ + 1] = ARGV[t0 + 1 + j * 2 + 1]
    pairs_[#pairs_ + 1] = ARGV[t0 + 1 + j * 2]
  end
  redis.call('ZADD', KEYS[19], unpack(pairs_))
end
local i0 = t0 + 1 + timers * 2
if ARGV[i0] and ARGV[i0] ~= '' then
  local w = note_incident(KEYS[20], KEYS[21], KEYS[22], {cid, ARGV[i0], ARGV[i0 + 1], ARGV[i0 + 2], ARGV[i0 + 3],
                                                          ARGV[i0 + 4], ARGV[i0 + 5]})
  return {'created', cid, case, w[1], w[2], w[3]}
end
return {'created', cid, case}
"""

CLAIM_LUA = """
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

REQUEUE_EXPIRED_LUA = """
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

INCIDENT_NOTE_LUA = INCIDENT_NOTE_FN + """
-- The incident check's own note (a re-run, or a complaint whose commit did not note it).
-- KEYS: 1 recent, 2 texts, 3 the category's open incidents, 4 the incident this complaint forms
-- ARGV: as note_incident's a (see above)
-- Returns {'formed'} when the incident exists already (an earlier run of the same check), else
-- {'ok', kept ids, entries noted since, open incident ids}.
if redis.call('EXISTS', KEYS[4]) == 1 then return {'formed'} end
local w = note_incident(KEYS[1], KEYS[2], KEYS[3], ARGV)
return {'ok', w[1], w[2], w[3]}
"""

__all__ = ["CASE_BLOCK_LUA", "CLAIM_LUA", "COMMIT_LUA", "INCIDENT_NOTE_FN", "INCIDENT_NOTE_LUA", "INTAKE_LUA", "PREPARE_LUA", "REQUEUE_EXPIRED_LUA", "STATUS_LUA"]
