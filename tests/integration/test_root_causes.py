"""Why complaints happen, over the real app, real Redis and the worker: a root cause recorded at
resolution (and corrected by a supervisor) is counted per category and per channel in the service
report, beside the refunds approved, their sum and those awaiting approval."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ALICE, APP, SUPERVISOR

pytestmark = pytest.mark.integration


async def submitted(client: Any, text: str, **sender: Any) -> str:
    """A complaint from the app (``user_id``) or recorded at the counter (``contact``); its message id."""
    if "contact" in sender:
        r = await client.post("/v1/complaints", json={"text": text, "language": "en", **sender}, headers=ALICE)
    else:
        r = await client.post("/v1/messages", json={"text": text, "language": "en", **sender}, headers=APP)
    assert r.status_code == 202, r.text
    return r.json()["message_id"]


async def resolved(client: Any, cid: str, status: int = 200, **body: Any) -> dict[str, Any]:
    r = await client.post(f"/v1/complaints/{cid}/resolve", json={"outcome": "upheld", **body}, headers=ALICE)
    assert r.status_code == status, r.text
    return r.json()


async def test_root_causes_and_refunds_are_counted_per_category_and_channel(client, drain):
    messages = [
        await submitted(client, "I was charged twice for my coffee, 50 yuan", user_id="u-rc-1"),
        await submitted(client, "the app crashes after the update", contact={"kind": "phone", "value": "+8613800138111"}),
        await submitted(client, "the app crashes after the update", user_id="u-rc-2"),
        await submitted(client, "charged twice, 900 yuan taken twice", user_id="u-rc-3"),
    ]
    await drain()
    charged, crashed_counter, crashed_app, overcharged = [
        (await client.get(f"/v1/messages/{mid}", headers=SUPERVISOR)).json()["complaint_id"] for mid in messages]

    await resolved(client, charged, root_cause="system_error",
                   refund={"amount": {"value": "50", "currency": "CNY"}, "method": "wallet_balance"})
    await resolved(client, crashed_counter, root_cause="network")
    await resolved(client, crashed_app)  # nobody said why
    waiting = await resolved(client, overcharged, 202, root_cause="system_error",
                             refund={"amount": {"value": "900", "currency": "CNY"}, "method": "original_route"})
    assert waiting["stage"] == "awaiting_approval"

    # a supervisor corrects a cause after the fact; the history keeps both
    body = {"root_cause": "operator_error", "reason": "the release notes show a bad rollout, not the network"}
    assert (await client.put(f"/v1/complaints/{crashed_counter}/root-cause", json=body, headers=ALICE)).status_code == 403
    bad = await client.put(f"/v1/complaints/{crashed_counter}/root-cause", json={**body, "root_cause": "cosmic_rays"},
                           headers=SUPERVISOR)
    assert bad.status_code == 422 and bad.json()["field"] == "root_cause"
    r = await client.put(f"/v1/complaints/{crashed_counter}/root-cause", json=body, headers=SUPERVISOR)
    assert r.status_code == 200 and r.json()["root_cause"] == "operator_error", r.text
    corrected = r.json()["history"][-1]
    assert corrected["action"] == "root_cause_corrected" and corrected["actor"] == "supervisor:sam"
    assert corrected["detail"]["from"] == "network" and corrected["detail"]["to"] == "operator_error"

    report = (await client.get("/v1/reports/service", headers=ALICE)).json()

    def causes(group: dict[str, Any]) -> dict[str, int]:
        return {cause: n for cause, n in group["root_causes"].items() if n}

    assert set(report["overall"]["root_causes"]) >= {"system_error", "operator_error", "fraud", "network",
                                                     "not_recorded"}
    assert causes(report["overall"]) == {"system_error": 1, "operator_error": 1, "not_recorded": 1}
    assert causes(report["by_category"]["payment_amount"]) == {"system_error": 1}  # the waiting one is not resolved
    assert causes(report["by_category"]["function_fault"]) == {"operator_error": 1, "not_recorded": 1}
    assert causes(report["by_channel"]["app"]) == {"system_error": 1, "not_recorded": 1}
    assert causes(report["by_channel"]["counter"]) == {"operator_error": 1}
    refunds = report["overall"]["refunds"]
    assert refunds == {"approved": 1, "by_kind": {"refund": 1, "compensation": 0}, "sum": {"CNY": "50.00"},
                       "awaiting_approval": 1, "rejected": 0}
    assert report["by_category"]["function_fault"]["refunds"]["approved"] == 0
