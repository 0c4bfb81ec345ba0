"""Every built-in webhook channel (and the app's API) passes the same conformance suite an
external plugin runs against itself (gateway/testkit.py). E-mail is a poller, not a webhook:
its duplicates, quarantine and replies are tested against a real IMAP server in test_email.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from urllib.parse import parse_qs, urlencode

import pytest
from twilio.request_validator import RequestValidator

from adapters.app import AppChannel
from adapters.meta import MetaChannel, MetaSettings
from adapters.telegram import TelegramChannel, TelegramSettings
from adapters.twilio_sms import TwilioSettings, TwilioSmsChannel
from adapters.twilio_voice import TwilioVoiceChannel
from adapters.wechat import WeChatChannel, WeChatSettings, sha1_signature
from gateway.testkit import TESTKIT_APP_KEY, ChannelConformance, ChannelProbe, FakeApi, HttpRequest, bearer

pytestmark = pytest.mark.integration
PUBLIC = "https://gateway.example.test"


def _digits(key: str, n: int = 9) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:n], 16)


class AppProbe(ChannelProbe):
    name, channel = "app", "app"

    def plugin(self, fake):
        return AppChannel()

    def inbound(self, text, key):
        body = json.dumps({"user_id": f"conf-{key}", "text": text, "client_message_id": f"c-{key}"}).encode()
        return HttpRequest("POST", "/v1/messages", body, {**bearer(TESTKIT_APP_KEY), "Content-Type": "application/json"})

    def forged(self, request):
        return HttpRequest(request.method, request.path, request.body,
                           {**request.headers, "Authorization": "Bearer not-a-key"})

    async def delivered_texts(self, fake, client, complaint_id):
        from gateway.testkit import TESTKIT_SUPERVISOR

        c = (await client.get(f"/v1/complaints/{complaint_id}", headers=bearer(TESTKIT_SUPERVISOR[1]))).json()
        return [r["text"] for r in c["replies"] if r["delivery"] == "delivered"]


SID, TOKEN = "AC" + "c" * 32, "conformance-twilio-token"


def twilio_fake_routes(fake: FakeApi) -> None:
    fake.route("POST", rf"/2010-04-01/Accounts/{SID}/Messages.json", lambda call, m: (201, {
        "sid": "SM" + uuid.uuid4().hex, "status": "queued", "to": parse_qs(call.body.decode())["To"][0],
        "body": parse_qs(call.body.decode())["Body"][0], "account_sid": SID}, "application/json"))


def twilio_signed(path: str, params: dict[str, str], query: dict[str, str] | None = None) -> HttpRequest:
    """Signed as Twilio signs: the public URL with its query, and the form parameters."""
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path + (f"?{urlencode(query)}" if query else ""),
                                                          params)
    return HttpRequest("POST", path, urlencode(params).encode(),
                       {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
                       query or {})


def twilio_texts(fake: FakeApi) -> list[str]:
    return [parse_qs(c.body.decode())["Body"][0] for c in fake.posts_to("Messages.json")]


class TwilioSmsProbe(ChannelProbe):
    name, channel, public_url = "twilio_sms", "twilio_sms", PUBLIC

    def plugin(self, fake):
        twilio_fake_routes(fake)
        return TwilioSmsChannel(TwilioSettings(account_sid=SID, auth_token=TOKEN, from_number="+15005550006",
                                               api_base=fake.base))

    def inbound(self, text, key):
        sid = "SM" + hashlib.md5(key.encode()).hexdigest()
        return twilio_signed("/webhooks/twilio/sms", {
            "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": SID, "From": "+8613900000001",
            "To": "+15005550006", "Body": text, "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
            "ApiVersion": "2010-04-01", "FromCountry": "CN", "ToCountry": "US"})

    def sent_texts(self, fake):
        return twilio_texts(fake)


class TwilioVoiceProbe(TwilioSmsProbe):
    name, channel = "twilio_voice", "twilio_voice"

    def plugin(self, fake):
        twilio_fake_routes(fake)
        return TwilioVoiceChannel(TwilioSettings(account_sid=SID, auth_token=TOKEN, from_number="+15005550006",
                                                 api_base=fake.base))

    def inbound(self, text, key):
        call = "CA" + hashlib.md5(key.encode()).hexdigest()
        return twilio_signed("/webhooks/twilio/voice/transcription", {
            "AccountSid": SID, "CallSid": call, "CallStatus": "completed", "From": "+8613900000002",
            "To": "+15005550006", "Direction": "inbound", "ApiVersion": "2010-04-01",
            "TranscriptionSid": "TR" + call[2:], "TranscriptionStatus": "completed", "TranscriptionText": text,
            "RecordingSid": "RE" + call[2:], "RecordingUrl": f"https://api.twilio.com/rec/{call}"},
            {"lang": "en", "category": "other"})


META_SECRET, WA_TOKEN, PNID = "conformance-meta-secret", "conformance-wa-token", "1234567890"


class MetaProbe(ChannelProbe):
    name, channel = "meta", "whatsapp"

    def plugin(self, fake):
        fake.route("POST", rf"/v21.0/{PNID}/messages", lambda call, m: (200, {
            "messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT" + uuid.uuid4().hex}]}, "application/json"))
        return MetaChannel(MetaSettings(app_secret=META_SECRET, verify_token="v", whatsapp_token=WA_TOKEN,
                                        whatsapp_phone_number_id=PNID, graph_base=fake.base))

    def inbound(self, text, key):
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": PNID},
                "contacts": [{"profile": {"name": "Conformance"}, "wa_id": "8613900000003"}],
                "messages": [{"from": "8613900000003", "id": f"wamid.{key}", "timestamp": str(int(time.time())),
                              "type": "text", "text": {"body": text}}]}}]}]}).encode()
        signature = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return HttpRequest("POST", "/webhooks/meta", body,
                           {"X-Hub-Signature-256": signature, "Content-Type": "application/json"})

    def sent_texts(self, fake):
        return [c.json()["text"]["body"] for c in fake.posts_to(rf"/{PNID}/messages") if c.json()["type"] == "text"]


BOT, TG_SECRET = "4242:conformance-bot-token", "conformance-secret"


class TelegramProbe(ChannelProbe):
    name, channel = "telegram", "telegram"

    def plugin(self, fake):
        fake.route("POST", rf"/bot{BOT}/sendMessage", lambda call, m: (200, {
            "ok": True, "result": {"message_id": 1, "text": call.json()["text"]}}, "application/json"))
        return TelegramChannel(TelegramSettings(bot_token=BOT, secret_token=TG_SECRET, api_base=fake.base))

    def inbound(self, text, key):
        n = _digits(key)
        body = json.dumps({"update_id": n, "message": {
            "message_id": n, "date": int(time.time()), "text": text,
            "from": {"id": 777, "is_bot": False, "first_name": "Conf", "language_code": "en"},
            "chat": {"id": 777, "type": "private"}}}).encode()
        return HttpRequest("POST", "/webhooks/telegram", body,
                           {"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Type": "application/json"})

    def sent_texts(self, fake):
        return [c.json()["text"] for c in fake.posts_to("/sendMessage")]


WX_TOKEN, WX_APP = "conformancetoken", "wxconformance01"


class WeChatProbe(ChannelProbe):
    name, channel = "wechat", "wechat"

    def plugin(self, fake):
        fake.route("GET", r"/cgi-bin/token", lambda call, m: (200, {"access_token": "AT1", "expires_in": 7200},
                                                              "application/json"))
        fake.route("POST", r"/cgi-bin/message/custom/send", lambda call, m: (200, {"errcode": 0, "errmsg": "ok"},
                                                                            "application/json"))
        return WeChatChannel(WeChatSettings(token=WX_TOKEN, app_id=WX_APP, app_secret="s", api_base=fake.base))

    def inbound(self, text, key):
        ts, nonce = str(int(time.time())), str(_digits(key, 6))
        xml = (f"<xml><ToUserName><![CDATA[gh_conf]]></ToUserName><FromUserName><![CDATA[oConformance]]></FromUserName>"
               f"<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
               f"<Content><![CDATA[{text}]]></Content><MsgId>{_digits(key, 12)}</MsgId></xml>")
        return HttpRequest("POST", "/webhooks/wechat", xml.encode(), {"Content-Type": "text/xml"},
                           {"signature": sha1_signature(WX_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                            "openid": "oConformance"})

    def sent_texts(self, fake):
        return [c.json()["text"]["content"] for c in fake.posts_to("/custom/send")]


class TestAppConformance(ChannelConformance):
    probe = AppProbe()


class TestTwilioSmsConformance(ChannelConformance):
    probe = TwilioSmsProbe()


class TestTwilioVoiceConformance(ChannelConformance):
    probe = TwilioVoiceProbe()


class TestMetaConformance(ChannelConformance):
    probe = MetaProbe()


class TestTelegramConformance(ChannelConformance):
    probe = TelegramProbe()


class TestWeChatConformance(ChannelConformance):
    probe = WeChatProbe()
