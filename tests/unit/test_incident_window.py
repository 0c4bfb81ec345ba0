"""The incident window: noted and read back in one script, its texts leaving with it, and a
complaint another worker noted long before this process last looked still compared."""

from __future__ import annotations

import zlib
from typing import Any

from redis.asyncio import Redis

from router.incidents import MAX_RECENT, NO_INCIDENT, SWEEP_EVERY, Decision, Incidents, tokens
from normalizer.ids import now_ms
from router.store import ComplaintStore
from router.store.incident_scripts import OWN_FIELDS
from router.store.scripts import INCIDENT_NOTE_LUA, OPEN_VERSION_FIELD, SEQ_FIELD, SWEPT_FIELD

CRASH = ["App crashes when I pay at checkout, payment failed", "the app crashed while paying, payment failure",
         "app keeps crashing at payment checkout"]


async def texts_held(r: Redis, texts: str) -> int:
    """The complaints' texts a category's texts hash holds (not its own fields: the open
    incidents' version, the sweep's start, the last note's number)."""
    own = {f.encode() for f in OWN_FIELDS}
    return len([f for f in await r.hkeys(texts) if f not in own])


async def test_window_keeps_its_texts_bounded_and_sees_older_entries(redis_url: str, prefix: str) -> None:
    r = Redis.from_url(redis_url)
    store = ComplaintStore(prefix)
    store.bind(r)
    incidents = Incidents(store, window_minutes=10, min_customers=3)
    recent, texts = store.keys.incident_recent("function_fault"), store.keys.incident_texts("function_fault")
    try:
        kept = 0  # how many the set holds after each note: what left goes when a note's id sweeps
        for n in range(MAX_RECENT + 40):  # unrelated texts: nothing forms
            assert await incidents.consider(f"cmp_u{n}", f"cus_u{n}", "function_fault",
                                            f"w{n}a w{n}b w{n}c w{n}d") == NO_INCIDENT
            sweeps = zlib.crc32(b"cmp_u%d" % n) % SWEEP_EVERY == 0
            kept = min(kept + 1, MAX_RECENT) if sweeps else kept + 1
            assert not (sweeps and n >= MAX_RECENT) or await r.zcard(recent) == MAX_RECENT
        assert await r.zcard(recent) == kept and MAX_RECENT < kept < MAX_RECENT + 40  # (swept within the 340)
        assert await texts_held(r, texts) == kept  # the texts leave with the window, not only by time
        assert not await r.hexists(texts, "cmp_u0")
        note = await r.register_script(INCIDENT_NOTE_LUA)(
            keys=[recent, texts, store.keys.incidents_open("function_fault"), store.keys.incident_notes("function_fault"),
                  incidents.key("inc_none")],
            # a millisecond after the last note (several notes in one millisecond tie, and ties go in
            # reverse order of their ids: "cmp_u339" before "cmp_last")
            args=["cmp_last", "cus_last\tz1 z2 z3", now_ms() + 1, now_ms() - 600_000, MAX_RECENT, 0, "1", "0"])
        window = note[1]
        assert window[0] == MAX_RECENT and window[8][0::2] == [b"cmp_last"]  # the window holds the newest 300
        assert window[5] is not None and window[5] != b"cmp_last"  # full: its oldest entry named
        assert await r.zcard(recent) == MAX_RECENT == await texts_held(r, texts)  # a sweep: nothing else is kept
        assert b"cmp_last" not in window[1][0::3]  # the text this call noted is not sent back to its caller
        assert window[4] == int(await r.hget(texts, SEQ_FIELD))  # its note's number
        # another worker noted a crash report five minutes ago by its clock (a slow one), after this
        # process last read the window: older than what the script returns as new, still compared
        recent, texts = store.keys.incident_recent("transaction"), store.keys.incident_texts("transaction")
        assert await incidents.consider("cmp_t0", "cus_t0", "transaction", "x1 x2 x3 x4") == NO_INCIDENT
        await r.zadd(recent, {"cmp_other": now_ms() - 300_000})
        await r.hset(texts, "cmp_other", "cus_other\t" + " ".join(sorted(tokens(CRASH[0]))))
        assert await incidents.consider("cmp_c1", "cus_c1", "transaction", CRASH[1]) == NO_INCIDENT
        formed, linked, _ = await incidents.consider("cmp_c2", "cus_c2", "transaction", CRASH[2])
        assert formed == "inc_c2" and sorted(linked) == ["cmp_c1", "cmp_c2", "cmp_other"]
        # the next one joins it (its samples read once, kept)
        assert await incidents.consider("cmp_c3", "cus_c3", "transaction", CRASH[0]) == Decision("inc_c2", ["cmp_c3"])
    finally:
        await r.aclose()


async def test_an_incident_another_process_opened_a_moment_ago_is_joined(redis_url: str, prefix: str) -> None:
    """This process noted a complaint of the category a moment ago (no incident open then); another
    process has since formed one from complaints in the window: a complaint of the same fault joins
    it instead of forming a second."""
    import json

    r = Redis.from_url(redis_url)
    store = ComplaintStore(prefix)
    store.bind(r)
    incidents = Incidents(store, window_minutes=10, min_customers=3)
    category = "app_fault"
    recent, texts = store.keys.incident_recent(category), store.keys.incident_texts(category)
    try:
        assert await incidents.consider("cmp_a0", "cus_a0", category, "q1 q2 q3 q4") == NO_INCIDENT
        for n, text in enumerate(CRASH[:2]):  # the other process's two complaints and the incident they formed
            await r.zadd(recent, {f"cmp_o{n}": now_ms()})
            await r.hset(texts, f"cmp_o{n}", f"cus_o{n}\t" + " ".join(sorted(tokens(text))))
        await r.set(incidents.key("inc_o1"), json.dumps({"id": "inc_o1", "category": category, "status": "open",
                                                         "sample_tokens": [sorted(tokens(CRASH[0]))]}))
        async with r.pipeline(transaction=True) as pipe:  # as the other process's forming does it
            pipe.sadd(store.keys.incidents_open(category), "inc_o1")
            Incidents(store, window_minutes=10, min_customers=3).open_changed(pipe, category)
            await pipe.execute()
        assert await incidents.consider("cmp_a1", "cus_a1", category, CRASH[2]) == Decision("inc_o1", ["cmp_a1"])
        assert await r.smembers(store.keys.incidents_open(category)) == {b"inc_o1"}
    finally:
        await r.aclose()


async def test_an_incident_closed_a_moment_ago_is_not_joined_from_the_copy(redis_url: str, prefix: str) -> None:
    """An incident a supervisor closed (closes happen in the gateway) after this process formed it
    is not joined by a later report of the same fault, even one whose check read the incident as
    open (joining checks that it still is)."""
    r = Redis.from_url(redis_url)
    store = ComplaintStore(prefix)
    store.bind(r)
    incidents = Incidents(store, window_minutes=10, min_customers=3)
    category = "function_fault"
    try:
        for n, text in enumerate(CRASH):
            result = await incidents.consider(f"cmp_k{n}", f"cus_k{n}", category, text)
        assert result[0] == "inc_k2" and sorted(result[1]) == ["cmp_k0", "cmp_k1", "cmp_k2"]
        await r.srem(store.keys.incidents_open(category), "inc_k2")  # closed by another process (the gateway)
        joined, *_ = await incidents.consider("cmp_k3", "cus_k3", category, CRASH[0])
        assert joined != "inc_k2"
        assert await incidents.members("inc_k2") == ["cmp_k0", "cmp_k1", "cmp_k2"]
    finally:
        await r.aclose()


async def test_the_open_incidents_are_read_only_when_their_version_changed(desk: Any) -> None:
    """The note answers a category's open incidents only to a caller that has another version of
    them: an incident opening or closing (``open_changed``, in the same transaction) makes a new one.
    The sweep of stale texts keeps the version."""
    r, store, incidents = desk
    category = "transaction"
    recent, texts = store.keys.incident_recent(category), store.keys.incident_texts(category)
    open_key = store.keys.incidents_open(category)
    note = r.register_script(INCIDENT_NOTE_LUA)

    async def read(cid: str, seen: str, sweep: str = "0") -> list:
        return await note(keys=[recent, texts, open_key, store.keys.incident_notes(category), incidents.key("inc_none")],
                          args=[cid, f"cus_{cid}\tz1 z2 z3", now_ms(), now_ms() - 600_000, MAX_RECENT, 0, sweep, seen])

    first = (await read("cmp_v0", "-"))[1]  # the caller has none: read (none open, no version yet)
    assert first[2] == [] and first[3] == b""
    assert (await read("cmp_v1", ""))[1][2] is None  # the same version: not read
    async with r.pipeline(transaction=True) as pipe:
        pipe.sadd(open_key, "inc_v")
        incidents.open_changed(pipe, category)
        await pipe.execute()
    changed = (await read("cmp_v2", ""))[1][2:4]
    assert changed[0] == [b"inc_v"] and changed[1] not in (b"", b"-")
    await r.hset(texts, mapping={f"stale{n}": "x" for n in range(2 * MAX_RECENT + 1)})  # for the sweep
    before = await r.hlen(texts)
    for n in range(3):  # (each sweep drops what one HSCAN page finds)
        swept = (await read(f"cmp_v3{n}", changed[1].decode(), sweep="1"))[1]
        assert swept[2] is None and swept[3] == changed[1]
    assert await r.hlen(texts) < before and await r.hget(texts, OPEN_VERSION_FIELD) == changed[1]
    assert await r.hget(texts, SEQ_FIELD) == b"6"
    await incidents.close("inc_v")  # (no incident record: nothing to close)
    assert (await read("cmp_v4", changed[1].decode()))[1][2] is None
    await r.set(incidents.key("inc_v"), '{"id": "inc_v", "category": "transaction", "status": "open"}')
    await incidents.close("inc_v")
    closed = (await read("cmp_v5", changed[1].decode()))[1]
    assert closed[2] == [] and closed[3] != changed[1]


async def test_open_incidents_changed_without_a_version_are_read_within_seconds(desk: Any) -> None:
    """A process of a version before the version opens an incident without renewing it: this
    process reads the open incidents again once its reading is OPEN_READ_AT_LEAST_S old."""
    import json
    import time

    from router.incidents import OPEN_READ_AT_LEAST_S, _cache

    r, store, incidents = desk
    category = "account_security"
    open_key = store.keys.incidents_open(category)
    assert await incidents.consider("cmp_w0", "cus_w0", category, "q1 q2 q3 q4") == NO_INCIDENT
    await r.set(incidents.key("inc_old"), json.dumps({"id": "inc_old", "category": category, "status": "open",
                                                     "sample_tokens": [sorted(tokens(CRASH[0]))]}))
    await r.sadd(open_key, "inc_old")  # no new version
    version, ids, _ = _cache.open[open_key]
    _cache.open[open_key] = (version, ids, time.monotonic() - OPEN_READ_AT_LEAST_S - 1)  # read that long ago
    assert await incidents.consider("cmp_w1", "cus_w1", category, CRASH[1]) == Decision("inc_old", ["cmp_w1"])


def test_the_windows_bits_answer_as_the_token_sets_do() -> None:
    """A window compares a new complaint with its entries as bits of its own vocabulary: the same
    answers as ``same_fault`` on the token sets (newest first), before and after the vocabulary is
    built again for the entries kept, and the vocabulary no larger than the kept entries' tokens."""
    import random

    from router.incident_window import Window
    from router.incidents import same_fault

    rng = random.Random(21)
    common = [f"c{i}" for i in range(12)]  # shared by many texts, as "<pay>" or "app" are
    sets = [frozenset(rng.sample(common, rng.randint(0, 6)) + [f"r{rng.randint(0, 400)}"
                                                              for _ in range(rng.randint(1, 9))])
            for _ in range(400)]
    sets += [frozenset({"c0", "c1", "c2"}), frozenset({"c0", "c1", "c2", "c3", "c4", "c5", "c6"})]  # edge cases
    window = Window()
    for n, toks in enumerate(sets):
        window.add(b"cmp_%d" % n, f"cus_{n}", toks, 1_000 + n, 1)

    ids = [b"cmp_%d" % n for n in range(len(sets))]

    def answers() -> list[tuple[int, bytes]]:
        return [(a, cid) for a in range(0, len(sets), 7)
                for cid, _ in window.alike(sets[a], b"cmp_%d" % a, window.members(ids))]

    def truth(kept: range) -> list[tuple[int, bytes]]:
        return [(a, b"cmp_%d" % b) for a in range(0, len(sets), 7) for b in reversed(kept)
                if b != a and same_fault(sets[a], sets[b])]

    assert answers() == truth(range(len(sets)))
    assert 0 < len(truth(range(len(sets)))) < len(sets) * len(sets) // 7 // 2  # some alike, most not
    kept = range(300, len(sets))
    before = window
    window = window.pruned(1_299, None)  # what left the window (by time) is forgotten
    assert len(window) == len(kept) and b"cmp_0" not in window
    assert len(before) == len(sets)  # (a job deciding on the old one meanwhile keeps what it had)
    assert set(window.vocabulary) == set().union(*(sets[n] for n in kept))
    assert answers() == truth(kept)
    # by rank: the window's oldest entry 1_350 (score) as named by Redis: those after it, and, of
    # equal scores, the larger ids
    window.add(b"cmp_350a", "cus_350a", sets[350], 1_350, 1)
    window.add(b"cmp_35", "cus_35", sets[350], 1_350, 1)
    window.add(b"cmp_p1", "cus_p1", sets[1], 1_340)  # noted here, its note not answered yet: kept
    window.add(b"cmp_p0", "cus_p0", sets[0], 1_200)  # the same, and older than the window: its note failed
    window = window.pruned(1_299, (b"cmp_350", 1_350))
    assert sorted(window.entries) == sorted([b"cmp_350", b"cmp_350a", b"cmp_p1",
                                             *(b"cmp_%d" % n for n in range(351, len(sets)))])
    assert not window.held(10, 1_299, (b"cmp_350", 1_350))[window._rows[b"cmp_p1"]]  # (never in a window till it lands)


async def test_a_process_alone_in_the_window_still_sees_another_processes_notes(desk: Any) -> None:
    """A process that found nobody else's notes in a category's window asks for no texts with its
    next note (the note then counts nothing); a complaint another process noted meanwhile is read by
    id all the same, and compared."""
    from router.incidents import _cache

    r, store, incidents = desk
    category = "payment_amount"
    recent, texts = store.keys.incident_recent(category), store.keys.incident_texts(category)
    assert await incidents.consider("cmp_s0", "cus_s0", category, "q1 q2 q3 q4") == NO_INCIDENT
    assert await incidents.consider("cmp_s1", "cus_s1", category, "p1 p2 p3 p4") == NO_INCIDENT
    assert _cache.alone[recent]
    for n, text in enumerate(CRASH[:2]):  # another process's two reports of one fault
        await r.zadd(recent, {f"cmp_o{n}": now_ms()})
        await r.hset(texts, f"cmp_o{n}", f"cus_o{n}\t" + " ".join(sorted(tokens(text))))
    formed, linked, _ = await incidents.consider("cmp_s2", "cus_s2", category, CRASH[2])
    assert formed == "inc_s2" and sorted(linked) == ["cmp_o0", "cmp_o1", "cmp_s2"]
    assert not _cache.alone[recent]


async def test_a_sweep_removes_a_large_backlog_in_steps(desk: Any) -> None:
    """What left a category's window in a quiet hour (thousands of entries) goes a thousand at a
    time, one sweeping note after another: never one script call too large to run."""
    r, store, incidents = desk
    category = "fee_dispute"
    recent, texts = store.keys.incident_recent(category), store.keys.incident_texts(category)
    old = now_ms() - 3_600_000
    await r.zadd(recent, {f"cmp_old{n}": old + n for n in range(9_000)})
    await r.hset(texts, mapping={f"cmp_old{n}": f"cus_old{n}\tq1 q2 q3" for n in range(9_000)})
    note = r.register_script(INCIDENT_NOTE_LUA)
    for step in range(1, 10):
        answer = await note(keys=[recent, texts, store.keys.incidents_open(category), store.keys.incident_notes(category),
                                  incidents.key("inc_none")],
                            args=[f"cmp_new{step}", f"cus_new{step}\tz1 z2 z3", now_ms(), now_ms() - 600_000,
                                  MAX_RECENT, 0, "1", "-"])
        assert answer[1][0] == step  # the old ones never counted or read as in the window
        assert [i for i in answer[1][1][0::3] if i.startswith(b"cmp_old")] == []
        assert await r.zcard(recent) == 9_000 - 1_000 * step + step
    assert await texts_held(r, texts) == 9


def test_the_window_compared_as_it_grows_answers_as_the_token_sets_do() -> None:
    """Entries added between comparisons, a vocabulary that outgrows its words of 64 bits and a
    matrix that outgrows its columns, an entry noted again with other tokens, ids the window does
    not know (left out by ``members`` and so by ``alike``), entries the window holds that are
    not among the ids, the list of ids in any order: ``alike`` answers what ``same_fault`` on the
    token sets does, newest first (by score, then id, as Redis orders the window)."""
    import random

    from router.incident_window import Window
    from router.incidents import same_fault

    rng = random.Random(2112)
    common = [f"c{i}" for i in range(10)]
    window, sets, scores = Window(), {}, {}
    for step in range(700):
        cid = b"cmp_%d" % rng.randint(0, 260)  # some noted again, with other tokens
        sets[cid] = frozenset(rng.sample(common, rng.randint(0, 5)) + [f"r{rng.randint(0, 3000)}"
                                                                       for _ in range(rng.randint(1, 8))])
        scores[cid] = step // 3  # (equal scores: the larger id is the newer)
        window.add(cid, f"cus_{cid.decode()}", sets[cid], scores[cid], 1)
        if step % 9:
            continue
        ids = [b"cmp_%d" % n for n in range(-3, 262) if n % 17]  # (cmp_-3..-1 and some others never noted)
        rng.shuffle(ids)
        among = window.members(ids)  # the columns of the ids the window knows, and no others
        assert sorted(e[4] for e in window._by_row if among[window._rows[e[4]]]) == sorted(i for i in ids if i in sets)
        query = frozenset(rng.sample(common, rng.randint(3, 6)) + [f"new{step}"])  # a token no entry has
        own = rng.choice(list(sets))
        expected = sorted(((i, f"cus_{i.decode()}") for i in ids if i in sets and i != own
                           and same_fault(query, sets[i])), key=lambda x: (scores[x[0]], x[0]), reverse=True)
        assert window.alike(query, own, among) == expected
    assert len(window.vocabulary) > 4 * 64 and len(window) > 128  # several words, several doublings of the columns


async def test_the_window_worked_out_here_is_the_window_redis_holds(desk: Any) -> None:
    """A note answers how many entries its window holds, not their ids; this process works out which
    they are from what it knows (each entry's score and note number). Randomised against Redis:
    other processes' notes (some at equal scores, some from a clock minutes behind, some by a
    version before the note numbers, some noting a complaint again from long before), sweeps (some
    by a process with a shorter window), a window fuller than its 300 (then by rank): at every
    note of this process, the entries it compares with are exactly those of Redis's window then;
    and the window is read only when the process could not know all of them."""
    import random

    import numpy as np

    from router.incidents import formed_by
    from router.store.scripts import NO_TEXTS_SINCE

    r, store, incidents = desk
    category = "card_binding"
    recent, texts = store.keys.incident_recent(category), store.keys.incident_texts(category)
    keys = [recent, texts, store.keys.incidents_open(category), store.keys.incident_notes(category)]
    note = r.register_script(INCIDENT_NOTE_LUA)
    rng = random.Random(2026)
    scores: list[int] = []

    async def other(step: int, score: int, start: int | None = None, sweep: bool = False,
                    cid: str = "") -> None:
        await note(keys=[*keys, incidents.key("inc_none")],
                   args=[cid or f"cmp_o{step}", f"cus_o{step}\tz1 z2 z{step}", score,
                         start or now_ms() - 600_000, MAX_RECENT, NO_TEXTS_SINCE,
                         "1" if sweep or rng.random() < 0.05 else "0", "-"])
        scores.append(score)

    async def mine(step: int) -> tuple[list[bytes], list[bytes]]:
        cid = f"cmp_s{step}"
        args = incidents.note_args(cid, f"cus_s{step}", category, frozenset({"q1", "q2", f"q{step}"}))
        result = await incidents._note(keys=[*keys, incidents.key(formed_by(cid))], args=[cid, *args])
        scores.append(int(args[1]))
        known, among, _ = await incidents._window(category, int(args[1]), result[1])
        worked_out = sorted(known._by_row[col][4] for col in np.flatnonzero(among).tolist())
        start = max(args[2], int(await r.hget(texts, SWEPT_FIELD) or 0))  # (a sweep's later start is the window's)
        held = await r.execute_command("ZRANGE", recent, "+inf", f"({start}", "BYSCORE", "REV", "LIMIT", 0,
                                       MAX_RECENT)
        return worked_out, sorted(held)

    for step in range(900):
        kind = rng.random()
        if kind < 0.35:  # another process, now by its clock
            await other(step, now_ms())
        elif kind < 0.40:  # another at the score of an entry noted before (equal scores)
            await other(step, rng.choice(scores) if scores else now_ms())
        elif kind < 0.43:  # another whose clock is minutes behind: older than this process last looked
            await other(step, now_ms() - rng.randint(5_000, 500_000))
        elif kind < 0.45:  # a version before the note numbers: no number counted
            await r.zadd(recent, {f"cmp_v{step}": now_ms()})
            await r.hset(texts, f"cmp_v{step}", f"cus_v{step}\tz1 z2 z{step}")
        elif kind < 0.48:  # another with a shorter window sweeps: what it removed never counts again
            await other(step, now_ms(), start=now_ms() - rng.randint(1_000, 600_000), sweep=True)
        elif kind < 0.51 and scores:  # a complaint noted again (a retried check), from a time long before
            await other(step, now_ms() - 700_000, cid=(await r.zrandmember(recent)).decode())
        else:
            worked_out, held = await mine(step)
            assert worked_out == held, step
    assert await r.zcard(recent) > MAX_RECENT  # (the window was full: held by rank)
    # every note of this process after another's, by a clock in step: the window is never read
    # (once this process has seen another's note: alone, it asks for none, and reads the window)
    await other(10_000, now_ms())
    await mine(10_000)
    reads = incidents.window_reads
    for step in range(10_001, 10_101):
        await other(step, now_ms())
        worked_out, held = await mine(step + 100_000)
        assert worked_out == held
    assert incidents.window_reads == reads


async def test_a_complaint_noted_again_keeps_its_place_or_leaves_with_a_sweep(desk: Any) -> None:
    """The check's own note of a complaint noted before keeps its score (ZADD NX), and the worker
    takes the window's score for it, not the one it asked for; one from before the window whose
    note sweeps is taken out by that sweep and is not in the window (no error either)."""
    import numpy as np

    from router.incidents import _cache

    r, store, incidents = desk
    category = "merchant_dispute"
    recent = store.keys.incident_recent(category)
    assert await incidents.consider("cmp_k0", "cus_k0", category, "q1 q2 q3 q4") == NO_INCIDENT
    first = int(await r.zscore(recent, "cmp_k0"))
    assert await incidents.consider("cmp_k0", "cus_k0", category, "q1 q2 q3 q4", at_ms=first + 5_000) == NO_INCIDENT
    assert int(await r.zscore(recent, "cmp_k0")) == first
    known = _cache.entries[recent]
    assert known.entries[b"cmp_k0"][5] == first and known.entries[b"cmp_k0"][6] < 2 ** 62
    sweeping = next(f"cmp_sw{n}" for n in range(1000) if zlib.crc32(b"cmp_sw%d" % n) % SWEEP_EVERY == 0)
    assert await incidents.consider(sweeping, "cus_sw", category, "q1 q2 q3 q5", at_ms=first - 700_000) == NO_INCIDENT
    assert await r.zscore(recent, sweeping) is None  # (older than the window: swept at once)
    assert known.entries[sweeping.encode()][6] == 2 ** 62  # never landed in a window: never compared
    args = incidents.note_args("cmp_k1", "cus_k1", category, frozenset({"q1", "q2", "q6"}))
    result = await incidents._note(keys=[recent, store.keys.incident_texts(category), store.keys.incidents_open(category),
                                         store.keys.incident_notes(category), incidents.key("inc_k1")],
                                   args=["cmp_k1", *args])
    known, among, _ = await incidents._window(category, int(args[1]), result[1])
    assert sorted(known._by_row[c][4] for c in np.flatnonzero(among).tolist()) == [b"cmp_k0", b"cmp_k1"]


def test_an_entry_landed_takes_the_windows_score() -> None:
    """A note's answer names the entries it landed with their scores in the window: an entry this
    process holds at another score (asked again from another time while the first answer waited)
    takes the window's, and the number of the note that landed it."""
    from router.incident_window import PENDING, Window

    window = Window()
    window.add(b"cmp_x", "cus_x", frozenset({"a", "b", "c"}), 2_000)  # pending, at the score asked the second time
    window.held(1, 0, None)  # (its column written)
    window.landed([b"cmp_x", b"1000"], 5)
    assert window.entries[b"cmp_x"][5:] == (1_000, 5)
    assert window.held(5, 999, None).tolist() == [True] and window.held(5, 1_000, None).tolist() == [False]
    window.landed([b"cmp_x", b"1000"], 9)  # a later answer: it landed by 5 already
    assert window.entries[b"cmp_x"][6] == 5 and window.entries[b"cmp_x"][6] != PENDING


async def test_a_sweep_by_a_clock_running_fast_starts_no_window_after_redis_s_now(desk: Any) -> None:
    """A process whose clock runs a day ahead sweeps its category's window (everything in it is older
    than its start): later windows start at Redis's now, not a day ahead, and hold what is noted
    after it."""
    import asyncio

    import numpy as np

    r, store, incidents = desk
    category = "refund_delay"
    keys = [store.keys.incident_recent(category), store.keys.incident_texts(category),
            store.keys.incidents_open(category), store.keys.incident_notes(category)]
    assert await incidents.consider("cmp_f0", "cus_f0", category, "q1 q2 q3 q4") == NO_INCIDENT
    ahead = now_ms() + 86_400_000
    await r.register_script(INCIDENT_NOTE_LUA)(keys=[*keys, incidents.key("inc_none")], args=[
        "cmp_fast", "cus_fast\tz1 z2 z3", ahead, ahead - 600_000, MAX_RECENT, 0, "1", "-"])
    assert int(await r.hget(keys[1], SWEPT_FIELD)) <= now_ms()
    await asyncio.sleep(0.003)  # (a complaint noted in the sweep's millisecond is not younger than its start)
    for n in (1, 2):
        args = incidents.note_args(f"cmp_f{n}", f"cus_f{n}", category, frozenset({"q1", "q2", f"p{n}"}))
        result = await incidents._note(keys=[*keys, incidents.key(f"inc_f{n}")], args=[f"cmp_f{n}", *args])
    known, among, _ = await incidents._window(category, int(args[1]), result[1])
    assert sorted(known._by_row[c][4] for c in np.flatnonzero(among).tolist()) == [b"cmp_f1", b"cmp_f2", b"cmp_fast"]


async def test_note_numbers_go_on_from_where_a_version_before_kept_them(desk: Any) -> None:
    """Versions before this one kept a category's last note number in its notes hash: the first
    note after them reads it there once and goes on from it; the number then lives beside the
    texts (each note reads it with the open version and the sweep's start, and writes it with its
    texts)."""
    r, store, incidents = desk
    category = "card_binding"
    keys = [store.keys.incident_recent(category), store.keys.incident_texts(category),
            store.keys.incidents_open(category), store.keys.incident_notes(category)]
    await r.hset(keys[3], "n", 41)
    note = r.register_script(INCIDENT_NOTE_LUA)
    numbers = []
    for n in range(3):
        answer = await note(keys=[*keys, incidents.key("inc_none")], args=[
            f"cmp_n{n}", f"cus_n{n}\tz1 z2 z3", now_ms(), now_ms() - 600_000, MAX_RECENT, 0, "0", "-"])
        numbers.append(answer[1][4])
    assert numbers == [42, 43, 44]
    assert await r.hget(keys[1], SEQ_FIELD) == b"44" and await r.hget(keys[3], "n") == b"41"
    assert await texts_held(r, keys[1]) == 3
