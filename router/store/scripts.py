"""The store's Lua scripts: each is one atomic step in Redis (what its header says it takes).

A script that only learns a key's variable part as it runs (the customer a message resolves to,
the skill of an expired lease) is given that key's head and tail from ``Keys`` (keys.py), so the
layout is still named in one place. ``ComplaintStore.bind`` registers the store's; ``Incidents``
registers the incident note and join; ``LINK_LUA`` (rare: an incident forming) and
``READ_WITH_LINK_LUA`` (inside an update's WATCH) are sent with EVAL.
"""

from __future__ import annotations

from router.store.codec import INCIDENT_LINK
from router.store.incident_scripts import (
    INCIDENT_LINK_FN,
    INCIDENT_NOTE_FN,
    INCIDENT_NOTE_LUA,
    JOIN_IF_OPEN_LUA,
    LINK_LUA,
    NO_TEXTS_SINCE,
    OPEN_VERSION_FIELD,
    SEQ_FIELD,
    SWEPT_FIELD,
)
from router.store.intake_script import INTAKE_LUA

PREPARE_LUA = """
-- Load messages for processing, resolve each one's customer, and read that customer's open-case
-- fingerprints (the repeat-report candidates), in one round trip for as many messages as the
-- worker's jobs load at the same time (a group: each message on its own, in order, with its own
-- answer).
-- KEYS: the messages; ARGV: 1 contact key head (the contact's kind:value follows), 2 now ms, then
--       head and tail of a customer's keys (the customer id goes between): 3, 4 history; 5, 6
--       contacts; 7, 8 open-case fingerprints; then the sender's lock: 9 lock key head, 10
--       after-resolved key head (the sender's kind:value follows each); then per message (KEYS'
--       order) three: new customer id (used when nobody knows the sender), lock token, lock ms
--       ('' = take no lock)
-- One message at a time per sender: the sender's lock is taken here first (or extended, when this
-- holder has it already); held by another: {'locked'}, nothing done. Under the lock it also reads
-- which resolved case the sender's next message answers (survey or reopening).
-- The customer is the sender contact's; else that of a contact the channel vouches for (the
-- app says "this user's phone is P" and P wrote by SMS before); else a new one. Vouched-for
-- contacts nobody owns yet join the customer; each link is written to the customer's history.
-- Answers one reply per message, as prepare_one's (or {'error', why}: that message's own failure).
-- In three steps, each message in order within each: its record read and its sender's lock taken;
-- then, for all the locked ones at once, one MGET of what each sender's next message answers and of
-- its sender's customer; then the rest. (A contact an earlier message of the call linked is known
-- to the later ones as written: ``wrote``.)
local wrote = {}
local function load_one(msg, token, lockms)
  local f = redis.call('HMGET', msg, 'status', 'data', 'channel', 'contact', 'vouched', 'complaint_id', 'nodedup')
  if not f[1] then return {'missing'} end
  if f[1] == 'processed' or f[1] == 'quarantined' then return {f[1], f[6] or ''} end
  f.locked = false
  if lockms and lockms ~= '' and f[4] and f[4] ~= '' then
    local lock = ARGV[9] .. f[4]
    if not redis.call('SET', lock, token, 'NX', 'PX', lockms) then
      if redis.call('GET', lock) ~= token then return {'locked'} end
      redis.call('PEXPIRE', lock, lockms)
    end
    f.locked = true
  end
  return nil, f
end
local function prepare_one(f, newcus, after, known)
  local cust = ''
  local fps = {}
  if f[4] and f[4] ~= '' then
    local vouched = {}
    if f[5] and f[5] ~= '' then
      for label in string.gmatch(f[5], '[^\\n]+') do table.insert(vouched, label) end
    end
    local contact_key = ARGV[1] .. f[4]
    if wrote[contact_key] then cust = wrote[contact_key]
    elseif known == nil then cust = redis.call('GET', contact_key) else cust = known end
    local how = 'channel'
    if not cust then
      for _, label in ipairs(vouched) do
        cust = redis.call('GET', ARGV[1] .. label)
        if cust then how = 'vouched:' .. label break end
      end
    end
    if not cust then
      cust = newcus
      how = 'new'
    end
    local history = ARGV[3] .. cust .. ARGV[4]
    local contacts = ARGV[5] .. cust .. ARGV[6]
    if redis.call('SET', contact_key, cust, 'NX') then
      wrote[contact_key] = cust
      redis.call('SADD', contacts, f[4])
      redis.call('RPUSH', history, cjson.encode({at_ms = tonumber(ARGV[2]), action = 'linked', contact = f[4],
                                                 by = 'system', reason = how}))
    end
    for _, label in ipairs(vouched) do
      local key = ARGV[1] .. label
      if redis.call('SET', key, cust, 'NX') then
        wrote[key] = cust
        redis.call('SADD', contacts, label)
        redis.call('RPUSH', history, cjson.encode({at_ms = tonumber(ARGV[2]), action = 'linked', contact = label,
                                                   by = 'system', reason = 'vouched by ' .. f[3]}))
      end
    end
    if how ~= 'new' then fps = redis.call('HGETALL', ARGV[7] .. cust .. ARGV[8]) end  -- (a new customer has none)
  end
  return {f[1], f[2] or '', f[3] or '', cust, f[7] or '', fps, after, f[4] or ''}
end
-- a command that fails (a key of the wrong type, a record missing a field) fails its own message
-- only: {'error', why}
local function failed(res)
  return {'error', type(res) == 'table' and (res.err or 'ERR') or tostring(res)}
end
local out, loaded, locked, keys = {}, {}, {}, {}
for n = 1, #KEYS do
  local a = 10 + (n - 1) * 3
  local ok, res, f = pcall(load_one, KEYS[n], ARGV[a + 2], ARGV[a + 3])
  if not ok then
    out[n] = failed(res)
  elseif res then
    out[n] = res
  else
    loaded[n] = f
    if f.locked then
      locked[#locked + 1] = n
      keys[#keys + 1] = ARGV[10] .. f[4]
      keys[#keys + 1] = ARGV[1] .. f[4]
    end
  end
end
local read = {}  -- per locked message: {after, known}
if #locked > 0 then
  local got = redis.call('MGET', unpack(keys))
  for j, n in ipairs(locked) do read[n] = {got[2 * j - 1] or '', got[2 * j]} end
end
for n = 1, #KEYS do
  local f = loaded[n]
  if f then
    local r = read[n] or {''}
    local ok, res = pcall(prepare_one, f, ARGV[10 + (n - 1) * 3 + 1], r[1], r[2])
    out[n] = ok and res or failed(res)
  end
end
return out
"""

STATUS_LUA = """
-- Delivery states that only move forward, for as many replies as are recorded at the same time,
-- and the senders' locks their jobs let go once their replies went out.
-- KEYS: 1 outbox, then per reply its complaint's delivery hash, then the senders' locks
-- ARGV: 1 how many replies, then per reply: reply id, new state json, new rank, outbox member;
--   then per lock its holder's token (each lets go only by its holder)
-- A reply whose recorded state ranks as high already keeps it (answer 0); else the new state is
-- written (1) and, sent or after, the reply leaves the outbox. Answers 0 / 1 per reply.
local ranks = {queued = 0, sent = 1, delivered = 2, read = 3, failed = 4}
local replies = tonumber(ARGV[1])
local out, gone = {}, {}
for n = 1, replies do
  local a = 1 + (n - 1) * 4
  local key, id, rank = KEYS[n + 1], ARGV[a + 1], tonumber(ARGV[a + 3])
  -- a reply's first state (the common case) is one HSETNX; else the recorded one is compared
  local first = redis.call('HSETNX', key, id, ARGV[a + 2]) == 1
  local cur = (not first) and redis.call('HGET', key, id)
  local keep = false
  if cur then
    local ok, old = pcall(cjson.decode, cur)
    if ok and type(old) == 'table' and (ranks[old['delivery']] or 0) >= rank then keep = true end
  end
  if keep then
    out[n] = 0
  else
    if not first then redis.call('HSET', key, id, ARGV[a + 2]) end
    if rank > 0 then gone[#gone + 1] = ARGV[a + 4] end
    out[n] = 1
  end
end
if #gone > 0 then redis.call('ZREM', KEYS[1], unpack(gone)) end
if #KEYS > replies + 1 then
  local locks, mine = {}, {}
  for n = replies + 2, #KEYS do locks[#locks + 1] = KEYS[n] end
  local held = redis.call('MGET', unpack(locks))
  for n, key in ipairs(locks) do
    if held[n] == ARGV[1 + replies * 4 + n] then mine[#mine + 1] = key end
  end
  if #mine > 0 then redis.call('DEL', unpack(mine)) end
end
return out
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
-- Open complaints for messages, each once (a retried job opens nothing twice), in one step for
-- as many as the worker's jobs commit at the same time (a group commit): the writes to shared
-- keys (indexes, queues, timers, the outbox, the pending set) are one command per key for all.
-- KEYS: 1 pending, 2 skills, 3 outbox, 4 arq queue, 5 wake, 6 timers, then every key an entry
--   touches (declared, so that Redis Cluster refuses the whole call, TRYAGAIN / ASK, while the
--   desk's slot is moving, instead of running it half here)
-- ARGV: 1 wake ('1'/'0'), then per complaint: its entry (a msgpack map; msgpack's Lua decoder
--   takes no binary values, so each binary value is an ARGV of its own: the entry's count of them
--   follows it, then they, and the map names them by their number among them, 1 first): msg (key),
--   mid, cid, key (the complaint's), body (binary), case, case_key, created (ms), idx (index keys the
--   complaint joins), skill ('' = none) with queue, qscore, age (queue-age key), frdue_key, frdue
--   ('' = none), new_skill (true: add to the skills set); outbox ('' = none), outbox_due; jobs
--   ({key, id, bytes (binary), score, expiry ms} each); open (the customer's open-case key), fp
--   (binary; 0 = none); timers ({due, member, ...}); note (absent: not noted; else {recent, texts,
--   open, notes, entry, now, start, most, since, sweep, the open incidents' version the caller has});
--   chan: the message's channel as its record holds it (written back with the processed mark, and
--   created as its received_ms, when the record was not read)
-- Returns per entry {'already', complaint id, case}, {'case_taken'} (its case number belongs to
-- another complaint: a process's block outlived a failover that lost the sequence's writes; take
-- another number) or {'created', complaint id, case[, the incident window of its category as
-- window_note answers it, when noted; for the second and later entries of one category
-- in the call, instead, the place in this answer (1 first) of the entry that carries it]}.
-- Order: every check first, then the complaints and what points to them, and only last the
-- messages marked processed (an error half-way leaves them to a retry, which redoes it all).
local z, zkeys = {}, {}
local function zadd(key, score, member)
  local t = z[key]
  if not t then t = {}; z[key] = t; zkeys[#zkeys + 1] = key end
  t[#t + 1] = score
  t[#t + 1] = member
end
local mset, done, skills, out, marks = {}, {}, {}, {}, {}
local notes, nkeys = {}, {}
local jobs = 0
local taken = {}  -- message keys opened by this call (the same message twice in one call: once)
local entries, cases, casing, case_keys = {}, {}, {}, {}
local distinct = true  -- (two entries drawing one number, a stale block's and a new one's: each on its own)
local firsts, seen = {}, {}  -- each message's first entry: its complaint's key and body
local i = 2
while i <= #ARGV do
  local e = cmsgpack.unpack(ARGV[i])
  e.b0 = i + 1  -- the entry's binary values are ARGV[e.b0 + n]
  i = i + 2 + tonumber(ARGV[i + 1])
  entries[#entries + 1] = e
  if not seen[e.msg] then
    seen[e.msg] = true
    firsts[#firsts + 1] = e.key
    firsts[#firsts + 1] = ARGV[e.b0 + e.body]
  end
end
-- the usual case first: none of the call's complaints exists yet. Their bodies are written at once
-- (MSETNX: all or none), and their messages' records need not be read: a message is marked
-- processed only with its complaint written (below), and its complaint's id is its own
-- (router.jobs.complaint_id_for), so none of them was. Else (a job run again, a message split off
-- a case again, a case number taken below) each message's record is read and decides, as alone.
local written = {}  -- complaint keys this call wrote ahead (false: taken back)
if redis.call('MSETNX', unpack(firsts)) == 1 then
  for n = 1, #firsts, 2 do written[firsts[n]] = true end
end
for _, e in ipairs(entries) do
  if written[e.key] then  -- (a new complaint's time is its message's)
    e.st = {'received', false, false, e.created, e.chan}
  else
    e.st = redis.call('HMGET', e.msg, 'status', 'complaint_id', 'case_number', 'received_ms', 'channel')
  end
  if e.st[1] ~= 'processed' and not casing[e.msg] then
    casing[e.msg] = e
    if case_keys[e.case_key] then distinct = false end
    case_keys[e.case_key] = true
    cases[#cases + 1] = e.case_key
    cases[#cases + 1] = e.cid
  end
end
-- the case numbers of the call's new complaints (each message's first entry): one MSETNX when
-- none is taken and no two are the same (the usual case); otherwise each is checked on its own
-- below, as if alone
if #cases > 2 and distinct and redis.call('MSETNX', unpack(cases)) == 1 then
  for _, e in pairs(casing) do e.case_set = true end
end
for _, e in ipairs(entries) do
  local st, b0 = e.st, e.b0
  if st[1] == 'processed' then
    out[#out + 1] = {'already', st[2] or '', st[3] or ''}
  elseif taken[e.msg] then
    out[#out + 1] = {'already', taken[e.msg][1], taken[e.msg][2]}
  elseif not e.case_set and not redis.call('SET', e.case_key, e.cid, 'NX')
      and redis.call('GET', e.case_key) ~= e.cid then
    if written[e.key] then  -- (its body, written ahead, carries the taken number)
      redis.call('DEL', e.key)
      written[e.key] = false
    end
    out[#out + 1] = {'case_taken'}
  else
    local cid = e.cid
    taken[e.msg] = {cid, e.case}
    if not written[e.key] then
      mset[#mset + 1] = e.key
      mset[#mset + 1] = ARGV[b0 + e.body]
    end
    for _, key in ipairs(e.idx) do zadd(key, e.created, cid) end
    if e.skill ~= '' then
      if e.new_skill then skills[#skills + 1] = e.skill end
      zadd(e.queue, e.qscore, cid)
      zadd(e.age, e.created, cid)
      if e.frdue ~= '' then zadd(e.frdue_key, e.frdue, cid) end
    end
    marks[#marks + 1] = {e.msg, cid, e.case, st[4] or '0', st[5] or ''}
    done[#done + 1] = e.mid
    if e.outbox ~= '' then zadd(KEYS[3], e.outbox_due, e.outbox) end
    for _, j in ipairs(e.jobs) do
      redis.call('PSETEX', j[1], j[5], ARGV[b0 + j[3]])
      zadd(KEYS[4], j[4], j[2])
      jobs = jobs + 1
    end
    if e.fp > 0 then redis.call('HSET', e.open, cid, ARGV[b0 + e.fp]) end
    for t = 1, #e.timers, 2 do zadd(KEYS[6], e.timers[t], e.timers[t + 1]) end
    out[#out + 1] = {'created', cid, e.case}
    if e.note then
      local nt = e.note
      local w = notes[nt[1]]
      if not w then
        w = {texts = nt[2], open = nt[3], notes = nt[4], fields = {}, scores = {},
             a = {nt[7], nt[8], nt[9], nt[10], nt[11]}, outs = {}}
        notes[nt[1]] = w
        nkeys[#nkeys + 1] = nt[1]
      end
      if tonumber(nt[9]) < tonumber(w.a[3]) then w.a[3] = nt[9] end
      if nt[10] == '1' then w.a[4] = '1' end
      if nt[11] ~= w.a[5] then w.a[5] = '-' end  -- (notes that had the open incidents as different versions: read)
      zadd(nt[1], nt[6], cid)
      w.fields[#w.fields + 1] = cid
      w.fields[#w.fields + 1] = nt[5]
      w.scores[#w.scores + 1] = nt[6]
      w.outs[#w.outs + 1] = #out
    end
  end
end
if #mset > 0 then redis.call('MSET', unpack(mset)) end
for _, key in ipairs(zkeys) do redis.call('ZADD', key, unpack(z[key])) end
if #skills > 0 then redis.call('SADD', KEYS[2], unpack(skills)) end
if jobs > 0 and ARGV[1] == '1' and redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], '1') end
for _, recent in ipairs(nkeys) do
  local w = notes[recent]
  local window = window_note(recent, w.texts, w.open, w.notes, w.a, w.fields, w.scores)
  -- the window goes out once, with the first entry of the category; the others name that entry
  -- (its place in the answer)
  for n, o in ipairs(w.outs) do
    out[o][4] = n == 1 and window or w.outs[1]
  end
end
-- the complaint holds the text now: the message record keeps only where it went (rewritten,
-- not HDEL'd, so that Redis gives the larger allocation back; the call's records removed by one DEL)
if #marks > 0 then
  local gone = {}
  for n, m in ipairs(marks) do gone[n] = m[1] end
  redis.call('DEL', unpack(gone))
end
for _, m in ipairs(marks) do
  redis.call('HSET', m[1], 'status', 'processed', 'complaint_id', m[2], 'case_number', m[3], 'received_ms', m[4],
             'channel', m[5])
end
if #done > 0 then redis.call('ZREM', KEYS[1], unpack(done)) end
return out
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

READ_WITH_LINK_LUA = """
-- Complaints and their incident links, in one round trip (an update's read, under WATCH: sent
-- with EVAL, not registered). KEYS: a complaint, then its delivery hash, for each complaint read.
-- Answers each complaint and its links (nil: none), in that order.
local out = {}
for i = 1, #KEYS, 2 do
  out[i] = redis.call('GET', KEYS[i])
  out[i + 1] = redis.call('HGET', KEYS[i + 1], 'INCIDENT_LINK')
end
return out
""".replace("INCIDENT_LINK", INCIDENT_LINK)

__all__ = [
    "CASE_BLOCK_LUA", "CLAIM_LUA", "COMMIT_LUA", "INCIDENT_LINK_FN", "INCIDENT_NOTE_FN", "INCIDENT_NOTE_LUA",
    "INTAKE_LUA", "JOIN_IF_OPEN_LUA", "LINK_LUA", "NO_TEXTS_SINCE", "OPEN_VERSION_FIELD", "PREPARE_LUA",
    "READ_WITH_LINK_LUA", "REQUEUE_EXPIRED_LUA", "SEQ_FIELD", "STATUS_LUA", "SWEPT_FIELD",
]
