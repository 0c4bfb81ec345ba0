"""Appeal materials through real HTTP and the worker on the controllable clock: an agent asks for
two items, the resolution clock pauses, a reminder goes out after the set time, the two arrive on
different channels from the same customer (an MMS from the phone the app vouched for, then an
app upload), each is ticked off, and the clock runs again with the time it had left."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime

import pytest
from msgspec.structs import replace

from adapters.twilio_sms import TwilioSmsChannel
from tests.conftest import ALICE, APP, SUPERVISOR, app_plugins, eventually, gateway_client
from tests.fake_twilio import FakeTwilio
from tests.integration.test_deadlines import Desk, timers_ran
from tests.integration.test_meta import PNG
from tests.integration.test_twilio_sms import PUBLIC, SID, TOKEN, post_signed, sms_params, twilio_account

pytestmark = pytest.mark.integration

PHONE = "+8613800138123"


def ts(iso):
    return datetime.fromisoformat(iso).timestamp()


def resolution(c):
    return next(d for d in c["deadlines"] if d["kind"] == "resolution")


def actions(c, name):
    return [h for h in c["history"] if h["action"] == name]


async def test_materials_asked_arrive_on_two_channels_clock_paused_and_resumed_reminded(settings):
    twilio = FakeTwilio(SID, TOKEN).start()
    plugins = app_plugins(TwilioSmsChannel(twilio_account(twilio)))
    clocked = replace(settings, test_clock=True, public_url=PUBLIC)
    async with gateway_client(clocked, plugins) as client:
        desk = Desk(clocked, plugins, client)
        await desk.start()
        try:
            await run(desk, client, twilio)
        finally:
            await desk.stop()
            twilio.stop()


async def run(desk, client, twilio):
    policy = (await client.get("/v1/policy/deadlines", headers=SUPERVISOR)).json()
    policy["materials"] = {"reminder_seconds": 3600, "max_reminders": 1}
    policy["progress"].update(quiet_hours=None, interval_seconds={"default": 0})
    assert (await client.put("/v1/policy/deadlines", json=policy, headers=SUPERVISOR)).status_code == 200
    await asyncio.sleep(1.1)  # workers re-read the policy within a second
    c = await desk.complaint(await desk.send("交易号 T2026112300000123 被重复扣款 ¥128.50，请退款", user="u-mat",
                                             language="zh", phone=PHONE))
    due_before = ts(c["resolution_due"])

    bad = await client.post(f"/v1/complaints/{c['id']}/materials", headers=ALICE, json={"items": [{"kind": "other"}]})
    assert bad.status_code == 422 and bad.json()["code"] == "note_required"
    for _ in range(2):  # a retry with the same key asks nothing twice
        r = await client.post(f"/v1/complaints/{c['id']}/materials", headers={**ALICE, "Idempotency-Key": "ask-1"},
                              json={"items": [{"kind": "transaction_record"}, {"kind": "charge_screenshot"}],
                                    "message": "两份材料齐全后我们会立即核实。"})
        assert r.status_code == 201, r.text
    c = r.json()["complaint"]
    assert c["stage"] == "awaiting_materials" and c["materials_missing"] == ["transaction_record", "charge_screenshot"]
    assert resolution(c)["state"] == "paused" and actions(c, "clock_paused")
    asked = c["replies"][-1]
    assert "交易记录" in asked["text"] and "扣款截图" in asked["text"] and "两份材料齐全" in asked["text"]
    assert len(actions(c, "materials_requested")) == 1 and actions(c, "materials_requested")[0]["public"]

    # an hour passes: one reminder (the policy allows one) lists what is still missing
    await desk.advance(3601)

    async def reminded():
        c_now = await desk.complaint(cid=c["id"])
        return c_now if actions(c_now, "materials_reminder") else None

    c = await eventually(reminded)
    (reminder,) = [r for r in c["replies"] if r["id"] == actions(c, "materials_reminder")[0]["detail"]["reply_id"]]
    assert reminder["kind"] == "progress" and "提醒" in reminder["text"] and "扣款截图" in reminder["text"]

    # the screenshot comes by MMS from the phone the app vouched for: the same customer's case
    mms = sms_params(body="截图", sender=PHONE, NumMedia="1", MediaUrl0=f"{twilio.base}/media/ME{'c' * 32}",
                     MediaContentType0="image/png")
    assert (await post_signed(client, "/webhooks/twilio/sms", mms)).status_code == 200

    async def screenshot_in():
        c_now = await desk.complaint(cid=c["id"])
        return c_now if c_now["materials_missing"] == ["transaction_record"] else None

    c = await eventually(screenshot_in, timeout=20)
    shot = next(m for m in c["materials"] if m["kind"] == "charge_screenshot")
    assert shot["state"] == "received" and shot["channel"] == "twilio_sms" and shot["evidence_ids"]
    assert resolution(c)["state"] == "paused"  # one item still missing: the clock still waits

    await desk.advance(1800)
    await timers_ran(desk)  # the worker's clock has read the new offset
    # the transaction record by an app upload in the case's thread
    r = await client.post("/v1/messages", headers=APP, json={
        "user_id": "u-mat", "complaint_id": c["id"], "text": "订单详情",
        "attachments": [{"content_type": "image/png", "filename": "order.png",
                         "data_base64": base64.b64encode(PNG).decode()}]})
    assert r.status_code == 202

    async def complete():
        c_now = await desk.complaint(cid=c["id"])
        return c_now if not c_now["materials_missing"] and resolution(c_now)["state"] == "running" else None

    c = await eventually(complete, timeout=20)
    record = next(m for m in c["materials"] if m["kind"] == "transaction_record")
    assert record["state"] == "received" and record["channel"] == "app"
    assert c["stage"] is None and actions(c, "clock_resumed")
    # the clock ran on with the time it had left: the due time moved by the time the case waited
    moved = ts(c["resolution_due"]) - due_before
    assert 5401 <= moved < 5401 + 60, moved
    assert ts(resolution(c)["due"]) == ts(c["resolution_due"])
    told = [r for r in c["replies"] if r["id"] == actions(c, "materials_complete")[0]["detail"]["reply_id"]]
    assert "交易记录" in told[0]["text"] and "扣款截图" in told[0]["text"]
    assert len((await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]) == 1  # no new case
    app_view = (await client.get(f"/v1/complaints/{c['id']}", headers=APP)).json()
    assert [m["state"] for m in app_view["materials"]] == ["received", "received"]
    assert app_view["materials_missing"] == [] and not any("requested_by" in m for m in app_view["materials"])

    # by hand: an agent asks for one more, then waives it; a second waive changes nothing
    r = await client.post(f"/v1/complaints/{c['id']}/materials", headers=ALICE,
                          json={"items": [{"kind": "other", "note": "商户退款凭证"}]})
    extra = r.json()["materials"]["items"][-1]
    assert r.json()["materials"]["missing"] == ["other"]
    for _ in range(2):
        r = await client.post(f"/v1/complaints/{c['id']}/materials/{extra['id']}", headers=ALICE,
                              json={"state": "waived"})
        assert r.status_code == 200 and r.json()["materials"]["missing"] == []
    assert len(actions(r.json()["complaint"], "material_waived")) == 1
    await desk.advance(3601)
    await timers_ran(desk)
    c = await desk.complaint(cid=c["id"])
    assert len(actions(c, "materials_reminder")) == 1  # at most the policy's one, none once nothing is missing
