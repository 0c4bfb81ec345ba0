"""What an enricher's payment_check answer does to a case (router.payment_check), the plugin's
own decisions (adapters.payment_records: who is looked up, "charged twice", giving up), and its
demo API's answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from litestar.testing import TestClient
from litestar import Litestar

from gateway.problems import exception_handlers
from adapters.payment_records import CHARGED_TWICE, PaymentRecords, PaymentRecordsSettings, demo_records
from normalizer.schema import Amount, Complaint, ComplaintStatus, Contact, InboundMessage, PaymentCheck
from router.payment_check import DUPLICATE_PRIORITY_BOOST, MAX_TRIES, lookup_of, record

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
CHARGE = {"transaction_id": "T1", "amount": {"value": "10.00", "currency": "CNY"}, "status": "succeeded"}


def complaint(**fields: Any) -> Complaint:
    base: dict[str, Any] = dict(id="cmp_1", case_number="C-20261201-000001", channel="app", customer_id="cus_1",
                                contact=Contact(kind="app_user", value="u1"), category="payment_amount",
                                status=ComplaintStatus.accepted, formal_complaint=False, language="en",
                                priority=6, skill="payments", created_at=NOW, updated_at=NOW)
    base.update(fields)
    return Complaint(**base)


def message(**fields: Any) -> InboundMessage:
    fields.setdefault("sender", Contact(kind="app_user", value="u1"))
    return InboundMessage(id="msg_1", channel="app", text=fields.pop("text", "help"), received_at=NOW, **fields)


@pytest.mark.parametrize("answer, tags, priority, history, has_job", [
    ({"payment_check": {"state": "found", "charge": CHARGE, "duplicates": [CHARGE | {"transaction_id": "T2"}],
                        "duplicate_confirmed": True}}, ["duplicate_charge_confirmed"], 6 + DUPLICATE_PRIORITY_BOOST,
     "payment_checked", False),
    ({"payment_check": {"state": "found", "charge": CHARGE, "amount_mismatch": True,
                        "claimed_amount": {"value": "9.00", "currency": "CNY"}}}, ["amount_mismatch"], 6,
     "payment_checked", False),
    ({"payment_check": {"state": "not_found"}}, ["payment_not_found"], 6, "payment_checked", False),
    ({"payment_check": {"state": "retrying", "error": "HTTP 503"}, "retry_after_seconds": 2}, [], 6,
     "payment_lookup_failed", True),
    ({"payment_check": {"state": "failed", "error": "HTTP 401"}}, ["payment_lookup_failed"], 6,
     "payment_lookup_gave_up", False),
])
def test_an_answer_on_the_case(answer: dict[str, Any], tags: list[str], priority: int, history: str,
                               has_job: bool) -> None:
    case = complaint()
    job = record(case, "payments", lookup_of("payments", answer, None, NOW), NOW)
    assert case.tags == tags and case.priority == priority
    assert [h.action for h in case.history] == [history]
    assert case.payment_check is not None and case.payment_check.source == "payments"
    assert (job is not None) == has_job
    if job is not None:
        assert job.job_id == "payment:cmp_1:payments:2" and job.args == ("cmp_1", "payments", 2)
        assert job.defer_ms == 2000 and case.payment_check.next_try_at == NOW + timedelta(seconds=2)


def test_recorded_twice_raises_the_priority_once() -> None:
    case = complaint()
    answer = {"payment_check": {"state": "found", "charge": CHARGE, "duplicate_confirmed": True}}
    for _ in range(2):
        record(case, "payments", lookup_of("payments", answer, case.payment_check, NOW), NOW)
    assert case.priority == 6 + DUPLICATE_PRIORITY_BOOST and case.tags == ["duplicate_charge_confirmed"]


@pytest.mark.parametrize("answer", [
    {"payment_check": "found"},
    {"payment_check": {"state": "maybe"}},
    {"payment_check": {"state": "found"}},  # no charge
    {"payment_check": {"state": "retrying"}},  # no retry_after_seconds
    {"payment_check": {"state": "found", "charge": {"transaction_id": "T1"}}},
])
def test_answers_not_in_the_documented_shape_are_refused(answer: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        lookup_of("payments", answer, None, NOW)


def test_tries_count_on_and_the_gateway_stops_at_its_bound() -> None:
    previous = PaymentCheck(source="payments", checked_at=NOW, state="retrying", tries=MAX_TRIES - 1)
    lookup = lookup_of("payments", {"payment_check": {"state": "retrying", "error": "x"}, "retry_after_seconds": 1},
                       previous, NOW)
    assert lookup.check.tries == MAX_TRIES
    case = complaint(payment_check=previous)
    assert record(case, "payments", lookup, NOW) is None
    assert case.payment_check is not None and case.payment_check.state == "failed"
    assert "payment_lookup_failed" in case.tags


@pytest.mark.parametrize("text, twice", [
    ("我被重复扣款了 ¥128.50", True), ("同一笔扣了两次", True), ("I was charged twice", True),
    ("double charged for my coffee", True), ("duplicate payment on my card", True),
    ("扣款金额不对", False), ("refund not received", False), ("I paid once", False),
])
def test_charged_twice_wording(text: str, twice: bool) -> None:
    assert bool(CHARGED_TWICE.search(text)) is twice


def plugin(**settings: Any) -> PaymentRecords:
    # nothing listens here: a lookup that is tried fails at once (no connection)
    return PaymentRecords(PaymentRecordsSettings(url="http://127.0.0.1:9", timeout_seconds=1.0, **settings))


@pytest.mark.parametrize("case, msg", [
    (complaint(category="function_fault"), message()),  # not a payment case, no transaction id
    (complaint(), message()),  # nothing to look up by
    (complaint(amount=Amount("1.00", "CNY"), contact=Contact(kind="phone", value="+8613800138000")),
     message(sender=Contact(kind="phone", value="+8613800138000"))),  # an amount, but no account
])
async def test_cases_not_looked_up(case: Complaint, msg: InboundMessage) -> None:
    assert await plugin().enrich_complaint(case, msg) is None


async def test_off_without_a_url() -> None:
    assert await PaymentRecords(PaymentRecordsSettings()).enrich_complaint(
        complaint(transaction_id="T1"), message()) is None


async def test_records_away_retrying_then_given_up_after_its_tries() -> None:
    records = plugin(retry_tries=3, retry_backoff_seconds=5)
    case = complaint(transaction_id="T1")
    first = await records.enrich_complaint(case, message())
    assert first is not None and first["payment_check"]["state"] == "retrying" and first["retry_after_seconds"] == 5
    case.payment_check = PaymentCheck(source="payment_records", checked_at=NOW, state="retrying", tries=1)
    second = await records.enrich_complaint(case, message())
    assert second is not None and second["retry_after_seconds"] == 10
    case.payment_check.tries = 2
    last = await records.enrich_complaint(case, message())
    assert last is not None and last["payment_check"]["state"] == "failed" and "retry_after_seconds" not in last
    assert "gave up after 3 lookups" in last["payment_check"]["error"]


def test_demo_api() -> None:
    records = PaymentRecords(PaymentRecordsSettings(demo=True, demo_base_url="http://gw.test", token="t0k"))
    assert records.base_url == "http://gw.test/webhooks/payment_records"
    mount = records.gateway_routes(services=None)  # type: ignore[arg-type]
    assert mount is not None
    app = Litestar(route_handlers=list(mount.handlers), exception_handlers=exception_handlers)
    auth = {"Authorization": "Bearer t0k"}
    with TestClient(app) as client:
        assert client.get("/charges/T20261201100001").status_code == 401
        assert client.get("/charges/T20261201100001", headers=auth).json()["merchant"] == "Metro Coffee"
        assert client.get("/charges/T0", headers=auth).status_code == 404
        charged = demo_records(datetime.now(timezone.utc))[0].charged_at
        assert charged is not None
        window = {"account_id": "u1", "amount": "128.5", "from": (charged - timedelta(minutes=10)).isoformat(),
                  "to": (charged + timedelta(minutes=10)).replace(tzinfo=None).isoformat()}
        items = client.get("/charges", params=window, headers=auth).json()["items"]
        assert [i["transaction_id"] for i in items] == ["T20261201100001", "T20261201100002"]
    assert PaymentRecords(PaymentRecordsSettings(url="http://x", demo=True)).gateway_routes(
        services=None) is None  # type: ignore[arg-type]
