"""An enricher that has nothing to do as configured (``enriching = False``) is not called, and
nothing is masked for it (plugins/manager.py); the payment-records enricher without records to ask
is such an enricher."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import plugins.manager as manager_module
from adapters.payment_records import PaymentRecords, PaymentRecordsSettings
from normalizer.schema import Complaint, ComplaintStatus, Contact, InboundMessage
from plugins.hookspecs import hookimpl
from tests.unit.test_event_batches import plugins as manager

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
PHONE = "+8613800138000"


def complaint() -> Complaint:
    return Complaint(id="cmp_1", case_number="C-20261201-000001", status=ComplaintStatus.accepted, category="other",
                     formal_complaint=False, channel="twilio_sms", customer_id="cus",
                     contact=Contact(kind="phone", value=PHONE), language="en", created_at=NOW, updated_at=NOW)


def message() -> InboundMessage:
    return InboundMessage(id="msg_1", channel="twilio_sms", sender=Contact(kind="phone", value=PHONE),
                          text=f"call me on {PHONE}", received_at=NOW)


class Enricher:
    def __init__(self, enriching: bool) -> None:
        self.enriching = enriching
        self.seen: list[str] = []

    @hookimpl
    def enrich_complaint(self, complaint, message):
        self.seen.append(message.text)
        return {"tags": ["looked"]}


def test_an_enricher_that_is_off_is_not_called_and_nothing_is_masked_for_it(monkeypatch) -> None:
    masked = []
    real = manager_module.masked_message
    monkeypatch.setattr(manager_module, "masked_message", lambda m: masked.append(m.id) or real(m))
    off = Enricher(enriching=False)
    assert asyncio.run(manager(off=off).enrich(complaint(), message())) == []
    assert off.seen == [] and masked == []


def test_an_enricher_that_is_on_gets_the_masked_message() -> None:
    on, off = Enricher(enriching=True), Enricher(enriching=False)
    answers = asyncio.run(manager(on=on, off=off).enrich(complaint(), message()))
    assert answers == [("on", {"tags": ["looked"]})]
    assert len(on.seen) == 1 and PHONE not in on.seen[0] and off.seen == []


def test_payment_records_without_records_to_ask_is_not_an_enricher() -> None:
    assert PaymentRecords(PaymentRecordsSettings(url="", demo=False)).enriching is False
    assert PaymentRecords(PaymentRecordsSettings(url="http://127.0.0.1:9/records")).enriching is True
