"""Complaints: opening one for a message (once, with its case number), reading them, changing one
under optimistic locking (the indexes, the customer's open cases and its queue rank follow), the
lists and the look-ups by case number."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NamedTuple, Sequence

import msgspec
from redis.exceptions import ResponseError, WatchError

from normalizer.ids import dt_to_ms, now_ms
from normalizer.schema import OPEN_STATUSES, Complaint, Contact
from router.repeats import fingerprint_of
from router.store.base import JOB_EXPIRES_MS, NotFound, PlannedJob, StoreBase, TxEffects, job_bytes
from router.store.codec import UNDECODABLE, decode_complaint, encode_complaint, with_deliveries, with_link
from router.store.deliveries import OUTBOX_GRACE_MS
from router.store.group_commit import GroupCommit
from router.store.keys import job_key
from router.store.queues import queue_score
from router.store.scripts import READ_WITH_LINK_LUA


#: Case numbers a process takes from the day's sequence at a time.
CASE_BLOCK = 16
#: The day's sequence outlives the day (a job committing just after midnight still finds it).
CASE_SEQ_TTL_S = 3 * 86_400


_entry_encoder = msgspec.msgpack.Encoder()


def is_open(complaint: Complaint) -> bool:
    return complaint.status in OPEN_STATUSES


#: A change of a stored complaint (``Complaints.update``): it mutates the complaint, may add
#: jobs and writes to the effects, and may raise ``Conflict``.
Change = Callable[[Complaint, TxEffects], Awaitable[None] | None]


class _Before(NamedTuple):
    """What an update compares after the change: where the complaint was indexed and ranked."""

    status: str
    category: str
    skill: str | None
    priority: int
    open: bool

    @classmethod
    def of(cls, complaint: Complaint) -> "_Before":
        return cls(complaint.status.value, complaint.category, complaint.skill, complaint.priority,
                   is_open(complaint))


async def _changed(cid: str, data: bytes | None, link: bytes | None,
                   change: Change) -> tuple[_Before, Complaint, TxEffects]:
    """A stored complaint (``data``, its incident links ``link``) with ``change`` applied: where
    it was before, the complaint changed, and the writes its change asked for."""
    if data is None:
        raise NotFound("complaint_not_found", f"no complaint {cid}")
    after = with_link(decode_complaint(data), link)
    before = _Before.of(after)
    effects = TxEffects()
    result = change(after, effects)
    if result is not None:
        await result
    return before, after, effects


class _CommitEntry(NamedTuple):
    """One complaint's part of a commit call: the keys it touches, its entry and how many binary
    values follow (``COMMIT_LUA``), the complaint (encoded, its case number in place of
    ``replace``'s placeholder, as the first of them) and the rest of them."""

    touched: list[str]
    head: list[bytes]
    complaint: Complaint
    replace: dict[str, str]
    tail: list[bytes]


def shared_windows(answers: list[Any]) -> list[Any]:
    """The commit's answers with each incident window in place: the script sends a category's
    window once, with its first entry in the call, and the later entries of that category name
    that entry's place in the answer (1 first); they get the same window (the same lists: read,
    never changed, by the incident check)."""
    for answer in answers:
        if isinstance(answer, list) and len(answer) == 4 and isinstance(answer[3], int):
            answer[3] = answers[answer[3] - 1][3]
    return answers


class Complaints(StoreBase):
    if TYPE_CHECKING:
        async def customer_of(self, contact: Contact) -> str | None: ...

    def _group_commit(self) -> GroupCommit:
        if self._commits is None:
            script = self._commit_script
            keys = [self.keys.pending, self.keys.skills, self.keys.outbox, self.keys.arq_queue, self.keys.wake,
                    self.keys.timers]
            wake = "1" if self.worker_wake else "0"

            async def call(entries: list[_CommitEntry]) -> list[Any]:
                # Each complaint is encoded here, all of a call's one after the other, not by its
                # job: the encoder's code and tables stay in the CPU's caches (~4.5 % of a
                # worker's CPU at saturation, the encoding took, when each job did its own between
                # the rest of its work). One that does not encode is that entry's own failure.
                answers: list[Any] = [None] * len(entries)
                sent: list[int] = []
                touched_keys: list[str] = []
                args: list[Any] = [wake]
                for n, (touched, head, complaint, replace, tail) in enumerate(entries):
                    try:
                        body = encode_complaint(complaint, replace)
                    except Exception as exc:  # noqa: BLE001 - answered to its own job
                        answers[n] = exc
                        continue
                    sent.append(n)
                    touched_keys.extend(touched)
                    args.extend(head)
                    args.append(body)
                    args.extend(tail)
                if sent:
                    got = shared_windows(await script(keys=[*keys, *touched_keys], args=args))
                    for n, answer in zip(sent, got):
                        answers[n] = answer
                return answers

            self._commits = GroupCommit(call)
        return self._commits

    async def case_number(self, day: str) -> str:
        """A case number of day ``day`` (yyyymmdd) for a complaint about to be committed, from this
        process's block of numbers (one round trip per ``CASE_BLOCK`` cases). A job that dies before
        its commit, or a process that stops, leaves its numbers unused: case numbers are unique
        and grow within a process, not gap-free."""
        block = self._case_blocks.get(day)
        while block is None or block[0] > block[1]:
            # one job of the process takes the next block; the others wait for it, not a block each
            # (saturated, jobs finding a block used up at the same moment took a block for every ~4 numbers used)
            loop = asyncio.get_running_loop()
            if self._case_refill is None or self._case_refill[0] is not loop:  # (a store used from another loop)
                self._case_refill = (loop, asyncio.Lock())
            async with self._case_refill[1]:
                if self._case_blocks.get(day) is block:  # (no other job took the next one meanwhile)
                    last = int(await self._case_script(keys=[self.keys.case_seq(day)], args=[CASE_BLOCK, CASE_SEQ_TTL_S]))
                    if len(self._case_blocks) > 2:
                        self._case_blocks.clear()
                    self._case_blocks[day] = [last - CASE_BLOCK + 1, last]
            block = self._case_blocks.get(day)
        n = block[0]
        block[0] += 1
        return f"C-{day}-{n:06d}"

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
        incident_note: Sequence[Any] = (),
    ) -> tuple[bool, str, str, list[Any]]:
        """Store a new complaint for message ``mid`` unless that message was processed already.

        ``complaint`` carries ``case_placeholder`` wherever the case number goes; the number is
        taken from this process's block here. ``incident_note``: the complaint's entry in its
        category's incident window and the window's bounds (``Incidents.note_args``; empty: not
        noted). Returns (created, complaint id, case number, the incident window as the note
        answered it, ``scripts.INCIDENT_NOTE_FN`` — empty when not noted). Safe to call twice: the
        second call changes nothing and answers what the first made. A case number another
        complaint has already (a block that outlived a failover which lost the sequence's
        writes) is not used: the block is dropped and the commit tried with a new one.
        """
        day = complaint.created_at.strftime("%Y%m%d")
        skill = complaint.skill or ""
        for _ in range(3):
            case = await self.case_number(day)
            result = await self._commit_entry(mid, complaint, jobs, case_placeholder=case_placeholder, case=case,
                                              day=day, outbox=outbox, fingerprint=fingerprint, timers=timers,
                                              incident_note=incident_note)
            if result[0] != b"case_taken":
                break
            self._case_blocks.pop(day, None)  # this block is stale (Redis lost its sequence's writes): a new one
        else:
            raise RuntimeError(f"no free case number for {complaint.id} after 3 blocks")
        status, cid, case = (x.decode() if isinstance(x, bytes) else x for x in result[:3])
        if skill and status == "created":
            self._skills_known.add(skill)  # in the skills set now: later commits need not add it again
        return status == "created", cid, case, result[3] if len(result) > 3 else []

    async def _commit_entry(self, mid: str, complaint: Complaint, jobs: Sequence[PlannedJob], *, case_placeholder: str,
                            case: str, day: str, outbox: Sequence[str], fingerprint: bytes,
                            timers: dict[str, int] | None, incident_note: Sequence[Any]) -> list[Any]:
        """One complaint's entry in the group commit (``COMMIT_LUA``), and its answer."""
        k = self.keys
        created = str(dt_to_ms(complaint.created_at))
        skill = complaint.skill or ""
        enqueue_ms = now_ms()
        blobs: list[bytes] = [b""]  # the complaint, encoded by the call that sends it (_group_commit)
        entry: dict[str, Any] = {
            "msg": k.msg(mid), "mid": mid, "cid": complaint.id, "key": k.complaint(complaint.id),
            "chan": complaint.channel,  # (a new complaint's: its message's)
            "body": 1, "case": case, "case_key": k.case(case), "created": created,
            "idx": [k.idx_all, k.idx("status", complaint.status.value), k.idx("category", complaint.category),
                    k.idx("customer", complaint.customer_id), k.idx("channel", complaint.channel),
                    *([k.idx("skill", skill)] if skill else [])],
            "skill": skill, "queue": k.queue(skill), "qscore": str(queue_score(complaint.priority, int(created))),
            "age": k.queue_age(skill), "frdue_key": k.fr_due(skill),
            "frdue": str(dt_to_ms(complaint.first_response_due)) if complaint.first_response_due else "",
            "new_skill": bool(skill) and skill not in self._skills_known,
            "outbox": outbox[0] if outbox else "", "outbox_due": str(enqueue_ms + OUTBOX_GRACE_MS),
            "jobs": [], "open": k.open_cases(complaint.customer_id), "fp": 0,
            "timers": [str(x) for member, due in (timers or {}).items() for x in (due, member)],
        }
        for job in jobs:
            job_id = k.job_id(job.job_id)
            blobs.append(job_bytes(job, enqueue_ms))
            entry["jobs"].append([job_key(job_id), job_id, len(blobs), str(enqueue_ms + job.defer_ms),
                                  str(JOB_EXPIRES_MS + job.defer_ms)])
        if fingerprint:
            blobs.append(fingerprint)
            entry["fp"] = len(blobs)
        if incident_note:
            entry["note"] = [k.incident_recent(complaint.category), k.incident_texts(complaint.category),
                             k.incidents_open(complaint.category), k.incident_notes(complaint.category),
                             *(str(x) for x in incident_note)]
        touched = [entry["msg"], entry["key"], entry["case_key"], *entry["idx"], entry["open"],
                   *([entry["queue"], entry["age"], entry["frdue_key"]] if skill else []),
                   *(job[0] for job in entry["jobs"]), *(entry["note"][:4] if incident_note else [])]
        return await self._group_commit().submit(_CommitEntry(
            touched, [_entry_encoder.encode(entry), str(len(blobs)).encode()], complaint, {case_placeholder: case},
            blobs[1:]))

    async def get(self, cid: str) -> Complaint:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.get(self.keys.complaint(cid))
            pipe.hgetall(self.keys.delivery(cid))
            data, deliveries = await pipe.execute()
        if data is None:
            raise NotFound("complaint_not_found", f"no complaint {cid}")
        return with_deliveries(decode_complaint(data), deliveries)

    async def get_many(self, cids: Sequence[str]) -> list[Complaint]:
        if not cids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.mget([self.keys.complaint(c) for c in cids])
            for c in cids:
                pipe.hgetall(self.keys.delivery(c))
            values, *deliveries = await pipe.execute()
        return [with_deliveries(decode_complaint(v), d) for v, d in zip(values, deliveries) if v is not None]

    async def stored(self, cids: Sequence[str]) -> dict[str, Complaint]:
        """The complaints as stored, by id, in one ``MGET`` (their replies' delivery states and
        incident links not merged in); one not found, or that does not decode, is left out. What a
        pending repeat fingerprint is completed from (``repeats.completed``)."""
        if not cids:
            return {}
        values = await self.r.mget([self.keys.complaint(c) for c in cids])
        out = {}
        for cid, data in zip(cids, values):
            if data is not None:
                try:
                    out[cid] = decode_complaint(data)
                except UNDECODABLE:
                    continue
        return out

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

    async def update(self, cid: str, change: Change) -> Complaint:
        """Apply ``change`` to the stored complaint under optimistic locking.

        ``change`` mutates the complaint and may add jobs or extra writes to ``effects``; it may
        raise ``Conflict``. Status, skill and category index moves are derived here.
        """
        k = self.keys
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(k.complaint(cid))
                    data, link = await pipe.eval(READ_WITH_LINK_LUA, 2, k.complaint(cid), k.delivery(cid))
                    before, after, effects = await _changed(cid, data, link, change)
                    after.updated_at = datetime.now(timezone.utc)
                    pipe.multi()
                    self._write_change(pipe, cid, before, after, effects)
                    self.queue_jobs(pipe, effects.jobs)
                    await pipe.execute()
                    return after
                except WatchError:
                    continue

    async def update_many(self, changes: Sequence[tuple[str, Change]]) -> list[Complaint | Exception]:
        """``update`` for several complaints, in one transaction: one ``WATCH`` of them all, one
        read, one ``MULTI`` (a due deadline's timers come in batches: in an outage every complaint
        warns, then breaches). Answers, in the order given, each complaint as changed, or the
        exception its update raised (``NotFound``, its change's ``Conflict``, ...): a change that
        raises leaves its complaint as it was, the others are written all the same. A complaint
        named twice, or any of them changed by another client meanwhile: one ``update`` each
        instead (its change run again on what is stored then). A write Redis refuses fails its
        own complaint alone. Redis away: that error for each."""
        results: list[Complaint | Exception | None] = [None] * len(changes)
        first: list[int] = []
        again: list[int] = []
        seen: set[str] = set()
        for i, (cid, _) in enumerate(changes):
            (again if cid in seen else first).append(i)
            seen.add(cid)
        if len(first) > 1:
            try:
                written = await self._update_together(changes, first, results)
            except Exception as exc:  # noqa: BLE001 - Redis away (a change's own errors are its item's)
                for i in first:
                    results[i] = exc
                written = True
            if not written:
                again = first + again
        else:
            again = first + again
        for i in sorted(again):
            cid, change = changes[i]
            try:
                results[i] = await self.update(cid, change)
            except Exception as exc:  # noqa: BLE001 - answered for its item
                results[i] = exc
        return results  # type: ignore[return-value]

    async def _update_together(self, changes: Sequence[tuple[str, Change]], items: list[int],
                               results: list[Complaint | Exception | None]) -> bool:
        """``update_many``'s one transaction for ``items`` (distinct complaints); False when
        nothing of it was written and each is to be updated on its own (a watched complaint
        changed meanwhile, or Redis refused the transaction before running it). A write Redis
        refuses as it runs the transaction fails its own complaint: the others' writes are made."""
        k = self.keys
        cids = [changes[i][0] for i in items]
        async with self.r.pipeline(transaction=True) as pipe:
            await pipe.watch(*(k.complaint(cid) for cid in cids))
            keys = [key for cid in cids for key in (k.complaint(cid), k.delivery(cid))]
            read = await pipe.eval(READ_WITH_LINK_LUA, len(keys), *keys)
            pipe.multi()
            jobs: list[PlannedJob] = []
            spans: list[tuple[int, int, int]] = []  # item, its first command, the one after its last
            now = datetime.now(timezone.utc)
            stack = pipe.command_stack
            for n, i in enumerate(items):
                cid, change = changes[i]
                start = len(stack)
                try:
                    before, after, effects = await _changed(cid, read[2 * n], read[2 * n + 1], change)
                    after.updated_at = now
                    self._write_change(pipe, cid, before, after, effects)
                except Exception as exc:  # noqa: BLE001 - this complaint is left as it was
                    del stack[start:]  # (what its write queued before it failed)
                    results[i] = exc
                    continue
                jobs.extend(effects.jobs)
                results[i] = after
                spans.append((i, start, len(stack)))
            if spans:
                tail = len(stack)
                self.queue_jobs(pipe, jobs)
                try:
                    replies = await pipe.execute(raise_on_error=False)
                except (WatchError, ResponseError):  # changed meanwhile, or refused as queued (EXECABORT)
                    return False
                tail_error = next((r for r in replies[tail:] if isinstance(r, Exception)), None)
                for i, a, b in spans:
                    error = next((r for r in replies[a:b] if isinstance(r, Exception)), tail_error)
                    if error is not None:
                        results[i] = error
        return True

    def _write_change(self, pipe: Any, cid: str, before: _Before, after: Complaint, effects: TxEffects) -> None:
        """A changed complaint's writes, into an open ``MULTI``: the complaint, the indexes its
        status, category and skill moved between, its customer's open cases, its queue rank, and
        what its change asked for (jobs apart: ``queue_jobs``)."""
        k = self.keys
        pipe.set(k.complaint(cid), encode_complaint(after))
        created_ms = dt_to_ms(after.created_at)
        for name, old, new in (
            ("status", before.status, after.status.value),
            ("category", before.category, after.category),
            ("skill", before.skill, after.skill),
        ):
            if old != new:
                if old:
                    pipe.zrem(k.idx(name, old), cid)
                if new:
                    pipe.zadd(k.idx(name, new), {cid: created_ms})
        if before.open and not is_open(after):
            pipe.hdel(k.open_cases(after.customer_id), cid)
        elif is_open(after) and not before.open:
            pipe.hset(k.open_cases(after.customer_id), cid, fingerprint_of(after, created_ms))
        if before.priority != after.priority and after.skill:  # re-rank it where it waits
            pipe.zadd(k.queue(after.skill), {cid: queue_score(after.priority, created_ms)}, xx=True)
        for op in effects.ops:
            op(pipe)

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


__all__ = ["Change", "Complaints", "is_open"]
