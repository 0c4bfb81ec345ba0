"""A category hint the desk does not know never costs the customer's words: the message is
accepted (202), the hint ignored (the text decides the category), and the answer says so."""

from __future__ import annotations

import pytest

from normalizer.categories import CATEGORIES
from normalizer.categories import HINT_IGNORED, accept_category_hint
from tests.conftest import ALICE, SUPERVISOR

pytestmark = pytest.mark.integration


def test_known_hints_pass_unknown_ones_become_a_warning_naming_the_allowed_values():
    assert accept_category_hint(None) == (None, [])
    assert accept_category_hint("fee_dispute") == ("fee_dispute", [])
    hint, warnings = accept_category_hint("refunds please")
    assert hint is None and [w["code"] for w in warnings] == [HINT_IGNORED]
    assert warnings[0]["field"] == "category_hint" and all(c in warnings[0]["detail"] for c in CATEGORIES)


async def _recorded(client, drain, **extra):
    r = await client.post("/v1/complaints", headers=ALICE, json={
        "channel": "phone", "contact": {"kind": "phone", "value": "+8613800138000"},
        "text": "客户投诉：提现手续费太高，要求减免", "language": "zh", **extra})
    assert r.status_code == 202, r.text
    await drain()
    state = (await client.get(f"/v1/messages/{r.json()['message_id']}", headers=SUPERVISOR)).json()
    return r.json(), (await client.get(f"/v1/complaints/{state['complaint_id']}", headers=SUPERVISOR)).json()


async def test_an_unknown_hint_is_accepted_ignored_and_warned_about(client, drain):
    body, c = await _recorded(client, drain, category_hint="nonsense")
    assert [(w["code"], w["field"]) for w in body["warnings"]] == [(HINT_IGNORED, "category_hint")]
    assert "fee_dispute" in body["warnings"][0]["detail"]
    assert c["category"] == "fee_dispute"  # from the text, as if there were no hint
    assert next(h for h in c["history"] if h["action"] == "categorised")["detail"]["by"] != "hint"


async def test_a_known_hint_is_taken_without_warnings(client, drain):
    body, c = await _recorded(client, drain, category_hint="account_security")
    assert body["warnings"] == []
    assert c["category"] == "account_security"
