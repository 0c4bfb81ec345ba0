"""SMS / MMS through Twilio: exactly what Twilio posts, signed as Twilio signs; replies through
the real twilio client to a local fake of its REST API."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from adapters.twilio_sms import TwilioSettings, TwilioSmsChannel, split_sms
from tests.conftest import SUPERVISOR, app_plugins, gateway_client, run_worker
from tests.fake_twilio import FakeTwilio

pytestmark = pytest.mark.integration

SID, TOKEN = "AC" + "1" * 32, "twilio-auth-token-0001"
PUBLIC = "https://desk.example.com"


@pytest.fixture
def fake_twilio():
    fake = FakeTwilio(SID, TOKEN).start()
    yield fake
    fake.stop()


def twilio_account(fake):
    """The test account's settings, its REST API being the local fake."""
    return TwilioSettings(account_sid=SID, auth_token=TOKEN, from_number="+15005550006", api_base=fake.base)


@pytest.fixture
def twilio_plugins(fake_twilio):
    return app_plugins(TwilioSmsChannel(twilio_account(fake_twilio)))


@pytest.fixture
async def twilio_client(settings, twilio_plugins):
    async with gateway_client(settings, twilio_plugins, PUBLIC) as client:
        yield client


async def drain(settings, plugins):
    """A burst worker that knows the public URL Twilio signs (status callbacks point there)."""
    from msgspec.structs import replace

    await run_worker(replace(settings, public_url=PUBLIC), plugins)


def sms_params(body="我被重复扣款了 ¥128.50，请退款", sid=None, sender="+8613800138000", **extra):
    """All the fields Twilio sends for an incoming SMS."""
    params = {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid or "SM" + uuid.uuid4().hex, "NumMedia": "0",
        "ToCity": "", "FromZip": "", "SmsSid": "", "FromState": "", "SmsStatus": "received", "FromCity": "",
        "Body": body, "FromCountry": "CN", "To": "+15005550006", "ToZip": "", "NumSegments": "1",
        "MessageSid": "", "AccountSid": SID, "From": sender, "ApiVersion": "2010-04-01",
    }
    params["SmsSid"] = params["MessageSid"] = params["SmsMessageSid"]
    params.update(extra)
    return params


def signed(path, params, token=TOKEN):
    signature = RequestValidator(token).compute_signature(PUBLIC + path, params)
    return {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}


async def post_signed(client, path, params, **kw):
    return await client.post(path, content=urlencode(params), headers=kw.get("headers") or signed(path, params))


async def test_sms_becomes_a_complaint_and_the_ack_goes_out_by_rest(twilio_client, twilio_plugins, settings, fake_twilio):
    params = sms_params()
    r = await post_signed(twilio_client, "/webhooks/twilio/sms", params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    assert ET.fromstring(r.content).tag == "Response"
    await drain(settings, twilio_plugins)
    items = (await twilio_client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert len(items) == 1
    c = items[0]
    assert (c["channel"], c["category"], c["contact"]["value"]) == ("twilio_sms", "payment_amount", "+8613800138000")
    sent = fake_twilio.sent_messages()
    assert len(sent) == 1
    assert sent[0]["To"] == "+8613800138000" and sent[0]["From"] == "+15005550006"
    assert c["case_number"] in sent[0]["Body"] and "进度" in sent[0]["Body"]
    assert sent[0]["StatusCallback"] == PUBLIC + "/webhooks/twilio/sms/status"

    # Twilio reports delivery: the reply's state follows
    reply_sid = next(x["provider_message_id"] for x in
                     (await twilio_client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()["replies"])
    status = {"MessageSid": reply_sid, "MessageStatus": "delivered", "AccountSid": SID, "To": "+8613800138000"}
    assert (await post_signed(twilio_client, "/webhooks/twilio/sms/status", status)).status_code == 204
    c = (await twilio_client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
    assert c["replies"][0]["delivery"] == "delivered"


async def test_the_same_message_sid_five_times_is_one_complaint(twilio_client, twilio_plugins, settings, fake_twilio):
    params = sms_params(sid="SM" + "a" * 32)
    for _ in range(5):
        assert (await post_signed(twilio_client, "/webhooks/twilio/sms", params)).status_code == 200
    await drain(settings, twilio_plugins)
    assert len((await twilio_client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]) == 1
    assert len(fake_twilio.sent_messages()) == 1


@pytest.mark.parametrize("case", ["unsigned", "wrong_token", "tampered", "other_url", "garbage"])
async def test_forged_tampered_and_unsigned_requests_are_refused(twilio_client, twilio_plugins, settings, case):
    params = sms_params()
    headers = signed("/webhooks/twilio/sms", params)
    body = urlencode(params)
    if case == "unsigned":
        headers.pop("X-Twilio-Signature")
    elif case == "wrong_token":
        headers = signed("/webhooks/twilio/sms", params, token="not-the-token")
    elif case == "tampered":
        body = urlencode({**params, "Body": "something else"})
    elif case == "other_url":
        headers["X-Twilio-Signature"] = RequestValidator(TOKEN).compute_signature("https://evil.example/x", params)
    else:
        headers["X-Twilio-Signature"] = "%%%"
    r = await twilio_client.post("/webhooks/twilio/sms", content=body, headers=headers)
    assert r.status_code == 403
    await drain(settings, twilio_plugins)
    assert (await twilio_client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"] == []


async def test_mms_media_is_fetched_by_the_worker_as_evidence(twilio_client, twilio_plugins, settings, fake_twilio):
    params = sms_params(body="screenshot of the double charge", NumMedia="1",
                        MediaUrl0=f"{fake_twilio.base}/media/ME{'b' * 32}", MediaContentType0="image/png")
    assert (await post_signed(twilio_client, "/webhooks/twilio/sms", params)).status_code == 200
    assert not any(r.method == "GET" for r in fake_twilio.requests)  # not fetched in the webhook
    await drain(settings, twilio_plugins)
    c = (await twilio_client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"][0]
    assert [(e["content_type"], e["state"], e["tries"]) for e in c["evidence"]] == [("image/png", "stored", 1)]
    media = await twilio_client.get(f"/v1/complaints/{c['id']}/evidence/{c['evidence'][0]['id']}", headers=SUPERVISOR)
    assert media.content.startswith(b"\x89PNG")


async def test_stop_help_start(twilio_client, twilio_plugins, settings, fake_twilio):
    number = "+8613900139000"
    r = await post_signed(twilio_client, "/webhooks/twilio/sms", sms_params(body="HELP", sender=number))
    assert "STOP" in ET.fromstring(r.content).find("Message").text
    await post_signed(twilio_client, "/webhooks/twilio/sms", sms_params(body="STOP", sender=number))
    await post_signed(twilio_client, "/webhooks/twilio/sms", sms_params(body="app crashes", sender=number))
    await drain(settings, twilio_plugins)
    items = (await twilio_client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert len(items) == 1  # the complaint is taken, but nothing is sent to an opted-out number
    assert fake_twilio.sent_messages() == []
    assert items[0]["replies"][0]["delivery"] == "suppressed"
    await post_signed(twilio_client, "/webhooks/twilio/sms", sms_params(body="START", sender=number))
    await post_signed(twilio_client, "/webhooks/twilio/sms", sms_params(body="余额查询", sender=number))
    await drain(settings, twilio_plugins)
    assert len(fake_twilio.sent_messages()) == 1


async def test_provider_errors_are_retried(twilio_client, twilio_plugins, settings, fake_twilio):
    fake_twilio.fail_next = [500, 503]
    await post_signed(twilio_client, "/webhooks/twilio/sms", sms_params())
    await drain(settings, twilio_plugins)  # the inline try and the first retry fail; the next one goes
    c = (await twilio_client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"][0]
    assert c["replies"][0]["delivery"] == "sent" and len(fake_twilio.sent_messages()) == 3


SPLITS = [
    ("short", 10, ["short"]),
    ("第一句话。第二句话。第三句话。", 6, ["第一句话。", "第二句话。", "第三句话。"]),
    ("One. Two. Three.", 9, ["One. Two.", "Three."]),
    ("x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),
    ("", 10, []),
]


@pytest.mark.parametrize("text, limit, expected", SPLITS)
def test_split_sms(text, limit, expected):
    assert split_sms(text, limit) == expected
