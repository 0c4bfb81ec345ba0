"""Every built-in webhook channel (and the app's API) passes the same conformance suite an
external plugin runs against itself (gateway/testkit.py). E-mail is a poller, not a webhook:
its duplicates, quarantine and replies are tested against a real IMAP server in test_email.py."""

from __future__ import annotations

import base64
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
from adapters.twilio_sms import MAX_FORM_BYTES, TwilioSettings, TwilioSmsChannel
from adapters.twilio_voice import TwilioVoiceChannel
from adapters.wechat import WeChatChannel, WeChatSettings, sha1_signature
from gateway.testkit import TESTKIT_APP_KEY, ChannelConformance, ChannelProbe, FakeApi, HttpRequest, Sent, bearer

pytestmark = pytest.mark.integration
PUBLIC = "https://gateway.example.test"


def _digits(key: str, n: int = 9) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:n], 16)


class AppProbe(ChannelProbe):
    """The app authenticates with an API key (401 without a good one), not a signature over
    the body; its "delivery" is storing the reply for the app to fetch."""

    name, channel, secret, refused, signs_body, outbound = "app", "app", TESTKIT_APP_KEY, 401, False, False
    max_body = 16 * 1024 * 1024

    def plugin(self, fake):
        return AppChannel()

    def inbound(self, text, key):
        body = json.dumps({"user_id": "conf-user", "text": text, "client_message_id": f"c-{key}"}).encode()
        return HttpRequest("POST", "/v1/messages", body, {**bearer(self.secret), "Content-Type": "application/json"})

    async def delivered_texts(self, fake, client, complaint_id):
        from gateway.testkit import TESTKIT_SUPERVISOR

        c = (await client.get(f"/v1/complaints/{complaint_id}", headers=bearer(TESTKIT_SUPERVISOR[1]))).json()
        return [r["text"] for r in c["replies"] if r["delivery"] == "delivered"]


SID, TOKEN = "AC" + "c" * 32, "conformance-twilio-token"


def twilio_fake_routes(fake: FakeApi) -> None:
    fake.route("POST", rf"/2010-04-01/Accounts/{SID}/Messages.json", lambda call, m: (201, {
        "sid": "SM" + uuid.uuid4().hex, "status": "queued", "to": parse_qs(call.body.decode())["To"][0],
        "body": parse_qs(call.body.decode())["Body"][0], "account_sid": SID}, "application/json"))


def twilio_signed(path: str, params: dict[str, str], query: dict[str, str] | None = None,
                  token: str = TOKEN) -> HttpRequest:
    """Signed as Twilio signs: the public URL with its query, and the form parameters."""
    signature = RequestValidator(token).compute_signature(PUBLIC + path + (f"?{urlencode(query)}" if query else ""),
                                                          params)
    return HttpRequest("POST", path, urlencode(params).encode(),
                       {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
                       query or {})


def twilio_sent(fake: FakeApi) -> list[Sent]:
    def basic(call):
        scheme, _, value = call.headers.get("Authorization", "").partition(" ")
        return base64.b64decode(value).decode() if scheme == "Basic" else ""
    return [Sent(parse_qs(c.body.decode())["To"][0], parse_qs(c.body.decode())["Body"][0], basic(c), c.status)
            for c in fake.posts_to("Messages.json")]


class TwilioSmsProbe(ChannelProbe):
    name, channel, public_url = "twilio_sms", "twilio_sms", PUBLIC
    secret, contact, credential, max_body = TOKEN, "+8613900000001", f"{SID}:{TOKEN}", MAX_FORM_BYTES

    def plugin(self, fake):
        twilio_fake_routes(fake)
        return TwilioSmsChannel(TwilioSettings(account_sid=SID, auth_token=TOKEN, from_number="+15005550006",
                                               api_base=fake.base))

    def inbound(self, text, key):
        sid = "SM" + hashlib.md5(key.encode()).hexdigest()
        return twilio_signed("/webhooks/twilio/sms", {
            "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": SID, "From": "+8613900000001",
            "To": "+15005550006", "Body": text, "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received",
            "ApiVersion": "2010-04-01", "FromCountry": "CN", "ToCountry": "US"}, token=self.secret)

    def sent_messages(self, fake):
        return twilio_sent(fake)


class TwilioVoiceProbe(TwilioSmsProbe):
    name, channel, contact = "twilio_voice", "twilio_voice", "+8613900000002"

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
            {"lang": "en", "category": "other"}, token=self.secret)


META_SECRET, WA_TOKEN, PNID = "conformance-meta-secret", "conformance-wa-token", "1234567890"


class MetaProbe(ChannelProbe):
    name, channel, secret, contact, credential = "meta", "whatsapp", META_SECRET, "8613900000003", WA_TOKEN
    max_body = 1_000_000

    def plugin(self, fake):
        fake.route("POST", rf"/v21.0/{PNID}/messages", lambda call, m: (200, {
            "messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT" + uuid.uuid4().hex}]}, "application/json"))
        return MetaChannel(MetaSettings(app_secret=META_SECRET, verify_token="v", whatsapp_token=WA_TOKEN,
                                        whatsapp_phone_number_id=PNID, graph_base=fake.base))

    def _signed(self, value):
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": PNID},
                **value}}]}]}).encode()
        signature = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        return HttpRequest("POST", "/webhooks/meta", body,
                           {"X-Hub-Signature-256": signature, "Content-Type": "application/json"})

    def inbound(self, text, key):
        return self.batch([(text, key)])

    def batch(self, items):
        return self._signed({
            "contacts": [{"profile": {"name": "Conformance"}, "wa_id": self.contact}],
            "messages": [{"from": self.contact, "id": f"wamid.{key}", "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": text}} for text, key in items]})

    def non_message(self, key):
        return self._signed({"statuses": [{"id": f"wamid.OUT{key}", "status": "read", "recipient_id": self.contact,
                                           "timestamp": str(int(time.time()))}]})

    def sent_messages(self, fake):
        return [Sent(c.json()["to"], c.json()["text"]["body"], c.headers.get("Authorization", "").removeprefix("Bearer "),
                     c.status) for c in fake.posts_to(rf"/{PNID}/messages") if c.json()["type"] == "text"]


BOT, TG_SECRET = "4242:conformance-bot-token", "conformance-secret"


class TelegramProbe(ChannelProbe):
    """Telegram authenticates with a static secret header, which does not cover the body."""

    name, channel, secret, signs_body, contact, credential = "telegram", "telegram", TG_SECRET, False, "777", BOT
    max_body = 256 * 1024

    def plugin(self, fake):
        fake.route("POST", rf"/bot{BOT}/sendMessage", lambda call, m: (200, {
            "ok": True, "result": {"message_id": 1, "text": call.json()["text"]}}, "application/json"))
        return TelegramChannel(TelegramSettings(bot_token=BOT, secret_token=TG_SECRET, api_base=fake.base))

    def _signed(self, update):
        return HttpRequest("POST", "/webhooks/telegram", json.dumps(update).encode(),
                           {"X-Telegram-Bot-Api-Secret-Token": self.secret, "Content-Type": "application/json"})

    def inbound(self, text, key):
        n = _digits(key)
        return self._signed({"update_id": n, "message": {
            "message_id": n, "date": int(time.time()), "text": text,
            "from": {"id": 777, "is_bot": False, "first_name": "Conf", "language_code": "en"},
            "chat": {"id": 777, "type": "private"}}})

    def non_message(self, key):
        return self._signed({"update_id": _digits(key), "my_chat_member": {
            "chat": {"id": 777, "type": "private"}, "from": {"id": 777, "is_bot": False, "first_name": "Conf"},
            "date": int(time.time()), "old_chat_member": {"status": "member"},
            "new_chat_member": {"status": "kicked"}}})

    def sent_messages(self, fake):
        return [Sent(str(c.json()["chat_id"]), c.json()["text"], c.path.split("/")[1].removeprefix("bot"), c.status)
                for c in fake.posts_to("/sendMessage")]


WX_TOKEN, WX_APP = "conformancetoken", "wxconformance01"


class WeChatProbe(ChannelProbe):
    """WeChat's plain-mode signature covers the token, timestamp and nonce, not the body."""

    name, channel, secret, signs_body, contact, credential = "wechat", "wechat", WX_TOKEN, False, "oConformance", "AT1"
    max_body = 64 * 1024

    def plugin(self, fake):
        fake.route("GET", r"/cgi-bin/token", lambda call, m: (200, {"access_token": "AT1", "expires_in": 7200},
                                                              "application/json"))
        fake.route("POST", r"/cgi-bin/message/custom/send", lambda call, m: (200, {"errcode": 0, "errmsg": "ok"},
                                                                            "application/json"))
        return WeChatChannel(WeChatSettings(token=WX_TOKEN, app_id=WX_APP, app_secret="s", api_base=fake.base))

    def _signed(self, key, fields):
        ts, nonce = str(int(time.time())), str(_digits(key, 6))
        xml = (f"<xml><ToUserName><![CDATA[gh_conf]]></ToUserName><FromUserName><![CDATA[{self.contact}]]>"
               f"</FromUserName><CreateTime>{ts}</CreateTime>{fields}</xml>")
        return HttpRequest("POST", "/webhooks/wechat", xml.encode(), {"Content-Type": "text/xml"},
                           {"signature": sha1_signature(self.secret, ts, nonce), "timestamp": ts, "nonce": nonce,
                            "openid": self.contact})

    def inbound(self, text, key):
        return self._signed(key, f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>"
                                 f"<MsgId>{_digits(key, 12)}</MsgId>")

    def non_message(self, key):
        return self._signed(key, "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[VIEW]]></Event>"
                                 "<EventKey><![CDATA[https://example.test/menu]]></EventKey>")

    def sent_messages(self, fake):
        return [Sent(c.json()["touser"], c.json()["text"]["content"], c.query.get("access_token", ""), c.status)
                for c in fake.posts_to("/custom/send")]


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
