"""Progress without asking, through real HTTP and the worker's timer loop on the controllable
clock: an update on a state change (an agent takes the case) kept to the no-spam gap, the periodic
update after the quiet interval, an update held through the quiet hours, and each channel's own
rules (WhatsApp's template outside its 24-hour window, nothing to an SMS number that sent STOP)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from msgspec.structs import replace

from adapters.app import AppChannel
from adapters.meta import MetaChannel, MetaSettings
from adapters.twilio_sms import TwilioSmsChannel
from plugins.manager import GatewayPlugins
from tests.conftest import ALICE, SUPERVISOR, app_plugins, eventually, gateway_client
from tests.fake_twilio import FakeTwilio
from tests.integration.test_deadlines import Desk, timers_ran
from tests.integration.test_meta import PNID, graph_fake, post_meta, wa_payload, wa_text
from tests.integration.test_twilio_sms import PUBLIC, SID, TOKEN, post_signed, sms_params, twilio_account

pytestmark = pytest.mark.integration


async def put_progress(desk, **progress):
    policy = (await desk.client.get("/v1/policy/deadlines", headers=SUPERVISOR)).json()
    policy["progress"].update(progress)
    r = await desk.client.put("/v1/policy/deadlines", json=policy, headers=SUPERVISOR)
    assert r.status_code == 200, r.text
    await asyncio.sleep(1.1)  # workers re-read the policy within a second (the clock tests do the same)


def progress_replies(c):
    return [r for r in c["replies"] if r["kind"] == "progress"]


def actions(c, name):
    return [h for h in c["history"] if h["action"] == name]


async def until(desk, cid, predicate, timeout=15):
    async def check():
        c = await desk.complaint(cid=cid)
        return c if predicate(c) else None
    return await eventually(check, timeout=timeout)


@pytest.fixture
async def desk(settings):
    plugins = app_plugins()
    async with gateway_client(replace(settings, test_clock=True), plugins) as client:
        d = Desk(replace(settings, test_clock=True), plugins, client)
        await d.start()
        yield d
        await d.stop()


async def test_taken_after_the_gap_dropped_when_answered_at_once_then_the_periodic_update(desk):
    await put_progress(desk, interval_seconds={"default": 3600}, min_gap_seconds=600, quiet_hours=None)
    a = await desk.complaint(await desk.send("我被重复扣款了 ¥128.50，请退款", user="u-prog-a", language="zh"))
    b = await desk.complaint(await desk.send("my withdrawal fee was charged twice", user="u-prog-b", language="en"))
    assert a["next_update_at"] and a["last_update_at"]  # the acknowledgement counts as an update
    taken = {}
    for _ in range(2):
        r = await desk.client.post("/v1/queues/claim", headers=ALICE)
        assert r.status_code == 200, r.text
        taken[r.json()["complaint"]["id"]] = r.json()["complaint"]
    # the customer heard from us moments ago (the acknowledgement): the update is held, not sent
    held = actions(taken[a["id"]], "progress_held")
    assert held and held[0]["detail"]["change"] == "taken" and held[0]["detail"]["why"] == "min_gap"
    assert not progress_replies(taken[a["id"]])
    # B's agent answers at once: the held "taken" will have nothing to add
    r = await desk.client.post(f"/v1/complaints/{b['id']}/replies", headers=ALICE,
                               json={"text": "We have refunded the second fee."})
    assert r.status_code == 201
    await desk.advance(601)
    a = await until(desk, a["id"], lambda c: progress_replies(c))
    (update,) = progress_replies(a)
    assert "客服专员已开始处理" in update["text"] and a["case_number"] in update["text"]
    event = actions(a, "progress_update")[0]
    assert event["public"] and event["detail"] == {"change": "taken", "reply_id": update["id"]}
    await timers_ran(desk)
    b = await desk.complaint(cid=b["id"])
    assert not progress_replies(b) and actions(b, "progress_dropped")
    # an hour of silence while the case is open: the periodic update, worded "still being handled"
    due = datetime.fromisoformat(a["next_update_at"])
    assert due >= datetime.fromisoformat(event["at"]) + timedelta(seconds=3599)
    await desk.advance(3601)
    a = await until(desk, a["id"], lambda c: len(progress_replies(c)) == 2)
    assert "仍在处理中" in progress_replies(a)[1]["text"]
    assert [h["detail"]["change"] for h in actions(a, "progress_update")] == ["taken", "open"]
    assert datetime.fromisoformat(actions(a, "progress_update")[1]["at"]) >= due
    await timers_ran(desk)  # fired once: a second firing would show here
    a = await desk.complaint(cid=a["id"])
    assert len(progress_replies(a)) == 2
    assert datetime.fromisoformat(a["next_update_at"]) > datetime.fromisoformat(event["at"])


async def test_an_update_due_in_the_quiet_hours_waits_until_they_end(desk):
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    start, end = now + timedelta(hours=1), now + timedelta(hours=3)
    await put_progress(desk, interval_seconds={"default": 7200}, quiet_hours={
        "timezone": "UTC", "start": start.strftime("%H:%M"), "end": end.strftime("%H:%M")})
    c = await desk.complaint(await desk.send("fee too high for withdrawal", user="u-quiet", language="en"))
    # due two hours after the acknowledgement, in the quiet hours: planned for their end
    assert datetime.fromisoformat(c["next_update_at"]) == end
    await desk.advance(7300)
    await timers_ran(desk)
    assert not progress_replies(await desk.complaint(cid=c["id"]))
    await desk.advance_to(end.isoformat())
    c = await until(desk, c["id"], lambda c: progress_replies(c))
    assert "still being handled" in progress_replies(c)[0]["text"]
    assert datetime.fromisoformat(actions(c, "progress_update")[0]["at"]) >= end


@pytest.fixture
def providers():
    graph, twilio = graph_fake(), FakeTwilio(SID, TOKEN).start()
    yield graph, twilio
    graph.stop()
    twilio.stop()


async def test_channel_rules_hold_for_updates(settings, providers):
    graph, twilio = providers
    plugins = GatewayPlugins()
    plugins.register("app", AppChannel())
    plugins.register("meta", MetaChannel(MetaSettings(
        app_secret="meta-app-secret-1", verify_token="verify-me-1", whatsapp_token="wa-token-1",
        whatsapp_phone_number_id=PNID, whatsapp_template="case_update", page_token="page-token-1",
        graph_base=graph.base)))
    plugins.register("twilio_sms", TwilioSmsChannel(twilio_account(twilio)))
    plugins.check()
    clocked = replace(settings, test_clock=True, public_url=PUBLIC)
    async with gateway_client(clocked, plugins) as client:
        desk = Desk(clocked, plugins, client)
        await desk.start()
        try:
            await put_progress(desk, interval_seconds={"default": 3600}, quiet_hours=None)
            # WhatsApp: the customer last wrote 25 hours ago (Meta delivered it late)
            old = int(time.time()) - 25 * 3600
            await post_meta(client, wa_payload(wa_text("Refund never arrived for order T88", ts=old),
                                               wa_id="447700900123"))
            # SMS: a complaint, then STOP
            await post_signed(client, "/webhooks/twilio/sms", sms_params(body="app crashes when I pay",
                                                                         sender="+8613900139111"))

            async def two_cases():
                items = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
                return {c["channel"]: c for c in items} if len(items) == 2 and all(
                    r["delivery"] != "queued" for c in items for r in c["replies"]) else None

            cases = await eventually(two_cases, timeout=20)
            assert len(twilio.sent_messages()) == 1  # the acknowledgement
            await post_signed(client, "/webhooks/twilio/sms", sms_params(body="STOP", sender="+8613900139111"))
            await desk.advance(3601)
            wa = await until(desk, cases["whatsapp"]["id"], lambda c: progress_replies(c)
                             and progress_replies(c)[0]["delivery"] == "sent")
            sms = await until(desk, cases["twilio_sms"]["id"], lambda c: progress_replies(c)
                              and progress_replies(c)[0]["delivery"] == "suppressed")
        finally:
            await desk.stop()
    sent = [call.json() for call in graph.posts_to(rf"/{PNID}/messages")]
    assert len(sent) == 2 and all(body["type"] == "template" for body in sent)  # the ack, then the update
    assert sent[1]["template"]["components"][0]["parameters"][0]["text"] == wa["case_number"]
    assert len(twilio.sent_messages()) == 1  # nothing more to the number that sent STOP
    assert actions(sms, "progress_update") and actions(wa, "progress_update")
