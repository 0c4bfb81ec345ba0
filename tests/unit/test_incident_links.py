"""A complaint's incident links, kept beside it (``delivery:<cid>``, field ``INCIDENT_LINK``):
appended in Redis by the scripts that join or form an incident, merged into the complaint on
every read, and taken into the complaint by its next change."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from typing import Any

from normalizer.schema import Complaint, ComplaintStatus, Contact, HistoryEvent
from router.incidents import Decision
from router.store import INCIDENT_LINK, encode_incident_link
from router.store.codec import with_link
from router.store.scripts import JOIN_IF_OPEN_LUA, LINK_LUA

T0 = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)


def _complaint(history: list[HistoryEvent]) -> Complaint:
    return Complaint(id="cmp_1", case_number="C-20261202-000001", status=ComplaintStatus.accepted,
                     category="function_fault", formal_complaint=False, channel="app", customer_id="cus_1",
                     contact=Contact(kind="app_user", value="u1"), language="en", created_at=T0,
                     updated_at=T0 + timedelta(seconds=5), history=list(history))


def _links(*links: tuple[str, datetime]) -> bytes:
    return b"[" + b",".join(encode_incident_link(iid, at) for iid, at in links) + b"]"


def _linked(complaint: Complaint) -> list[tuple[str, datetime]]:
    return [(e.detail["incident_id"], e.at) for e in complaint.history if e.action == "incident_linked"]


def test_links_merge_in_time_order_once_and_the_last_is_the_incident() -> None:
    opened = HistoryEvent(at=T0, actor="worker", action="routed")
    replied = HistoryEvent(at=T0 + timedelta(seconds=20), actor="agent:a", action="replied")
    links = _links(("inc_a", T0 + timedelta(seconds=1)), ("inc_b", T0 + timedelta(seconds=30)))
    complaint = with_link(_complaint([opened, replied]), links)
    assert complaint.incident_id == "inc_b" and complaint.tags.count("incident") == 1
    assert [e.action for e in complaint.history] == ["routed", "incident_linked", "replied", "incident_linked"]
    assert _linked(complaint) == [("inc_a", T0 + timedelta(seconds=1)), ("inc_b", T0 + timedelta(seconds=30))]
    assert complaint.updated_at == T0 + timedelta(seconds=30)
    again = with_link(with_link(_complaint([opened, replied]), links), links)  # merged on every read
    assert again == complaint
    # a complaint that took the first link in (its next change) and was moved on since
    first_only = with_link(_complaint([opened, replied]), _links(("inc_a", T0 + timedelta(seconds=1))))
    assert with_link(first_only, links) == complaint


def test_a_complaint_an_earlier_version_linked_in_its_record_is_not_linked_twice() -> None:
    """Before links were kept beside it, the link was written into the complaint: a check run
    again since (a link to the same incident, a later time) adds nothing; one to another incident
    does. A link written alone (not in a list) is read as one."""
    def record() -> Complaint:
        linked = HistoryEvent(at=T0, actor="worker", action="incident_linked", detail={"incident_id": "inc_a"})
        complaint = _complaint([linked])
        complaint.incident_id, complaint.tags = "inc_a", ["incident"]
        return complaint

    assert with_link(record(), _links(("inc_a", T0 + timedelta(minutes=5)))) == record()
    moved = with_link(record(), _links(("inc_a", T0 + timedelta(minutes=5)), ("inc_b", T0 + timedelta(minutes=6))))
    assert moved.incident_id == "inc_b" and [i for i, _ in _linked(moved)] == ["inc_a", "inc_b"]
    alone = with_link(_complaint([]), encode_incident_link("inc_b", T0))
    assert alone.incident_id == "inc_b" and _linked(alone) == [("inc_b", T0)]


def test_a_naive_time_in_the_history_is_read_as_utc() -> None:
    """Plugins may hand naive times to the kit: a link is still placed, not an error on every read."""
    naive = HistoryEvent(at=(T0 + timedelta(seconds=10)).replace(tzinfo=None), actor="worker", action="routed")
    complaint = with_link(_complaint([naive]), _links(("inc_a", T0 + timedelta(seconds=2))))
    assert [e.action for e in complaint.history] == ["incident_linked", "routed"]


async def test_the_scripts_append_links_and_a_check_run_again_keeps_the_first_time(desk: Any) -> None:
    r, store, _ = desk
    k = store.keys
    link_of = k.delivery("cmp_1")
    join = r.register_script(JOIN_IF_OPEN_LUA)

    async def links() -> list[dict[str, str]]:
        return json.loads(await r.hget(link_of, INCIDENT_LINK))

    await r.sadd(k.incidents_open("function_fault"), "inc_a", "inc_b")
    await r.set(k.incident("inc_a"), json.dumps({"id": "inc_a", "answer": None}))
    args = (k.incidents_open("function_fault"), k.incident_complaints("inc_a"), link_of, k.incident("inc_a"))
    assert await join(keys=list(args), args=["inc_a", "cmp_1", encode_incident_link("inc_a", T0)]) == [[1]]
    first = await links()
    later = encode_incident_link("inc_a", T0 + timedelta(minutes=1))
    assert await join(keys=list(args), args=["inc_a", "cmp_1", later]) == [[1]]  # run again
    assert await links() == first == [{"incident_id": "inc_a", "at": T0.isoformat()}]
    # an answered incident is answered with the joining
    await r.set(k.incident("inc_a"), json.dumps({"id": "inc_a", "answer": {"en": "fixed"}}))
    [answered] = await join(keys=list(args), args=["inc_a", "cmp_1", later])
    assert answered[0] == 1 and json.loads(answered[1])["answer"] == {"en": "fixed"}
    # moved on to another incident: appended; a forming's "only if none" leaves linked ones alone
    assert await r.eval(LINK_LUA, 1, link_of, "inc_b", encode_incident_link("inc_b", T0 + timedelta(minutes=2)),
                        "0") == 1
    assert await r.eval(LINK_LUA, 2, link_of, k.delivery("cmp_2"), "inc_c", encode_incident_link("inc_c", T0),
                        "1") == 1
    assert [link["incident_id"] for link in await links()] == ["inc_a", "inc_b"]
    assert json.loads(await r.hget(k.delivery("cmp_2"), INCIDENT_LINK))[0]["incident_id"] == "inc_c"
    # a link written alone (not in a list) is kept as the first of the list
    await r.hset(k.delivery("cmp_4"), INCIDENT_LINK, encode_incident_link("inc_a", T0))
    assert await r.eval(LINK_LUA, 1, k.delivery("cmp_4"), "inc_b", encode_incident_link("inc_b", T0), "0") == 1
    assert [link["incident_id"] for link in json.loads(await r.hget(k.delivery("cmp_4"), INCIDENT_LINK))] == [
        "inc_a", "inc_b"]
    # a closed incident is not joined, and nothing is linked
    await r.srem(k.incidents_open("function_fault"), "inc_a")
    assert await join(keys=list(args), args=["inc_a", "cmp_3", later]) == [0]


async def test_joins_asked_for_together_are_each_answered_on_their_own(desk: Any) -> None:
    """One call of the join script with the entries of several jobs (an outage's burst): each
    complaint joins only while its own incident is open, each is linked to its own incident, and
    each is answered as it would have been alone (an answered incident's answer, read once)."""
    r, store, _ = desk
    k = store.keys
    join = r.register_script(JOIN_IF_OPEN_LUA)
    await r.sadd(k.incidents_open("function_fault"), "inc_a", "inc_b")
    await r.set(k.incident("inc_a"), json.dumps({"id": "inc_a", "answer": {"en": "fixed"}}))
    await r.set(k.incident("inc_b"), json.dumps({"id": "inc_b", "answer": None}))
    entries = [("inc_a", "cmp_1"), ("inc_b", "cmp_2"), ("inc_c", "cmp_3"), ("inc_a", "cmp_4")]  # inc_c: closed
    keys = [key for iid, cid in entries for key in (k.incidents_open("function_fault"), k.incident_complaints(iid),
                                                    k.delivery(cid), k.incident(iid))]
    args = [a for iid, cid in entries for a in (iid, cid, encode_incident_link(iid, T0))]
    answers = await join(keys=keys, args=args)
    assert [a if a == 0 else a[0] for a in answers] == [1, 1, 0, 1]
    assert [json.loads(a[1])["answer"] for a in (answers[0], answers[3])] == [{"en": "fixed"}] * 2
    assert answers[1] == [1]
    assert sorted(await r.smembers(k.incident_complaints("inc_a"))) == [b"cmp_1", b"cmp_4"]
    assert await r.smembers(k.incident_complaints("inc_b")) == {b"cmp_2"}
    assert not await r.exists(k.incident_complaints("inc_c"), k.delivery("cmp_3"))
    for iid, cid in (("inc_a", "cmp_1"), ("inc_b", "cmp_2"), ("inc_a", "cmp_4")):
        assert [link["incident_id"] for link in json.loads(await r.hget(k.delivery(cid), INCIDENT_LINK))] == [iid]


async def test_the_joins_of_jobs_running_together_share_one_call(desk: Any) -> None:
    """Jobs of one process that join open incidents at the same moment send their joins together,
    in one call (all handed over before it went out), each with its own decision."""
    r, store, incidents = desk
    k = store.keys
    await r.sadd(k.incidents_open("function_fault"), "inc_a")
    await r.set(k.incident("inc_a"), json.dumps({"id": "inc_a", "answer": None}))
    open_key = k.incidents_open("function_fault")
    cids = [f"cmp_j{n}" for n in range(6)]
    decisions = await asyncio.gather(*(incidents._link_if_open(open_key, "inc_a", cid) for cid in cids))
    assert decisions == [Decision("inc_a", [cid]) for cid in cids]
    assert incidents._joins.calls == 1 and incidents._joins.entries == 6
    assert await r.scard(k.incident_complaints("inc_a")) == 6
    await r.srem(open_key, "inc_a")  # closed: none joins, and the others' answers are not affected
    assert await incidents._link_if_open(open_key, "inc_a", "cmp_late") is None
