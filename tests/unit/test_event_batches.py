"""The plugin manager's two ways to a listener (plugins/manager.py): a batch to ``complaint_events``,
one call per event to a plugin that knows only ``complaint_event``, a single event as a batch of
one to a plugin that knows only ``complaint_events``; refusals answered, personal data masked."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from normalizer.schema import Complaint, ComplaintEvent, ComplaintStatus, Contact
from plugins.hookspecs import hookimpl
from plugins.manager import GatewayPlugins

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
PHONE = "+8613800138000"


def complaint(cid: str) -> Complaint:
    return Complaint(id=cid, case_number="C-20261201-000001", status=ComplaintStatus.accepted, category="other",
                     formal_complaint=False, channel="twilio_sms", customer_id="cus",
                     contact=Contact(kind="phone", value=PHONE), language="en", created_at=NOW, updated_at=NOW)


def event(cid: str, kind: str) -> ComplaintEvent:
    return ComplaintEvent(kind=kind, complaint_id=cid, case_number="C-20261201-000001", at=NOW)


class Batch:
    def __init__(self, refuse: bool = False, needs: bool = False) -> None:
        self.refuse, self.needs_personal_data = refuse, needs
        self.calls: list[tuple[list[str], set[str]]] = []

    @hookimpl
    def complaint_events(self, events, complaints):
        self.calls.append(([f"{e.complaint_id}:{e.kind}" for e in events], {c.contact.value for c in complaints.values()}))
        if self.refuse:
            raise RuntimeError("away")


class Single:
    listening = True

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    async def complaint_event(self, event, complaint):
        self.calls.append(f"{event.complaint_id}:{event.kind}")
        raise RuntimeError("counted, not retried")


class Deaf(Single):
    listening = False


def plugins(**named) -> GatewayPlugins:
    pm = GatewayPlugins()
    for name, plugin in named.items():
        pm.register(name, plugin)
    pm.check()
    return pm


def test_a_batch_goes_whole_to_batch_listeners_and_event_by_event_to_the_others():
    batch, refusing, personal, single, deaf = Batch(), Batch(refuse=True), Batch(needs=True), Single(), Deaf()
    pm = plugins(batch=batch, refusing=refusing, personal=personal, single=single, deaf=deaf)
    events = [event("c1", "sla_warning"), event("c2", "sla_warning"), event("c1", "sla_breached")]
    refused = asyncio.run(pm.emit_batch(events, {"c1": complaint("c1"), "c2": complaint("c2")}))
    assert refused == ["refusing"]
    expected = ["c1:sla_warning", "c2:sla_warning", "c1:sla_breached"]
    assert [names for names, _ in batch.calls] == [expected]
    assert PHONE not in batch.calls[0][1] and personal.calls[0][1] == {PHONE}
    assert single.calls == expected  # each event, in order, though each raised
    assert deaf.calls == []
    assert pm.errors["refusing"] == 1 and pm.errors["single"] == 3


def test_a_single_event_reaches_a_batch_only_listener_as_a_batch_of_one():
    batch, single = Batch(), Single()
    pm = plugins(batch=batch, single=single)
    asyncio.run(pm.emit(event("c1", "reopened"), complaint("c1")))
    assert [names for names, _ in batch.calls] == [["c1:reopened"]] and single.calls == ["c1:reopened"]


def test_a_batch_only_plugin_is_a_listener():
    assert plugins(batch=Batch()).has_listeners
    assert not plugins(deaf=Deaf()).has_listeners
    assert not plugins().has_listeners
