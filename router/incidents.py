"""Incidents: many different customers reporting the same fault in a short time (fifty "app
crashes when I pay" in ten minutes) are one problem on our side, not fifty cases to answer one
by one. Supervisors see the incident with its complaints and answer them all at once.

How a fault is recognised across wording and languages: each text becomes a set of tokens —
fault terms folded to one concept in both languages ("闪退", "崩溃", "crashed" → ``<crash>``),
Chinese characters one by one, English words — and two texts describe the same fault when their
token sets overlap enough (at least three shared tokens, and three quarters of the smaller set
or 40 % of the union). Only complaints of the same category in the window are compared.

Keys (named in router/store/keys.py; per category): ``inc:recent:<category>`` (sorted set of recent complaint ids by time),
``inc:text:<category>`` (complaint id → customer and tokens; the open incidents' version, the
latest start a sweep used and the number of the category's last note, in fields of their own),
``incidents:open:<category>``;
per incident: ``incident:<id>`` (JSON) and ``incident:<id>:complaints``; ``incidents`` indexes
them all by time.

Noting a complaint and reading its category's window back is one script
(``scripts.INCIDENT_NOTE_LUA``): it returns how many entries the window holds (and, full, its
oldest entry), only the texts noted since this process last looked (the others are kept here,
parsed, by complaint id, ``router.incident_window.Window``), and the category's open incidents,
whose sample tokens are kept here too (they never change). Which entries the window holds is
worked out here: each note has a number of its category's, each entry here its score and the
number of a note it had landed by (the note that told this process of it), and the window is the
entries landed by the note, younger than its start and not older than its oldest; if as many are
found as Redis counted, they are the window
(``Window.held``), else the window's ids are read, with the texts of those not known, in a second
round trip — so what is compared never depends on the texts a note returned. So a check costs
one round trip and compares token sets already parsed, instead of reading and parsing up to
``MAX_RECENT`` ids or texts. A process that found no entry it did not know in the window asks
for no texts (the note then counts nothing).

A complaint that joins or forms an incident is linked to it in the same step in Redis (the join
script, the forming transaction): the link is kept beside the complaint (``delivery:<cid>``, field
``store.INCIDENT_LINK``) and merged in whenever it is read, so an outage that links every new
complaint never rewrites one.

A new complaint is noted by the very commit that opens it (``router.cases.open_complaint`` passes
``note_args``; the commit answers the window), and the worker decides at once, after the
acknowledgement (``decide``: join an open incident, or form one). If Redis is away for that, the
message's job is retried and the check runs again then (``consider``: note again and decide) — so
it must be safe to run again: the incident a complaint forms is named after that complaint
(``inc_`` + the complaint id's suffix) and written in one transaction, and a re-run that finds it
answers it again with its complaints. A worker that dies in between leaves the complaint in the
window, where every later complaint of its category still compares with it.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
import zlib
from datetime import datetime, timezone
from itertools import filterfalse
from typing import Any, NamedTuple

import numpy as np

from plugins.locks import RedisLock
from router.incident_window import MIN_TOKENS, Window, parse_entry
from router.store import ComplaintStore, encode_incident_link
from router.store.group_commit import GroupCommit
from router.store.scripts import (INCIDENT_NOTE_LUA, JOIN_IF_OPEN_LUA, LINK_LUA, NO_TEXTS_SINCE, OPEN_VERSION_FIELD,
                                  SEQ_FIELD)
from normalizer.ids import new_id, now_ms
from normalizer.pii import mask_pii
from normalizer.text import literal_trie

CONCEPTS: dict[str, tuple[str, ...]] = {
    "<crash>": ("闪退", "崩溃", "死机", "卡死", "crash", "crashes", "crashed", "crashing", "force close", "freezes",
                "frozen screen"),
    "<pay>": ("付款", "支付", "付钱", "买单", "pay", "paying", "payment", "payments", "paid", "checkout"),
    "<login>": ("登录", "登陆", "log in", "login", "logging in", "sign in", "signin"),
    "<open>": ("打不开", "无法打开", "won't open", "cannot open", "can't open", "does not open", "doesn't open"),
    "<fail>": ("失败", "不成功", "failed", "fails", "failure", "error", "错误", "报错"),
    "<app>": ("app", "应用", "客户端", "application"),
    "<transfer>": ("转账", "transfer", "transfers", "transferring"),
    "<withdraw>": ("提现", "withdraw", "withdrawal", "cash out"),
    "<code>": ("验证码", "otp", "verification code", "sms code"),
    "<slow>": ("很慢", "卡顿", "slow", "lag", "lagging"),
    "<update>": ("更新", "升级", "update", "updated", "upgrade"),
    "<cannot>": ("不了", "无法", "不能", "cannot", "can't", "can not", "unable", "not able"),
}
STOP = {"a", "an", "the", "i", "my", "me", "it", "is", "was", "to", "on", "in", "at", "of", "and", "when", "while",
        "after", "again", "please", "help", "this", "that", "every", "time", "keeps", "just", "with", "for",
        "我", "的", "了", "在", "是", "就", "都", "一", "个", "你", "们", "吗", "呢", "啊", "吧", "时", "候", "请", "帮",
        "又", "总", "老", "这", "那", "一直", "还", "会", "就", "也", "要"}
#: each concept's words, the longest one at a place taken (``literal_trie``: what their alternation,
#: longest first, matches)
_CONCEPT_RE = re.compile(literal_trie([t for ts in CONCEPTS.values() for t in ts]))
_CANON = {t: c for c, ts in CONCEPTS.items() for t in ts}
_TOKEN = re.compile(r"<[a-z]+>|[a-z0-9]+|[\u4e00-\u9fff]")
MAX_RECENT = 300  # newest complaints compared per category and window (bounded work per complaint)
SAMPLES = 5
#: The script returns the texts noted from this long before this process last read the window
#: on (another worker's clock or commit a little behind; none when the process found nobody else
#: there last time); one noted earlier that this process has not seen is read by id, so the margin
#: only saves that round trip.
SYNC_MARGIN_MS = 2_000
#: About one note in this many (those whose complaint id hashes to 0: whichever process notes it,
#: however long it lives) also has what left its category's window removed (never read as in the
#: window, only kept until then: counting it on every note cost commands), and a bounded number of
#: stale text entries (left by versions that trimmed the window without dropping their texts).
SWEEP_EVERY = 32
#: A category's open incidents are read at least this often (seconds) even when their version did
#: not change: a process of a version before the version changes them without renewing it.
OPEN_READ_AT_LEAST_S = 10.0

class Decision(NamedTuple):
    """What the incident check decided: the incident a complaint joined or formed ("" for none),
    the complaints linked to it (linked already: the link is written with the joining or the
    forming), and the incident when its answer was given already (those complaints get it now)."""

    incident_id: str
    linked: list[str]
    answered: dict[str, Any] | None = None


NO_INCIDENT = Decision("", [])


class _WindowCache:
    """What this process has read of each category's window and of the open incidents."""

    def __init__(self) -> None:
        self.entries: dict[str, Window] = {}  # recent key -> the window as this process knows it
        self.synced: dict[str, int] = {}  # recent key -> now ms of the last read
        self.samples: dict[str, list[frozenset[str]]] = {}  # incident key -> its sample token sets
        #: open incidents key -> (their version, their ids, monotonic s when read): the note reads
        #: them again only when their version changed (``open_changed``) or the reading is
        #: ``OPEN_READ_AT_LEAST_S`` old (a process of an older version changes them without one)
        self.open: dict[str, tuple[str, list[str], float]] = {}
        #: recent key -> whether the window held no entry this process did not know when it last
        #: looked (then its next note asks for no texts: an id it does not know it reads by id)
        self.alone: dict[str, bool] = {}

    def window(self, recent: str) -> Window:
        """The window of ``recent`` as this process knows it, a new empty one the first time (made
        only then: a window is four arrays)."""
        window = self.entries.get(recent)
        if window is None:
            window = self.entries[recent] = Window()
        return window


_cache = _WindowCache()


def tokens(text: str) -> frozenset[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _CONCEPT_RE.sub(lambda m: f" {_CANON[m.group(0)]} ", text)
    found = set(_TOKEN.findall(text))  # (each token once before the checks: ~6 µs a text less)
    found -= STOP
    return frozenset(filterfalse(str.isdigit, found))  # (no Python frame a token)


def comparable_tokens(text: str) -> frozenset[str]:
    """The text's tokens, or none when they are too few to compare with others (shorter texts
    never join or form an incident)."""
    toks = tokens(text)
    return toks if len(toks) >= MIN_TOKENS else frozenset()


def formed_by(complaint_id: str) -> str:
    """The id of the incident ``complaint_id`` forms, if it forms one: the same on every run."""
    return "inc_" + complaint_id.split("_", 1)[-1]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def same_fault(a: frozenset[str], b: frozenset[str]) -> bool:
    return _alike(len(a & b), len(a), len(b))


def _alike(shared: int, n_a: int, n_b: int) -> bool:
    """Two token sets of ``n_a`` and ``n_b`` tokens, ``shared`` of them in both, describe the same
    fault: at least three shared, and three quarters of the smaller set or 40 % of the union."""
    if shared < MIN_TOKENS:
        return False
    return shared / min(n_a, n_b) >= 0.75 or shared / (n_a + n_b - shared) >= 0.4


class Incidents:
    def __init__(self, store: ComplaintStore, window_minutes: int, min_customers: int) -> None:
        self.store = store
        self.keys = store.keys
        self.window_ms = window_minutes * 60_000
        self.min_customers = min_customers
        self._script: Any = None
        #: the joins of this process's jobs, sent together (``_link_if_open``)
        self._joins: GroupCommit | None = None
        #: How often a note's window had to be read (its entries not all known here)
        self.window_reads = 0

    async def _note(self, *, keys: list[str], args: list[Any]) -> Any:
        if self._script is None:
            self._script = self.r.register_script(INCIDENT_NOTE_LUA)
        return await self._script(keys=keys, args=args)

    @property
    def r(self) -> Any:
        return self.store.r

    def key(self, iid: str) -> str:
        return self.keys.incident(iid)

    async def get(self, iid: str) -> dict[str, Any] | None:
        data = await self.r.get(self.key(iid))
        return json.loads(data) if data else None

    async def members(self, iid: str) -> list[str]:
        return sorted(m.decode() for m in await self.r.smembers(self.keys.incident_complaints(iid)))

    async def list(self, limit: int = 50) -> list[dict[str, Any]]:
        ids = [i.decode() for i in await self.r.zrevrange(self.keys.incidents, 0, limit - 1)]
        found = []
        for iid in ids:
            incident = await self.get(iid)
            if incident:
                incident["complaint_count"] = await self.r.scard(self.keys.incident_complaints(iid))
                found.append(incident)
        return found

    async def save(self, incident: dict[str, Any]) -> None:
        incident["updated_at"] = datetime.now(timezone.utc).isoformat()
        await self.r.set(self.key(incident["id"]), json.dumps(incident, ensure_ascii=False))

    def note_args(self, complaint_id: str, customer_id: str, category: str, toks: frozenset[str],
                  at_ms: int | None = None) -> list[Any]:
        """What noting a complaint in its category's window takes after the complaint's id (the
        note's ``a[2..7]`` in ``scripts.INCIDENT_NOTE_FN``): its entry, now, the window's start, the
        most kept, since when this process needs the texts, and whether to sweep. Noted by the
        commit that opens the complaint (``router.cases.open_complaint``) or by ``consider``.
        ``at_ms``: when the complaint came (noted again later, it keeps its place in the window).
        The entry is known to this process from here on: the note's answer leaves out the texts
        its call noted (pending until its note answers: an entry that never lands is never compared)."""
        recent = self.keys.incident_recent(category)
        now = now_ms()
        if not _cache.entries.get(recent):
            since = 0
        elif _cache.alone.get(recent):
            since = NO_TEXTS_SINCE
        else:
            since = _cache.synced.get(recent, SYNC_MARGIN_MS) - SYNC_MARGIN_MS
        known_open = _cache.open.get(self.keys.incidents_open(category))
        seen = known_open[0] if known_open and time.monotonic() - known_open[2] < OPEN_READ_AT_LEAST_S else "-"
        score = min(now, at_ms) if at_ms else now
        _cache.window(recent).add(complaint_id.encode(), customer_id, toks, score)
        return [customer_id + "\t" + " ".join(sorted(toks)), score, now - self.window_ms,
                MAX_RECENT, since, "1" if zlib.crc32(complaint_id.encode()) % SWEEP_EVERY == 0 else "0", seen]

    async def consider(self, complaint_id: str, customer_id: str, category: str, text: str,
                       at_ms: int | None = None) -> Decision:
        """Note a new complaint. Answers the incident it joins or forms, with the complaints
        linked to it, else ``NO_INCIDENT``. Safe to call again for the same complaint (a retried
        job): it answers the incident it formed or joined, with its complaints."""
        toks = comparable_tokens(text)
        if not toks:
            return NO_INCIDENT
        own = formed_by(complaint_id)
        now = now_ms()
        args = self.note_args(complaint_id, customer_id, category, toks, at_ms)
        result = await self._note(keys=[self.keys.incident_recent(category), self.keys.incident_texts(category),
                                        self.keys.incidents_open(category), self.keys.incident_notes(category),
                                        self.key(own)],
                                  args=[complaint_id, *args])
        if _text(result[0]) == "formed":  # formed on an earlier run (by a version that linked after)
            members = await self.members(own)
            async with self.r.pipeline(transaction=False) as pipe:  # those not linked yet (by that version)
                pipe.eval(LINK_LUA, len(members), *(self.keys.delivery(cid) for cid in members), own,
                          encode_incident_link(own, datetime.now(timezone.utc)), "1")
                pipe.get(self.key(own))
                _, data = await pipe.execute()
            incident = json.loads(data) if data else None
            return Decision(own, members, incident if incident and incident.get("answer") else None)
        return await self.decide(complaint_id, customer_id, category, text, toks, now, result[1])

    async def decide(self, complaint_id: str, customer_id: str, category: str, text: str, toks: frozenset[str],
                     noted_at: int, window: list[Any]) -> Decision:
        """After the complaint was noted (``window``: what the note answered, ``scripts.
        INCIDENT_NOTE_FN``: how many entries the window held, those noted since this process last
        looked, the open incidents, the note's number, the window's oldest entry when full, its
        start, the ids the note landed; ``noted_at``: the note's now): join an open incident of the
        same fault, or form one with enough different customers. Answers as ``consider``."""
        known, among, open_ids = await self._window(category, noted_at, window)
        joined = await self._join_open(category, complaint_id, toks, open_ids)
        if joined:
            return joined
        # enough different customers in the window to form one?
        similar: dict[str, str] = {}
        customers = {customer_id}
        for cid, customer in known.alike(toks, complaint_id.encode(), among):
            similar[cid.decode()] = customer
            customers.add(customer)
        if len(customers) < self.min_customers:
            return NO_INCIDENT
        own = formed_by(complaint_id)
        now = now_ms()
        # forming is rare: one worker at a time per category, and whoever comes second joins
        lock = RedisLock(self.r, self.keys.incident_lock(category), 5000)
        await lock.wait(5.0)  # after that, go on: a second incident is better than none
        try:
            joined = await self._join_open(category, complaint_id, toks)
            if joined:
                return joined
            linked = [complaint_id, *similar]
            at = datetime.now(timezone.utc)
            created_at = at.isoformat()
            incident = {
                "id": own, "category": category, "status": "open", "created_at": created_at,
                "title": mask_pii(text.strip())[:120], "sample_tokens": [sorted(toks)], "customers": len(customers),
                "answer": None, "updated_at": created_at,
            }
            async with self.r.pipeline(transaction=True) as pipe:  # all of it or nothing
                pipe.sadd(self.keys.incident_complaints(own), *linked)
                pipe.zadd(self.keys.incidents, {own: now})
                pipe.set(self.key(own), json.dumps(incident, ensure_ascii=False))
                pipe.sadd(self.keys.incidents_open(category), own)
                self.open_changed(pipe, category)
                pipe.eval(LINK_LUA, len(linked), *(self.keys.delivery(cid) for cid in linked), own,
                          encode_incident_link(own, at), "0")
                await pipe.execute()
            return Decision(own, linked)
        finally:
            await lock.release()

    async def _window(self, category: str, noted_at: int,
                      window: list[Any]) -> tuple[Window, np.ndarray, list[str] | None]:
        """What this process knows of the window a note answered (``window``, as ``decide`` has it),
        with the mask of the entries the window held, and the category's open incidents (``None``:
        not read yet)."""
        recent = self.keys.incident_recent(category)
        held, fresh, open_read, version, seq, floor_id, floor_score, start, landed = window
        known = _cache.window(recent)
        known.landed(landed, seq)
        open_key = self.keys.incidents_open(category)
        if open_read is not None:  # read: their version changed since this process last read them
            _cache.open[open_key] = (_text(version), [_text(i) for i in open_read], time.monotonic())
        others = 0  # entries noted by other processes, read now
        entries = known.entries
        seq = int(seq)
        for i in range(0, len(fresh) - 2, 3):  # (landed by this note at the latest)
            score = int(float(fresh[i + 2]))
            entry = entries.get(fresh[i])
            if entry is None:
                known.add(fresh[i], *parse_entry(fresh[i + 1]), score, seq)
            else:
                known.landed([fresh[i], score], seq)
            others += entry is None or entry[5] != score
        start = int(start)
        floor = (floor_id, int(float(floor_score))) if floor_id is not None else None
        if len(known) > 2 * MAX_RECENT:  # forget what left the window
            _cache.entries[recent] = known = known.pruned(start, floor)
        among = known.held(seq, start, floor)
        read = int(np.count_nonzero(among)) != held
        if read:  # noted before what this process read last, and not read by it (a new process): read the window
            among = await self._read_window(known, category, start)
        _cache.alone[recent] = not others and not read
        _cache.synced[recent] = noted_at
        return known, among, _cache.open[open_key][1] if open_key in _cache.open else None

    async def _read_window(self, known: Window, category: str, start: int) -> np.ndarray:
        """The window's entries as they are now (its ids read with the number of the last note, and
        the texts of those this process does not know), as a mask of ``known``'s columns."""
        self.window_reads += 1
        recent, texts = self.keys.incident_recent(category), self.keys.incident_texts(category)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.execute_command("ZRANGE", recent, "+inf", f"({start}", "BYSCORE", "REV", "LIMIT", 0, MAX_RECENT,
                                 "WITHSCORES")
            pipe.hget(texts, SEQ_FIELD)
            got, seq = await pipe.execute()
        seq = int(seq or 0)  # (each of them landed by that note)
        ids = got[0::2]
        entries = known.entries
        unread = []
        for cid, raw_score in zip(ids, got[1::2]):
            score = int(float(raw_score))
            if cid in entries:
                known.landed([cid, score], seq)
            else:
                unread.append((cid, score))
        if unread:
            for (cid, score), raw in zip(unread, await self.r.hmget(texts, [cid for cid, _ in unread])):
                # (an id without its text: known with no tokens, so it is not read again)
                known.add(cid, *(parse_entry(raw) if raw is not None else ("", frozenset())), score, seq)
        return known.members(ids)

    async def _join_open(self, category: str, complaint_id: str, toks: frozenset[str],
                         open_ids: list[str] | None = None) -> Decision | None:
        """The open incident of this category that describes the same fault, joined; or None.
        ``open_ids``: the category's open incidents as just read (else read here). An incident's
        sample tokens never change: read once per process."""
        open_key = self.keys.incidents_open(category)
        if open_ids is None:
            open_ids = [i.decode() for i in await self.r.smembers(open_key)]
        if len(_cache.samples) > 10_000:  # closed incidents' samples: forgotten now and then
            _cache.samples.clear()
        unread = [i for i in open_ids if self.key(i) not in _cache.samples]
        if unread:
            for iid, data in zip(unread, await self.r.mget([self.key(i) for i in unread])):
                if data:
                    _cache.samples[self.key(iid)] = [frozenset(s) for s in json.loads(data)["sample_tokens"]]
        for iid in sorted(open_ids):
            if any(same_fault(toks, sample) for sample in _cache.samples.get(self.key(iid), ())):
                joined = await self._link_if_open(open_key, iid, complaint_id)
                if joined is not None:
                    return joined
        return None

    async def _link_if_open(self, open_key: str, iid: str, complaint_id: str) -> Decision | None:
        """The complaint joins the incident and is linked to it if the incident is still open (a
        supervisor may have closed it since the open incidents were read with the note), in one
        step in Redis, which also answers the incident if its answer was given already. The joins
        this process's jobs ask for at the same time go out in one call (an outage: every new
        complaint joins, so a burst's joins share a round trip)."""
        if self._joins is None:
            script = self.r.register_script(JOIN_IF_OPEN_LUA)

            async def call(entries: list[tuple[list[str], list[str]]]) -> list[Any]:
                return list(await script(keys=[k for keys, _ in entries for k in keys],
                                         args=[a for _, args in entries for a in args]))

            self._joins = GroupCommit(call)
        joined = await self._joins.submit((
            [open_key, self.keys.incident_complaints(iid), self.keys.delivery(complaint_id), self.key(iid)],
            [iid, complaint_id, encode_incident_link(iid, datetime.now(timezone.utc))]))
        if not joined:
            return None
        return Decision(iid, [complaint_id], json.loads(joined[1]) if len(joined) > 1 else None)

    async def close(self, iid: str) -> None:
        incident = await self.get(iid)
        if incident is None:
            return
        incident["status"] = "closed"
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.srem(self.keys.incidents_open(incident["category"]), iid)
            self.open_changed(pipe, incident["category"])
            await pipe.execute()
        await self.save(incident)

    def open_changed(self, pipe: Any, category: str) -> None:
        """In the transaction that opens or closes an incident of ``category``: its open incidents'
        new version, which makes every process's next note read them again."""
        pipe.hset(self.keys.incident_texts(category), OPEN_VERSION_FIELD, new_id("v"))
