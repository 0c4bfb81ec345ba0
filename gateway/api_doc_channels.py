"""The bodies the built-in channels' routes take and answer, for the OpenAPI document.

Webhooks read their raw bytes (a signature is computed over them, before anything is parsed), so
nothing in their handlers tells Litestar what they expect; this table does, by operation id. The
structs name the fields the channels read (providers send more; every field is optional here, as
the handlers take what is there and quarantine what they cannot use). A channel plugin outside
the repository documents its routes through its handlers' ``opt`` instead (gateway/api_doc.py).
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.app import AppMessageIn, MessageAccepted, MessageState
from adapters.payment_records import ChargeList, ChargeRecord
from gateway.api_doc import Doc, describe

FORM = "application/x-www-form-urlencoded"
#: A webhook refuses a request its signature does not cover (403) and answers 503 while storage
#: is away (the provider retries).
REFUSED = (403, 503)
TWIML = "text/xml"


class TwilioSmsForm(msgspec.Struct, kw_only=True):
    """Twilio's form for an incoming SMS / MMS (signed with X-Twilio-Signature)."""

    MessageSid: str | None = None
    AccountSid: str | None = None
    From: str | None = None
    To: str | None = None
    Body: str | None = None
    NumMedia: str | None = None
    #: MediaUrl0 … MediaUrl9 and MediaContentType0 … 9, one pair per attachment
    MediaUrl0: str | None = None
    MediaContentType0: str | None = None


class TwilioStatusForm(msgspec.Struct, kw_only=True):
    """Twilio's delivery-status callback for a message we sent."""

    MessageSid: str | None = None
    MessageStatus: str | None = None
    ErrorCode: str | None = None


class TwilioVoiceForm(msgspec.Struct, kw_only=True):
    """Twilio's form for a call and its callbacks (menu keys or speech, recording, transcription)."""

    CallSid: str | None = None
    From: str | None = None
    To: str | None = None
    CallStatus: str | None = None
    Digits: str | None = None
    SpeechResult: str | None = None
    RecordingUrl: str | None = None
    RecordingStatus: str | None = None
    RecordingDuration: str | None = None
    TranscriptionText: str | None = None
    TranscriptionStatus: str | None = None


class MetaEntry(msgspec.Struct, kw_only=True):
    id: str | None = None
    time: int | None = None
    #: WhatsApp: ``{"field": "messages", "value": {"messages": [...], "statuses": [...], ...}}``
    changes: list[dict[str, Any]] = []
    #: Messenger and Instagram: ``{"sender": {"id": …}, "message": {...}}``
    messaging: list[dict[str, Any]] = []


class MetaWebhook(msgspec.Struct, kw_only=True):
    """Meta's event envelope (signed with X-Hub-Signature-256); several messages may come at once."""

    object: str
    entry: list[MetaEntry] = []


class MetaTaken(msgspec.Struct, kw_only=True):
    accepted: int
    quarantined: int
    statuses: int | None = None


class TelegramUpdate(msgspec.Struct, kw_only=True):
    """A Bot API update (X-Telegram-Bot-Api-Secret-Token); other kinds of update are skipped."""

    update_id: int
    message: dict[str, Any] | None = None
    edited_message: dict[str, Any] | None = None


class TelegramAnswer(msgspec.Struct, kw_only=True):
    """Empty, or the Bot API call to make (``sendMessage``) answered in the webhook's response."""

    method: str | None = None
    chat_id: int | str | None = None
    text: str | None = None


_TWILIO_SMS = {"MessageSid": "SM0123456789abcdef0123456789abcdef", "AccountSid": "AC0123456789abcdef",
               "From": "+8613800138000", "To": "+8610086", "Body": "我被扣了两次钱", "NumMedia": "0"}
_VOICE = {"CallSid": "CA0123456789abcdef", "From": "+8613800138000", "To": "+8610086", "Digits": "2"}
_WECHAT = ("<xml><ToUserName><![CDATA[gh_123]]></ToUserName><FromUserName><![CDATA[oUser]]></FromUserName>"
           "<CreateTime>1767225600</CreateTime><MsgType><![CDATA[text]]></MsgType>"
           "<Content><![CDATA[我被扣了两次钱]]></Content><MsgId>1234567890</MsgId></xml>")
_META = {"object": "whatsapp_business_account", "entry": [{"id": "1029", "changes": [{"field": "messages", "value": {
    "messaging_product": "whatsapp", "metadata": {"phone_number_id": "1111"},
    "messages": [{"from": "8613800138000", "id": "wamid.A1", "timestamp": "1767225600", "type": "text",
                  "text": {"body": "I was charged twice"}}]}}]}]}
_TELEGRAM = {"update_id": 10001, "message": {"message_id": 7, "date": 1767225600, "text": "I was charged twice",
                                             "chat": {"id": 4242, "type": "private"},
                                             "from": {"id": 4242, "is_bot": False, "first_name": "Lin"}}}


def _voice() -> Doc:
    return describe(TwilioVoiceForm, str, example=_VOICE, media_type=FORM, ok_media_type=TWIML,
                    ok_description="TwiML: what the call does next", problems=REFUSED)


CHANNEL_DOCS: dict[str, Doc] = {
    "submitAppMessage": describe(
        AppMessageIn, MessageAccepted, problems=(409, 429),
        ok_description="Durable; poll GET /v1/messages/{message_id}",
        ok_example={"message_id": "msg_01HZX5Y2", "status": "received", "warnings": []},
        example={"user_id": "u_1001", "text": "扣了我两次 128.50 元", "client_message_id": "app-msg-000123",
                 "transaction_id": "T20260301000123", "amount": "128.50", "currency": "CNY", "language": "zh"}),
    "getAppMessage": describe(ok=MessageState, ok_example={
        "message_id": "msg_01HZX5Y2", "status": "processed", "complaint_id": "cmp_01HZX5Y3",
        "case_number": "C-20260301-000042"}),
    "demoPaymentCharge": describe(ok=ChargeRecord, problems=(401,)),
    "demoPaymentCharges": describe(ok=ChargeList, problems=(400, 401)),
    "twilioSmsIn": describe(TwilioSmsForm, str, example=_TWILIO_SMS, media_type=FORM, ok_media_type=TWIML,
                            ok_description="TwiML (empty: the acknowledgement goes by the API)", problems=REFUSED),
    "twilioSmsStatus": describe(TwilioStatusForm, example={"MessageSid": "SM0123", "MessageStatus": "delivered"},
                                media_type=FORM, ok_description="Recorded", problems=REFUSED),
    "twilioVoiceIn": _voice(),
    "twilioVoiceLanguage": _voice(),
    "twilioVoiceMenu": _voice(),
    "twilioVoiceRecorded": _voice(),
    "twilioVoiceRecording": describe(TwilioVoiceForm, example=_VOICE, media_type=FORM, ok_description="Recorded",
                                     problems=REFUSED),
    "twilioVoiceTranscription": describe(TwilioVoiceForm, example=_VOICE, media_type=FORM,
                                         ok_description="Recorded", problems=REFUSED),
    "twilioVoiceStatus": _voice(),
    "metaVerify": describe(ok=str, ok_description="The hub.challenge, echoed", problems=REFUSED),
    "metaIn": describe(MetaWebhook, MetaTaken, example=_META, problems=REFUSED,
                       ok_description="How many messages were taken, statuses recorded, inputs quarantined"),
    "telegramIn": describe(TelegramUpdate, TelegramAnswer, example=_TELEGRAM, problems=REFUSED),
    "wechatVerify": describe(ok=str, ok_description="The echostr, echoed", problems=REFUSED),
    "wechatIn": describe(str, str, example=_WECHAT, media_type="text/xml", ok_media_type="text/xml",
                         ok_description="A passive reply (XML) or `success`", problems=REFUSED),
}

__all__ = ["CHANNEL_DOCS"]
