"""A complaint checked against the payment records (核实支付记录), end to end: the app's message in
over the real app, a worker running as in production, the ``payment_records`` plugin asking a
local fake of the documented API (tests/fake_payments.py) over real HTTP.

- "charged twice" with a transaction id whose records hold two matching charges: the duplicate
  is confirmed, tagged, and the case raised in priority;
- a stated amount that differs from the charge: ``amount_mismatch`` with both amounts; a charge
  the records do not know: ``payment_not_found``; a non-payment case: not looked up at all;
- the records system away when the case opens: the case opens anyway, each failed lookup is in
  its history, the lookup is tried again with backoff and the charge is found once it is back.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator

import msgspec
import pytest

from adapters.app import AppChannel
from adapters.payment_records import PaymentRecords, PaymentRecordsSettings
from plugins.manager import GatewayPlugins
from plugins.settings import Settings
from router.payment_check import DUPLICATE_PRIORITY_BOOST
from tests.conftest import ALICE, APP, SUPERVISOR, eventually, gateway_client
from tests.fake_payments import TOKEN, FakePayments
from tests.integration.test_evidence_fetch import running_worker

pytestmark = pytest.mark.integration

WAIT_S = 20.0  # generous: a loaded 2-core machine


@pytest.fixture
def payments() -> Any:
    fake = FakePayments().start()
    yield fake
    fake.stop()


def plugins_for(fake: FakePayments, **extra: Any) -> GatewayPlugins:
    plugins = GatewayPlugins()
    plugins.register("app", AppChannel())
    plugins.register("payment_records", PaymentRecords(PaymentRecordsSettings(
        url=fake.base, token=TOKEN, timeout_seconds=2.0, retry_backoff_seconds=1.0, **extra)))
    plugins.check()
    return plugins


@contextlib.asynccontextmanager
async def desk(settings: Settings, plugins: GatewayPlugins) -> AsyncIterator[Any]:
    """The app over ASGI and a worker running throughout (keyword categoriser: a quick start)."""
    settings = msgspec.structs.replace(settings, worker_poll_seconds=0.05, categoriser="keywords")
    async with gateway_client(settings, plugins) as client, running_worker(settings, plugins):
        yield client


async def complaint_of(client: Any, body: dict[str, Any]) -> dict[str, Any]:
    """Post an app message; the complaint it opened, in full, once it exists."""
    r = await client.post("/v1/messages", json=body, headers=APP)
    assert r.status_code == 202, r.text
    mid = r.json()["message_id"]

    async def opened() -> str | None:
        return (await client.get(f"/v1/messages/{mid}", headers=APP)).json().get("complaint_id")

    cid = await eventually(opened, WAIT_S)
    return (await client.get(f"/v1/complaints/{cid}", headers=ALICE)).json()


async def settled(client: Any, cid: str, *states: str) -> dict[str, Any]:
    """The complaint once its payment check is in one of ``states``."""
    async def check() -> dict[str, Any] | None:
        c = (await client.get(f"/v1/complaints/{cid}", headers=ALICE)).json()
        return c if (c.get("payment_check") or {}).get("state") in states else None

    return await eventually(check, WAIT_S)


def actions(complaint: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [h for h in complaint["history"] if h["action"] == name]


async def test_duplicate_confirmed_amount_mismatch_and_not_found(settings: Settings, payments: FakePayments) -> None:
    now = datetime.now(timezone.utc)
    first, second = "T" + uuid.uuid4().hex[:14].upper(), "T" + uuid.uuid4().hex[:14].upper()
    payments.add(first, "u-dup", "128.50", "Metro Coffee", now - timedelta(hours=2))
    payments.add(second, "u-dup", "128.50", "Metro Coffee", now - timedelta(hours=2) + timedelta(seconds=90))
    payments.add("T" + uuid.uuid4().hex[:14].upper(), "u-dup", "128.50", "Metro Coffee",
                 now - timedelta(hours=2, seconds=60), status="refunded")  # refunded: not a duplicate
    payments.add("T" + uuid.uuid4().hex[:14].upper(), "u-dup", "128.50", "Book Nook",
                 now - timedelta(hours=2))  # another merchant: not a duplicate
    mismatch = "T" + uuid.uuid4().hex[:14].upper()
    payments.add(mismatch, "u-mis", "88.00", "City Mart", now - timedelta(days=1))

    async with desk(settings, plugins_for(payments)) as client:
        dup = await complaint_of(client, {
            "user_id": "u-dup", "text": "I was charged twice for one coffee", "language": "en",
            "transaction_id": first, "amount": "128.50", "currency": "CNY", "category_hint": "payment_amount"})
        other = await complaint_of(client, {
            "user_id": "u-mis", "text": "扣款金额不对，我只消费了 ¥80", "transaction_id": mismatch,
            "amount": "80.00", "category_hint": "payment_amount"})
        unknown = await complaint_of(client, {
            "user_id": "u-mis", "text": "Refund not received", "language": "en", "transaction_id": "T99999999999999",
            "category_hint": "payment_amount"})
        before = len(payments.lookups)
        app_fault = await complaint_of(client, {
            "user_id": "u-app", "text": "The app crashes when I open it", "language": "en",
            "category_hint": "function_fault"})
        queue = (await client.get("/v1/queues", headers=SUPERVISOR)).json()["items"]

    # the confirmed duplicate: both charges shown, tagged, raised above the category's priority
    check = dup["payment_check"]
    assert check["state"] == "found" and check["found"] is True and check["source"] == "payment_records"
    assert check["charge"]["transaction_id"] == first and check["charge"]["amount"] == {"value": "128.50",
                                                                                      "currency": "CNY"}
    assert check["charge"]["status"] == "succeeded" and check["charge"]["merchant"] == "Metro Coffee"
    assert [d["transaction_id"] for d in check["duplicates"]] == [second]
    assert check["duplicate_confirmed"] is True and check["amount_mismatch"] is False
    assert "duplicate_charge_confirmed" in dup["tags"]
    assert dup["priority"] == 6 + DUPLICATE_PRIORITY_BOOST  # payment_amount's base is 6
    [found] = actions(dup, "payment_checked")
    assert found["detail"]["duplicates"] == second and found["detail"]["duplicate_confirmed"] == "true"
    assert "4111" not in str(dup)  # what the records system adds (a card number) is never kept

    # a different amount: flagged, both amounts shown; the customer did not say "twice"
    check = other["payment_check"]
    assert check["amount_mismatch"] is True and check["duplicate_confirmed"] is False
    assert check["claimed_amount"] == {"value": "80.00", "currency": "CNY"}
    assert check["charge"]["amount"] == {"value": "88.00", "currency": "CNY"}
    assert "amount_mismatch" in other["tags"] and "duplicate_charge_confirmed" not in other["tags"]
    assert other["priority"] == 6
    [found] = actions(other, "payment_checked")
    assert found["detail"]["claimed_amount"] == "80.00 CNY" and found["detail"]["charged_amount"] == "88.00 CNY"

    # a charge the records do not know
    assert unknown["payment_check"]["state"] == "not_found" and unknown["payment_check"]["found"] is False
    assert "payment_not_found" in unknown["tags"]

    # a case about something else is not looked up
    assert app_fault["payment_check"] is None and len(payments.lookups) == before
    assert all(h["action"] != "payment_checked" for h in app_fault["history"])
    assert any(q["skill"] == "payments" for q in queue)


async def test_records_away_case_opens_and_the_lookup_is_tried_again(settings: Settings,
                                                                     payments: FakePayments) -> None:
    txn = "T" + uuid.uuid4().hex[:14].upper()
    at = datetime.now(timezone.utc) - timedelta(minutes=30)
    payments.add(txn, "u-late", "42.00", "Night Market", at)
    payments.add("T" + uuid.uuid4().hex[:14].upper(), "u-late", "42.00", "Night Market", at + timedelta(minutes=1))
    payments.outage.on = True

    async with desk(settings, plugins_for(payments)) as client:
        # an older case in the same queue at the category's priority (nothing to look it up by)
        older = await complaint_of(client, {"user_id": "u-old", "text": "Refund not received", "language": "en",
                                            "category_hint": "payment_amount"})
        assert older["payment_check"] is None and older["priority"] == 6
        # no transaction id: looked up by the stated amount on the customer's account
        c = await complaint_of(client, {"user_id": "u-late", "text": "我被重复扣款了 ¥42.00",
                                        "category_hint": "payment_amount"})
        # the case opened and was acknowledged while the records were away
        assert c["status"] == "accepted" and c["replies"][0]["kind"] == "ack"
        assert c["payment_check"]["state"] == "retrying" and c["payment_check"]["tries"] == 1
        assert c["payment_check"]["next_try_at"]
        assert c["priority"] == 6

        async def two_failed_tries() -> dict[str, Any] | None:
            now = (await client.get(f"/v1/complaints/{c['id']}", headers=ALICE)).json()
            return now if len(actions(now, "payment_lookup_failed")) >= 2 else None

        await eventually(two_failed_tries, WAIT_S)
        payments.outage.on = False
        done = await settled(client, c["id"], "found", "failed")
        lookups = len(payments.lookups)
        queues = (await client.get("/v1/queues", headers=SUPERVISOR)).json()["items"]
        claimed = (await client.post("/v1/queues/payments/claim", headers=ALICE)).json()["complaint"]

    failed = actions(done, "payment_lookup_failed")
    assert [h["detail"]["try"] for h in failed] == [str(n) for n in range(1, len(failed) + 1)]
    assert all("503" in h["detail"]["reason"] for h in failed)
    check = done["payment_check"]
    assert check["state"] == "found" and check["tries"] == len(failed) + 1 and check["error"] is None
    assert check["charge"]["transaction_id"] == txn and check["duplicate_confirmed"] is True
    assert "duplicate_charge_confirmed" in done["tags"] and done["priority"] == 6 + DUPLICATE_PRIORITY_BOOST
    assert len(actions(done, "payment_checked")) == 1
    # the queue moved it up: the raised case is the one an agent gets first, before the older one
    assert any(q["skill"] == "payments" for q in queues) and claimed["id"] == done["id"]
    assert len(payments.lookups) == lookups  # found: never asked again
