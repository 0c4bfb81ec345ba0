"""The incident window's and incident links' Lua scripts (re-exported by ``router.store.scripts``):
noting complaints in their category's window and reading the window back (``INCIDENT_NOTE_FN``,
which the complaint commit runs too), joining an open incident, linking a complaint to one.
``router.incidents`` says how the window is kept and read."""

from __future__ import annotations

from router.store.codec import INCIDENT_LINK

#: The field of a category's incident texts hash that holds the version of its open incidents
#: (a new token whenever an incident of the category opens or closes: ``Incidents.open_changed``).
OPEN_VERSION_FIELD = "~open"
#: The field of a category's incident texts hash that holds the latest start a sweep removed
#: entries older than, and the one that holds the number of its last note (beside the open
#: incidents' version: one read a note gets all three, and one write notes its texts and number).
SWEPT_FIELD = "~swept"
SEQ_FIELD = "~n"
#: The texts hash's own fields (every other field is a complaint id).
OWN_FIELDS = (OPEN_VERSION_FIELD, SWEPT_FIELD, SEQ_FIELD)
#: An incident note's "since" that asks for no texts (a process that found nobody else noting in
#: the window last time: its window read skips counting what was noted since; an id it does not
#: know is read by id all the same): later than any time, so merged notes take the earliest.
NO_TEXTS_SINCE = 2 ** 53

INCIDENT_NOTE_FN = """
-- A category's incident window: recent (sorted set: complaint id by time), texts (hash: complaint
-- id -> customer TAB tokens; in its field OPEN_VERSION the open incidents' version, in SWEPT the
-- latest start a sweep removed entries older than, in SEQ the number of the category's last note:
-- a note reads the three in one HMGET and writes its number with its texts), open (the category's
-- open incidents, a set), notes (hash: n, where versions before this one kept the last note's
-- number: read once, when SEQ is not there yet, so that the numbers go on).
-- window_note: note complaints (their ZADD to recent done by the caller): their texts, under one
-- new number of the category's notes, then read the window back (and, when asked, remove what
-- left it). fields: {id, customer TAB tokens, ...}; a: {start ms (older leaves), most kept, since
-- ms (the texts of entries noted from then on are returned; NO_TEXTS_SINCE: none), sweep ('1':
-- remove what left the window, and a bounded number of text entries whose complaint left it
-- without its text being dropped), the open incidents' version the caller has them as ('-': it
-- has none)}.
-- Returns {how many the window holds (the newest `most` younger than start), {id, entry, score,
-- ...} noted since and not by this call, open incident ids (false: the caller's are current, their
-- version unchanged), the open incidents' version, this note's number, the id and score of the
-- window's oldest entry when the window is full (false, false: not full), start (the latest a
-- sweep used, if later than the caller's), {id, score, ...} of those this call noted}. scores:
-- the noted's scores as the caller set them (false: read).
-- The window's ids are not sent (~300 of them, read and parsed on every note): the caller knows
-- the entries it was told of, each with its score and the number of a note it had landed by, and
-- keeps those landed by this note, younger than start and not older than the oldest entry; when
-- it finds as many as the window holds, they are the window (an entry leaves it only by time —
-- older than a start a sweep used, and every later window's start is at least that — or by rank
-- below its oldest entry, and a note again keeps the score of an entry still in the set); else it
-- reads the window's ids (Incidents._window). Not covered: a version before this one noting or
-- sweeping beside it (a rolling upgrade: it moves scores and records no sweep's start), and a
-- failover that loses writes (numbers may repeat); the count then may match a wrong set until
-- those entries leave the window.
-- What left the window is never returned, but removed only when a note asks (about one in
-- SWEEP_EVERY, by its complaint id: router/incidents.py), not on every note.
local OPEN_VERSION = 'OPEN_VERSION_FIELD'
local SWEPT = 'SWEPT_FIELD_NAME'
local SEQ = 'SEQ_FIELD_NAME'
local own_fields = {[OPEN_VERSION] = true, [SWEPT] = true, [SEQ] = true}
local NO_TEXTS_SINCE = NO_TEXTS_SINCE_VALUE
local SWEEP_MOST = 1000  -- removed by one sweep at most (a backlog left by a quiet hour goes in steps)
local function window_note(recent, texts, open, notes, a, fields, scores)
  local most = tonumber(a[2])
  local heads = redis.call('HMGET', texts, OPEN_VERSION, SWEPT, SEQ)
  local version, swept = heads[1] or '', heads[2]
  local seq = tonumber(heads[3] or redis.call('HGET', notes, 'n') or 0) + 1
  local own = {}
  for f = 1, #fields, 2 do own[fields[f]] = true end
  redis.call('HSET', texts, SEQ, string.format('%d', seq), unpack(fields))
  if a[4] == '1' then
    -- what left the window (older than its start, or beyond the most kept: the oldest), removed
    -- now and then, when the caller asks; then stale texts
    local drop = math.min(SWEEP_MOST, math.max(0, redis.call('ZCARD', recent) - most,
                                               redis.call('ZCOUNT', recent, '-inf', a[1])))
    if drop > 0 then
      redis.call('HDEL', texts, unpack(redis.call('ZRANGE', recent, 0, drop - 1)))
      redis.call('ZREMRANGEBYRANK', recent, 0, drop - 1)
      -- no later window starts before this one (what it removed by time was older); a start
      -- ahead of Redis's clock (a process whose clock runs fast) counts as Redis's now
      local t = redis.call('TIME')
      local mark = math.min(tonumber(a[1]), tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
      if not swept or tonumber(swept) < mark then
        swept = string.format('%d', mark)
        redis.call('HSET', texts, SWEPT, swept)
      end
    end
    if redis.call('HLEN', texts) > 2 * most then
      local page = redis.call('HSCAN', texts, 0, 'COUNT', 500)[2]
      for i = 1, #page, 2 do
        if not own_fields[page[i]] and not redis.call('ZSCORE', recent, page[i]) then
          redis.call('HDEL', texts, page[i])
        end
      end
    end
  end
  local start = a[1]
  if swept and tonumber(swept) > tonumber(start) then start = swept end
  -- the window: the newest `most`, younger than its start; when as many or more are younger, its
  -- oldest (by rank: the `most` newest are all younger then; whatever a sweep took by rank was
  -- older than it, and an entry older than it never comes back into a window)
  local held, floor_id, floor_score = most, false, false
  local f = redis.call('ZRANGE', recent, most - 1, most - 1, 'REV', 'WITHSCORES')
  if f[1] and tonumber(f[2]) > tonumber(start) then
    floor_id, floor_score = f[1], f[2]
  else  -- fewer than `most` are younger
    held = redis.call('ZCOUNT', recent, '(' .. start, '+inf')
  end
  -- those noted since the caller last looked, but by this call, with their scores
  local fresh = {}
  if tonumber(a[3]) < NO_TEXTS_SINCE and held > 0 then
    local low = tonumber(a[3]) > tonumber(start) and a[3] or '(' .. start
    local got = redis.call('ZRANGE', recent, '+inf', low, 'BYSCORE', 'REV', 'LIMIT', 0, most, 'WITHSCORES')
    for i = 1, #got, 2 do
      if not own[got[i]] then
        fresh[#fresh + 1] = got[i]
        fresh[#fresh + 1] = got[i + 1]
      end
    end
  end
  -- the noted still in the window's set (a sweep may have taken one noted again from long
  -- before), with their scores
  local landed = {}
  for f = 1, #fields, 2 do
    local score = scores[(f + 1) / 2] or redis.call('ZSCORE', recent, fields[f])
    if score then
      landed[#landed + 1] = fields[f]
      landed[#landed + 1] = score
    end
  end
  -- the new texts (the open incidents' version was read first); the open incidents themselves
  -- only when their version is not the caller's
  local entries = {}
  if #fresh > 0 then
    local want = {}
    for i = 1, #fresh, 2 do want[#want + 1] = fresh[i] end
    local values = redis.call('HMGET', texts, unpack(want))
    for i, id in ipairs(want) do
      if values[i] then
        entries[#entries + 1] = id
        entries[#entries + 1] = values[i]
        entries[#entries + 1] = fresh[i * 2]
      end
    end
  end
  local open_ids = false
  if version ~= a[5] then open_ids = redis.call('SMEMBERS', open) end
  return {held, entries, open_ids, version, seq, floor_id, floor_score, start, landed}
end
""".replace("OPEN_VERSION_FIELD", OPEN_VERSION_FIELD).replace("SWEPT_FIELD_NAME", SWEPT_FIELD).replace(
    "SEQ_FIELD_NAME", SEQ_FIELD).replace("NO_TEXTS_SINCE_VALUE", str(NO_TEXTS_SINCE))

INCIDENT_NOTE_LUA = INCIDENT_NOTE_FN + """
-- The incident check's own note (a re-run, or a complaint whose commit did not note it).
-- KEYS: 1 recent, 2 texts, 3 the category's open incidents, 4 notes, 5 the incident this
--   complaint forms
-- ARGV: 1 complaint id, 2 its entry (customer TAB tokens), 3 its time (ms), then window_note's a
-- Returns {'formed'} when the incident exists already (an earlier run of the same check), else
-- {'ok', the window as window_note answers it}: a complaint still in the window's set keeps its
-- score (its place: an entry in the window never moves, see window_note).
if redis.call('EXISTS', KEYS[5]) == 1 then return {'formed'} end
redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[1])
return {'ok', window_note(KEYS[1], KEYS[2], KEYS[3], KEYS[4], {ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]},
                          {ARGV[1], ARGV[2]}, {false})}
"""

INCIDENT_LINK_FN = """
-- A complaint's incident links: field LINK_FIELD of its delivery hash, a JSON list of
-- {incident_id, at}, oldest first, the last its incident (codec.with_link merges them in on read).
-- add_link appends one unless the last names that incident already (a check run again keeps the
-- first time), or, with only_if_none, unless there is any. Answers 1 when it added it.
local LINK_FIELD = 'INCIDENT_LINK'
local function add_link(key, incident_id, link, only_if_none)
  local old = redis.call('HGET', key, LINK_FIELD)
  local links = {}
  if old then
    if only_if_none then return 0 end
    local ok, decoded = pcall(cjson.decode, old)
    if ok and type(decoded) == 'table' then
      if decoded['incident_id'] ~= nil then links = {decoded} else links = decoded end  -- (one link alone)
    end
  end
  local last = links[#links]
  if type(last) == 'table' and last['incident_id'] == incident_id then return 0 end
  links[#links + 1] = cjson.decode(link)
  redis.call('HSET', key, LINK_FIELD, cjson.encode(links))
  return 1
end
""".replace("INCIDENT_LINK", INCIDENT_LINK)

JOIN_IF_OPEN_LUA = INCIDENT_LINK_FN + """
-- Complaints join incidents, each only while its incident is open, and are linked to them: the
-- joins one process asks for at the same time, in one call (router.incidents: a GroupCommit).
-- KEYS, four an entry: 1 the category's open incidents, 2 the incident's complaints, 3 the
-- complaint's delivery hash, 4 the incident; ARGV, three an entry: 1 incident id, 2 complaint id,
-- 3 the link. Answers, an entry each: 0 (closed meanwhile), {1} (joined), or {1, the incident} when
-- the incident has been answered already (the complaint gets that answer). An incident that the
-- call's entries share is read and decoded once.
local out = {}
local answered = {}  -- incident key -> the incident when it has an answer, else false
for i = 0, #KEYS / 4 - 1 do
  local k, a = i * 4, i * 3
  if redis.call('SISMEMBER', KEYS[k + 1], ARGV[a + 1]) == 0 then
    out[i + 1] = 0
  else
    redis.call('SADD', KEYS[k + 2], ARGV[a + 2])
    add_link(KEYS[k + 3], ARGV[a + 1], ARGV[a + 3], false)
    local incident = answered[KEYS[k + 4]]
    if incident == nil then
      incident = false
      local raw = redis.call('GET', KEYS[k + 4])
      if raw then
        local ok, doc = pcall(cjson.decode, raw)
        if ok and type(doc) == 'table' and doc['answer'] ~= nil and doc['answer'] ~= cjson.null then
          incident = raw
        end
      end
      answered[KEYS[k + 4]] = incident
    end
    if incident then out[i + 1] = {1, incident} else out[i + 1] = {1} end
  end
end
return out
"""

LINK_LUA = INCIDENT_LINK_FN + """
-- Complaints linked to an incident (the forming of one: in its transaction).
-- KEYS: their delivery hashes; ARGV: 1 incident id, 2 the link, 3 '1': only those with no link yet
local added = 0
for _, key in ipairs(KEYS) do added = added + add_link(key, ARGV[1], ARGV[2], ARGV[3] == '1') end
return added
"""

__all__ = ["INCIDENT_LINK_FN", "INCIDENT_NOTE_FN", "INCIDENT_NOTE_LUA", "JOIN_IF_OPEN_LUA", "LINK_LUA",
           "NO_TEXTS_SINCE", "OPEN_VERSION_FIELD", "OWN_FIELDS", "SEQ_FIELD", "SWEPT_FIELD"]
