"""Phone calls through Twilio: the incoming call, gather, recording and transcription callbacks,
each posted as Twilio posts them and signed as Twilio signs them."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from adapters.twilio_voice import TwilioVoiceChannel
from tests.conftest import SUPERVISOR, app_plugins, gateway_client
from tests.integration.test_twilio_sms import (  # noqa: F401  (fake_twilio: the shared fixture)
    PUBLIC,
    SID,
    drain,
    fake_twilio,
    post_signed,
    twilio_account,
)

pytestmark = pytest.mark.integration

CALLER = "+8613700137000"


@pytest.fixture
def voice_plugins(fake_twilio):
    return app_plugins(TwilioVoiceChannel(twilio_account(fake_twilio)))


@pytest.fixture
async def client(settings, voice_plugins):
    async with gateway_client(settings, voice_plugins, PUBLIC) as test_client:
        yield test_client


def call_params(call_sid, **extra):
    """The fields Twilio sends on every voice webhook."""
    params = {
        "AccountSid": SID, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": "in-progress",
        "Called": "+15005550006", "CalledCountry": "US", "Caller": CALLER, "CallerCountry": "CN",
        "Direction": "inbound", "From": CALLER, "FromCountry": "CN", "To": "+15005550006", "ToCountry": "US",
    }
    params.update(extra)
    return params


def twiml_of(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    return ET.fromstring(response.content)


async def test_a_call_becomes_a_complaint_with_recording_and_transcription(client, voice_plugins, settings, fake_twilio):
    call = "CA" + uuid.uuid4().hex
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice", call_params(call, CallStatus="ringing")))
    says = root.findall("./Gather/Say")
    assert {s.get("language") for s in says} == {"zh-CN", "en-US"}
    assert root.find("Gather").get("action") == "/webhooks/twilio/voice/language"

    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/language", call_params(call, Digits="1")))
    menu = root.find("./Gather/Say")
    assert menu.get("language") == "zh-CN" and "支付金额申诉请按3" in menu.text

    path = "/webhooks/twilio/voice/menu?lang=zh"
    root = twiml_of(await post_signed(client, path, call_params(call, Digits="3")))
    record = root.find("Record")
    assert record.get("transcribe") == "true" and record.get("finishOnKey") == "#"
    callback = record.get("recordingStatusCallback")
    assert callback == "/webhooks/twilio/voice/recording?lang=zh&category=payment_amount"

    recording_sid = "RE" + uuid.uuid4().hex
    recording = call_params(call, RecordingSid=recording_sid, RecordingUrl=f"{fake_twilio.base}/media/{recording_sid}",
                            RecordingStatus="completed", RecordingDuration="14", RecordingChannels="1",
                            RecordingSource="RecordVerb", RecordingStartTime="Mon, 23 Nov 2026 10:00:00 +0000")
    for _ in range(3):  # Twilio retries: harmless
        r = await post_signed(client, callback, recording)
        assert r.status_code == 204
    transcription = call_params(call, TranscriptionSid="TR" + uuid.uuid4().hex, TranscriptionStatus="completed",
                                TranscriptionText="我被重复扣款了一百二十八元，请帮我退款",
                                TranscriptionUrl=f"{fake_twilio.base}/Transcriptions/x", RecordingSid=recording_sid,
                                RecordingUrl=recording["RecordingUrl"], url="")
    r = await post_signed(client, "/webhooks/twilio/voice/transcription?lang=zh&category=payment_amount", transcription)
    assert r.status_code == 204
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/recorded?lang=zh&category=payment_amount",
                                      call_params(call, RecordingUrl=recording["RecordingUrl"], Digits="#")))
    assert root.find("Hangup") is not None

    await drain(settings, voice_plugins)
    items = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert len(items) == 1
    c = items[0]
    assert (c["channel"], c["category"], c["contact"]["value"]) == ("twilio_voice", "payment_amount", CALLER)
    assert [(e["content_type"], e["state"]) for e in c["evidence"]] == [("audio/mpeg", "stored")]
    # the recording opened the case with a note and no words yet; the transcript joined it as the
    # words of that message (an edit of it)
    note, words = c["messages"]
    assert (note["text"], note["subject"]) == ("", "语音留言（14 秒），文字转写待补")
    assert words["text"] == "我被重复扣款了一百二十八元，请帮我退款" and words["edit_of"] == note["message_id"]
    full = (await client.get(f"/v1/complaints/{c['id']}", headers=SUPERVISOR)).json()
    assert [h["detail"]["edit_of"] for h in full["history"] if h["action"] == "message_edited"] == \
        [note["message_id"]]
    # the phone standard: first response due 30 s after the call
    due = datetime.fromisoformat(c["first_response_due"]) - datetime.fromisoformat(c["created_at"])
    assert due.total_seconds() == 30
    # the acknowledgement went out by SMS, in Chinese, with the case number
    sent = fake_twilio.sent_messages()
    assert len(sent) == 1 and sent[0]["To"] == CALLER and c["case_number"] in sent[0]["Body"]

    # the caller rings again and keys in the case number: the status is spoken
    digits = c["case_number"][2:].replace("-", "")
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/menu?lang=zh", call_params("CA2", Digits="9")))
    assert root.find("Gather").get("numDigits") == "14"
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/status?lang=zh", call_params("CA2", Digits=digits)))
    assert "已受理" in root.find("Say").text
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/status?lang=en",
                                      call_params("CA2", Digits="20000101000001")))
    assert "could not find" in root.find("Say").text


async def test_recording_only_when_transcription_fails(client, voice_plugins, settings, fake_twilio):
    call = "CA" + uuid.uuid4().hex
    await post_signed(client, "/webhooks/twilio/voice", call_params(call))
    await post_signed(client, "/webhooks/twilio/voice/language", call_params(call, Digits="2"))
    failed = call_params(call, TranscriptionStatus="failed", TranscriptionText="", RecordingSid="RE1")
    assert (await post_signed(client, "/webhooks/twilio/voice/transcription?lang=en&category=function_fault",
                              failed)).status_code == 204
    recording = call_params(call, RecordingSid="RE1", RecordingUrl=f"{fake_twilio.base}/media/RE1",
                            RecordingStatus="completed", RecordingDuration="5")
    await post_signed(client, "/webhooks/twilio/voice/recording?lang=en&category=function_fault", recording)
    await drain(settings, voice_plugins)
    (c,) = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert c["category"] == "function_fault" and c["language"] == "en" and len(c["evidence"]) == 1
    assert [(m["text"], m["subject"]) for m in c["messages"]] == [("", "Voice message (5 s); no transcript")]
    assert "case number" in fake_twilio.sent_messages()[0]["Body"]


async def test_two_recordings_from_one_caller_are_two_cases(client, voice_plugins, settings, fake_twilio):
    """A recording's note is not the caller's words: two calls' notes are not one problem to the
    repeat check (each call is its own case until the words, or an agent, say otherwise)."""
    for n in (1, 2):
        call, rsid = "CA" + uuid.uuid4().hex, "RE" + uuid.uuid4().hex
        recording = call_params(call, RecordingSid=rsid, RecordingUrl=f"{fake_twilio.base}/media/{rsid}",
                                RecordingStatus="completed", RecordingDuration="12")
        assert (await post_signed(client, "/webhooks/twilio/voice/recording?lang=en&category=other",
                                  recording)).status_code == 204
        await drain(settings, voice_plugins)
    items = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert len(items) == 2 and all(c["repeat_count"] == 0 for c in items)


async def test_every_voice_callback_refuses_a_bad_signature(client):
    for path in ("", "/language", "/menu?lang=zh", "/recorded", "/recording", "/transcription", "/status"):
        r = await client.post(f"/webhooks/twilio/voice{path}", content="CallSid=CA1&Digits=1",
                              headers={"X-Twilio-Signature": "forged", "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 403, path


async def test_menu_answers_at_once_and_invalid_digits_repeat(client):
    import time

    started = time.perf_counter()
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/menu?lang=en", call_params("CA3", Digits="8")))
    assert time.perf_counter() - started < 0.5
    assert root.find("Say").get("language") == "en-US" and root.find("Redirect") is not None


async def test_the_menu_takes_speech_as_well_as_keys(client, voice_plugins, settings):
    call = "CA" + uuid.uuid4().hex
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice", call_params(call, CallStatus="ringing")))
    assert root.find("Gather").get("input") == "dtmf speech"
    # "English" said at the greeting: the menu in English, listening for English words
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/language",
                                      call_params(call, SpeechResult="English, please.", Confidence="0.91")))
    gather = root.find("Gather")
    assert (gather.get("input"), gather.get("language"), gather.find("Say").get("language")) == \
        ("dtmf speech", "en-US", "en-US")
    assert "refund" in gather.get("hints").split(",")

    # "退款" / "refund": the payment-amount appeal, as if 3 were pressed; words it cannot place repeat the menu
    said = {("zh", "我要退款"): "payment_amount", ("en", "Refund please."): "payment_amount",
            ("zh", "我的余额不对"): "balance_query", ("en", "What is the status of my case?"): None}
    for (lang, words), category in said.items():
        root = twiml_of(await post_signed(client, f"/webhooks/twilio/voice/menu?lang={lang}",
                                          call_params(call, SpeechResult=words, Confidence="0.87")))
        if category is None:
            assert root.find("Gather").get("numDigits") == "14"  # the case-status question
            continue
        record = root.find("Record")
        assert record.get("transcribeCallback") == f"/webhooks/twilio/voice/transcription?lang={lang}&category={category}"
    root = twiml_of(await post_signed(client, "/webhooks/twilio/voice/menu?lang=en",
                                      call_params(call, SpeechResult="the weather today", Confidence="0.5")))
    assert root.find("Say").text == "That is not a valid choice." and root.find("Redirect") is not None

    # the spoken choice carries through to the case, whatever the transcript says
    transcription = call_params(call, TranscriptionSid="TR" + uuid.uuid4().hex, TranscriptionStatus="completed",
                                TranscriptionText="请尽快处理，谢谢", RecordingSid="RE" + uuid.uuid4().hex)
    r = await post_signed(client, "/webhooks/twilio/voice/transcription?lang=zh&category=payment_amount", transcription)
    assert r.status_code == 204
    await drain(settings, voice_plugins)
    (c,) = (await client.get("/v1/complaints", headers=SUPERVISOR)).json()["items"]
    assert (c["channel"], c["category"]) == ("twilio_voice", "payment_amount")
