"""Incidents: many different customers reporting the same fault in a short time (fifty "app
crashes when I pay" in ten minutes) are one problem on our side, not fifty cases to answer one
by one. Supervisors see the incident with its complaints and answer them all at once.

How a fault is recognised across wording and languages: each text becomes a set of tokens —
fault terms folded to one concept in both languages ("闪退", "崩溃", "crashed" → ``<crash>``),
Chinese characters one by one, English words — and two texts describe the same fault when their
token sets overlap enough (at least three shared tokens, and three quarters of the smaller set
or 40 % of the union). Only complaints of the same category in the window are compared.

Keys (named in router/store/keys.py; per category): ``inc:recent:<category>`` (sorted set of recent complaint ids by time),
``inc:text:<category>`` (complaint id → customer and tokens), ``incidents:open:<category>``;
per incident: ``incident:<id>`` (JSON) and ``incident:<id>:complaints``; ``incidents`` indexes
them all by time.

Considering a complaint is a job of its own (``consider_incident``, queued with the complaint),
retried when Redis is briefly away, so it must be safe to run again: the incident a complaint
forms is named after that complaint (``inc_`` + the complaint id's suffix) and written in one
transaction, and a re-run that finds it answers it again with its complaints.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import datetime, timezone
from typing import Any

from plugins.locks import RedisLock
from router.store import ComplaintStore
from normalizer.ids import now_ms
from normalizer.pii import mask_pii

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
_CONCEPT_RE = re.compile("|".join(sorted((re.escape(t) for ts in CONCEPTS.values() for t in ts), key=len,
                                         reverse=True)))
_CANON = {t: c for c, ts in CONCEPTS.items() for t in ts}
_TOKEN = re.compile(r"<[a-z]+>|[a-z0-9]+|[\u4e00-\u9fff]")
MIN_TOKENS = 3
MAX_RECENT = 300  # newest complaints compared per category and window (bounded work per complaint)
SAMPLES = 5


def tokens(text: str) -> frozenset[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _CONCEPT_RE.sub(lambda m: f" {_CANON[m.group(0)]} ", text)
    return frozenset(t for t in _TOKEN.findall(text) if t not in STOP and not t.isdigit())


def comparable(text: str) -> bool:
    """Enough words to compare with others (shorter texts never join or form an incident)."""
    return len(tokens(text)) >= MIN_TOKENS


def formed_by(complaint_id: str) -> str:
    """The id of the incident ``complaint_id`` forms, if it forms one: the same on every run."""
    return "inc_" + complaint_id.split("_", 1)[-1]


def same_fault(a: frozenset[str], b: frozenset[str]) -> bool:
    shared = len(a & b)
    if shared < MIN_TOKENS:
        return False
    return shared / min(len(a), len(b)) >= 0.75 or shared / len(a | b) >= 0.4


class Incidents:
    def __init__(self, store: ComplaintStore, window_minutes: int, min_customers: int) -> None:
        self.store = store
        self.r = store.r
        self.keys = store.keys
        self.window_ms = window_minutes * 60_000
        self.min_customers = min_customers

    comparable = staticmethod(comparable)

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

    async def consider(self, complaint_id: str, customer_id: str, category: str, text: str) -> tuple[str, list[str]]:
        """Note a new complaint. Answers (incident id, complaint ids linked to it) when it joins or
        forms an incident, else ("", []). Safe to call again for the same complaint (a retried
        job): it answers the incident it formed or joined, with the complaints to link."""
        toks = tokens(text)
        if len(toks) < MIN_TOKENS:
            return "", []
        own = formed_by(complaint_id)
        if await self.r.exists(self.key(own)):  # formed on an earlier run that did not finish linking
            return own, await self.members(own)
        now = now_ms()
        recent, texts = self.keys.incident_recent(category), self.keys.incident_texts(category)
        old = await self.r.zrangebyscore(recent, "-inf", now - self.window_ms)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(recent, {complaint_id: now})
            pipe.hset(texts, complaint_id, customer_id + "\t" + " ".join(sorted(toks)))
            if old:
                pipe.zrem(recent, *old)
                pipe.hdel(texts, *old)
            pipe.zremrangebyrank(recent, 0, -MAX_RECENT - 1)
            await pipe.execute()
        joined = await self._join_open(category, complaint_id, toks)
        if joined:
            return joined, [complaint_id]
        # enough different customers in the window to form one?
        ids = [i.decode() for i in await self.r.zrange(recent, 0, -1)]
        values = await self.r.hmget(texts, ids) if ids else []
        similar: dict[str, str] = {}
        customers = {customer_id}
        for cid, raw in zip(ids, values):
            if raw is None or cid == complaint_id:
                continue
            other_customer, _, other_tokens = raw.decode().partition("\t")
            if same_fault(toks, frozenset(other_tokens.split(" "))):
                similar[cid] = other_customer
                customers.add(other_customer)
        if len(customers) < self.min_customers:
            return "", []
        # forming is rare: one worker at a time per category, and whoever comes second joins
        lock = RedisLock(self.r, self.keys.incident_lock(category), 5000)
        await lock.wait(5.0)  # after that, go on: a second incident is better than none
        try:
            joined = await self._join_open(category, complaint_id, toks)
            if joined:
                return joined, [complaint_id]
            linked = [complaint_id, *similar]
            created_at = datetime.now(timezone.utc).isoformat()
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
                await pipe.execute()
            return own, linked
        finally:
            await lock.release()

    async def _join_open(self, category: str, complaint_id: str, toks: frozenset[str]) -> str:
        """The open incident of this category that describes the same fault, joined; or ""."""
        ids = [i.decode() for i in await self.r.smembers(self.keys.incidents_open(category))]
        records = await self.r.mget([self.key(i) for i in ids]) if ids else []
        for data in records:
            incident = json.loads(data) if data else None
            if incident is not None and any(same_fault(toks, frozenset(s)) for s in incident["sample_tokens"]):
                await self._link(incident, [complaint_id])
                return incident["id"]
        return ""

    async def _link(self, incident: dict[str, Any], complaint_ids: list[str]) -> None:
        await self.r.sadd(self.keys.incident_complaints(incident["id"]), *complaint_ids)

    async def close(self, iid: str) -> None:
        incident = await self.get(iid)
        if incident is None:
            return
        incident["status"] = "closed"
        await self.r.srem(self.keys.incidents_open(incident["category"]), iid)
        await self.save(incident)
