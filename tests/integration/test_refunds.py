"""Refund or compensation as an outcome, over the real app, real Redis and the worker: at or below
the policy's threshold the case is resolved at once and the customer told the amount, the method
and when to expect it; above it the plan waits for a supervisor (the customer told so), who
approves it (the customer told the amount) or rejects it with a reason (back to the agent)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ALICE, APP, BOB, SUPERVISOR

pytestmark = pytest.mark.integration


async def open_claimed_case(client: Any, drain: Any, text: str, user: str, language: str) -> str:
    """A payment-amount appeal from the app, claimed by alice; its id."""
    r = await client.post("/v1/messages", json={"user_id": user, "text": text, "language": language}, headers=APP)
    assert r.status_code == 202, r.text
    await drain()
    claimed = await client.post("/v1/queues/payments/claim", headers=ALICE)
    assert claimed.status_code == 200, claimed.text
    return claimed.json()["complaint"]["id"]


async def customer_sees(client: Any, drain: Any, cid: str) -> list[tuple[str, str]]:
    """What the customer's app shows once the worker sent everything: (kind, text) of each reply
    delivered."""
    await drain()
    view = (await client.get(f"/v1/complaints/{cid}", headers=APP)).json()
    return [(r["kind"], r["text"]) for r in view["replies"] if r["delivery"] == "delivered"]


def actions(complaint: dict[str, Any]) -> list[tuple[str, str]]:
    return [(h["action"], h["actor"]) for h in complaint["history"]]


@pytest.fixture
async def steady_policy(client: Any) -> None:
    """Progress updates go out whatever the hour of the test run (no quiet hours)."""
    policy = (await client.get("/v1/policy/deadlines", headers=SUPERVISOR)).json()
    policy["progress"]["quiet_hours"] = None
    assert (await client.put("/v1/policy/deadlines", json=policy, headers=SUPERVISOR)).status_code == 200


@pytest.mark.parametrize("body, code, field", [
    ({"root_cause": "gremlins"}, "invalid_root_cause", "root_cause"),
    ({"refund": {"amount": {"value": "0", "currency": "CNY"}, "method": "wallet_balance"}},
     "invalid_amount", "refund.amount.value"),
    ({"refund": {"amount": {"value": "12.345", "currency": "CNY"}, "method": "wallet_balance"}},
     "invalid_amount", "refund.amount.value"),
    ({"refund": {"amount": {"value": "12", "currency": "XYZ"}, "method": "wallet_balance"}},
     "invalid_currency", "refund.amount.currency"),
    ({"refund": {"amount": {"value": "12", "currency": "CNY"}, "method": "cash"}}, "invalid_field", "refund.method"),
    ({"outcome": "rejected", "reason": "not charged twice",
      "refund": {"amount": {"value": "12", "currency": "CNY"}, "method": "wallet_balance"}},
     "refund_contradicts_outcome", "refund"),
])
async def test_a_bad_refund_or_root_cause_is_refused_naming_the_field(client, body, code, field):
    r = await client.post("/v1/complaints/cmp_none/resolve", json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code and r.json()["field"] == field


async def test_a_refund_at_or_below_the_threshold_is_resolved_at_once(client, drain):
    cid = await open_claimed_case(client, drain, "我被重复扣款了 ¥128.50，请退款", "u-refund-1", "zh")
    r = await client.post(f"/v1/complaints/{cid}/resolve", headers=ALICE, json={
        "outcome": "upheld", "reason": "重复扣款已核实", "root_cause": "system_error",
        "refund": {"amount": {"value": "128.5", "currency": "cny"}, "method": "wallet_balance"}})
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["status"] == "resolved" and c["stage"] is None and c["root_cause"] == "system_error"
    refund = c["refund"]
    assert refund["state"] == "approved" and refund["decided_by"] == "policy"
    assert refund["amount"] == {"value": "128.50", "currency": "CNY"} and refund["threshold"]["value"] == "500.00"
    assert refund["proposed_by"] == "agent:alice" and refund["expected"] == "24 小时内"
    assert actions(c)[-3:] == [("refund_proposed", "agent:alice"), ("refund_approved", "policy"),
                               ("resolved", "agent:alice")]

    told = await customer_sees(client, drain, cid)
    kinds = [kind for kind, _ in told]
    assert kinds[-2:] == ["notice", "survey"]
    notice = told[-2][1]
    assert "CNY 128.50" in notice and "钱包余额" in notice and "24 小时内" in notice and "重复扣款已核实" in notice
    app_view = (await client.get(f"/v1/complaints/{cid}", headers=APP)).json()
    assert app_view["refund"] == {"amount": {"value": "128.50", "currency": "CNY"}, "method": "wallet_balance",
                                  "kind": "refund", "state": "approved", "expected": "24 小时内"}
    assert "root_cause" not in app_view


async def test_above_the_threshold_a_supervisor_approves_and_the_customer_is_told(client, drain, steady_policy):
    cid = await open_claimed_case(client, drain, "I was charged twice, 800 yuan taken twice", "u-refund-2", "en")
    proposal = {"outcome": "upheld", "reason": "Duplicate charge confirmed.", "root_cause": "system_error",
                "refund": {"amount": {"value": "800.00", "currency": "CNY"}, "method": "original_route"}}
    r = await client.post(f"/v1/complaints/{cid}/resolve", json=proposal, headers=ALICE)
    assert r.status_code == 202, r.text
    c = r.json()
    assert c["status"] == "in_progress" and c["stage"] == "awaiting_approval" and c["assignee"] == "alice"
    assert c["refund"]["state"] == "awaiting_approval" and c["resolved_at"] is None
    assert c["first_responded_at"] is not None  # the agent handled it; the resolution clock runs on
    assert next(d for d in c["deadlines"] if d["kind"] == "resolution")["state"] == "running"

    told = await customer_sees(client, drain, cid)
    assert told[-1][0] == "progress" and "awaiting approval" in told[-1][1]

    listed = await client.get("/v1/approvals", headers=BOB)  # agents see what waits; supervisors decide
    assert listed.status_code == 200, listed.text
    [item] = listed.json()["items"]
    assert item["complaint_id"] == cid and item["refund"]["amount"] == {"value": "800.00", "currency": "CNY"}

    refused = await client.post(f"/v1/complaints/{cid}/refund/approve", json={}, headers=ALICE)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    pending = await client.post(f"/v1/complaints/{cid}/resolve", json={"outcome": "answered"}, headers=ALICE)
    assert pending.status_code == 409 and pending.json()["code"] == "approval_pending"

    r = await client.post(f"/v1/complaints/{cid}/refund/approve", json={"reason": "Matches the ledger."},
                          headers=SUPERVISOR)
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["status"] == "resolved" and c["stage"] is None and c["outcome"] == "upheld"
    assert c["refund"]["state"] == "approved" and c["refund"]["decided_by"] == "supervisor:sam"
    assert c["refund"]["decision_reason"] == "Matches the ledger."
    approved = next(h for h in c["history"] if h["action"] == "refund_approved")
    assert approved["actor"] == "supervisor:sam" and approved["detail"]["proposed_by"] == "agent:alice"

    told = await customer_sees(client, drain, cid)
    assert [kind for kind, _ in told][-2:] == ["notice", "survey"]
    notice = told[-2][1]
    assert "CNY 800.00" in notice and "to the account you paid from" in notice
    assert "within 1–7 working days" in notice

    again = await client.post(f"/v1/complaints/{cid}/refund/approve", json={}, headers=SUPERVISOR)
    assert again.status_code == 409 and again.json()["code"] == "complaint_closed"
    assert (await client.get("/v1/approvals", headers=SUPERVISOR)).json()["items"] == []


async def test_a_rejected_refund_goes_back_to_its_agent_who_proposes_again(client, drain, steady_policy):
    cid = await open_claimed_case(client, drain, "wrong amount charged, 1200 instead of 120", "u-refund-3", "en")
    above = {"outcome": "upheld", "reason": "Overcharged.",
             "refund": {"amount": {"value": "1200.00", "currency": "CNY"}, "method": "original_route"}}
    assert (await client.post(f"/v1/complaints/{cid}/resolve", json=above, headers=ALICE)).status_code == 202

    no_reason = await client.post(f"/v1/complaints/{cid}/refund/reject", json={"reason": " "}, headers=SUPERVISOR)
    assert no_reason.status_code == 422 and no_reason.json()["field"] == "reason"
    r = await client.post(f"/v1/complaints/{cid}/refund/reject", headers=SUPERVISOR,
                          json={"reason": "Only the difference, CNY 1080.00, was overcharged."})
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["refund"]["state"] == "rejected" and c["stage"] is None and c["assignee"] == "alice"
    rejected = next(h for h in c["history"] if h["action"] == "refund_rejected")
    assert rejected["actor"] == "supervisor:sam" and "difference" in rejected["detail"]["reason"]

    back = (await client.get("/v1/approvals", params={"state": "rejected"}, headers=ALICE)).json()["items"]
    assert [i["complaint_id"] for i in back] == [cid] and back[0]["assignee"] == "alice"
    assert (await client.get("/v1/approvals", headers=ALICE)).json()["items"] == []
    twice = await client.post(f"/v1/complaints/{cid}/refund/approve", json={}, headers=SUPERVISOR)
    assert twice.status_code == 409 and twice.json()["code"] == "refund_not_awaiting_approval"
    other = await client.post(f"/v1/complaints/{cid}/resolve", json={"outcome": "answered"}, headers=BOB)
    assert other.status_code == 409 and other.json()["code"] == "claimed_by_other"

    # the agent proposes again: still above the threshold, a second proposal awaits approval
    again = {**above, "refund": {"amount": {"value": "1080.00", "currency": "CNY"}, "method": "wallet_balance",
                                 "kind": "refund"}}
    r = await client.post(f"/v1/complaints/{cid}/resolve", json=again, headers=ALICE)
    assert r.status_code == 202 and r.json()["refund"]["proposal"] == 2
    assert (await client.get("/v1/approvals", params={"state": "rejected"}, headers=ALICE)).json()["items"] == []
    r = await client.post(f"/v1/complaints/{cid}/refund/approve", headers=SUPERVISOR)
    assert r.status_code == 200 and r.json()["status"] == "resolved", r.text
    told = await customer_sees(client, drain, cid)
    refund_notices = [text for kind, text in told if kind == "notice" and "refunding" in text]
    assert len(refund_notices) == 1 and "CNY 1080.00" in refund_notices[0]

    # a supervisor's own proposal needs another supervisor (four eyes)
    own = await open_claimed_case(client, drain, "charged twice for the same order 900", "u-refund-4", "en")
    r = await client.post(f"/v1/complaints/{own}/resolve", headers=SUPERVISOR, json={
        "outcome": "upheld", "refund": {"amount": {"value": "900", "currency": "CNY"}, "method": "wallet_balance",
                                        "kind": "compensation"}})
    assert r.status_code == 202, r.text
    r = await client.post(f"/v1/complaints/{own}/refund/approve", json={}, headers=SUPERVISOR)
    assert r.status_code == 403 and r.json()["code"] == "own_proposal"
