"""Phone calls through Twilio: ``POST /webhooks/twilio/voice`` and its callbacks.

A call is answered at once with TwiML: language (中文 / English), a menu whose digits are the
complaint categories (9: the status of a case) — keys or speech: "退款" or "refund" is the
payment-amount choice (``<Gather input="dtmf speech">``, recognised in zh-CN or en-US) — then a
recording with transcription. The
recording callback opens the complaint at once, its message carrying a "recording pending" note
(the recording is its evidence, pending until a job fetches it); the transcription, when Twilio
manages one, joins the same case as the text of that message (an edit of it). Replies go out by
SMS.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import Request, Response, post
from twilio.twiml.voice_response import VoiceResponse

from adapters.twilio_sms import (
    TwilioSettings,
    TwilioSmsChannel,
    TwilioSmsSender,
    e164,
    fetch_twilio_media,
    twiml,
    verified_form,
)
from plugins.kit import Contact, EvidenceLink, GatewayServices, RouteMount, build_message, clean_text, hookimpl, new_id
from normalizer.categories import CATEGORY_NAMES
from normalizer.status import STATUS_WORDS

log = logging.getLogger("gateway.twilio")

CHANNEL = "twilio_voice"
PREFIX = "/webhooks/twilio/voice"
VOICE = {"zh": "zh-CN", "en": "en-US"}
MENU = ["account_security", "transaction", "payment_amount", "fee_dispute", "function_fault", "balance_query", "other"]
CALL_STATE_TTL = 7 * 86400
STATUS_CHOICE = "9"

#: What a caller may say instead of pressing a key: words per menu choice, checked in this order
#: (the more specific first: "手续费退款" is a fee dispute, "退款" alone a payment-amount appeal).
MENU_WORDS: list[tuple[str, dict[str, tuple[str, ...]]]] = [
    (STATUS_CHOICE, {"zh": ("进度", "状态", "查询案件", "案件"), "en": ("status", "progress", "my case")}),
    ("6", {"zh": ("余额",), "en": ("balance",)}),
    ("4", {"zh": ("手续费", "服务费", "收费"), "en": ("fee", "commission")}),
    ("3", {"zh": ("退款", "金额", "扣款", "多扣", "扣了", "支付"),
           "en": ("refund", "amount", "charge", "charged", "overcharged", "payment")}),
    ("1", {"zh": ("账户安全", "被盗", "盗刷", "冻结", "密码", "安全"),
           "en": ("security", "hacked", "stolen", "fraud", "password", "frozen", "locked")}),
    ("2", {"zh": ("交易", "转账", "到账", "没收到"), "en": ("transaction", "transfer", "not received")}),
    ("5", {"zh": ("故障", "闪退", "打不开", "崩溃", "报错", "功能"),
           "en": ("crash", "bug", "error", "not working", "fault", "app")}),
    ("7", {"zh": ("其他", "其它", "别的"), "en": ("other", "something else")}),
]
#: A choice said as its number ("three", "三").
NUMBER_WORDS = {"zh": "一二三四五六七八九", "en": ("one", "two", "three", "four", "five", "six", "seven", "eight",
                                              "nine")}
#: Words the recogniser is told to expect (Twilio's ``hints``), per language.
SPEECH_HINTS = {lang: ",".join(w for _, words in MENU_WORDS for w in words[lang]) for lang in VOICE}
LANGUAGE_HINTS = "中文,普通话,English,英文"


def spoken_choice(speech: str, lang: str) -> str:
    """The menu key a caller's words stand for ("我要退款" -> "3"), or "" when none does."""
    said = speech.strip().lower().rstrip("。.!！?？")
    numbers = NUMBER_WORDS[lang]
    if said in numbers:
        return str(list(numbers).index(said) + 1)
    if lang == "en":  # whole words: "app" is not in "happened"
        said = " " + re.sub(r"[^a-z]+", " ", said) + " "
        return next((key for key, words in MENU_WORDS if any(f" {w} " in said for w in words[lang])), "")
    return next((key for key, words in MENU_WORDS if any(w in said for w in words[lang])), "")


def spoken_language(speech: str) -> str:
    """The caller's language from what they said at the greeting ("English" / "英文" -> en)."""
    said = speech.lower()
    return "2" if "english" in said or "英" in said else "1"

SAY = {
    "greeting_zh": "您好，这里是客户服务中心。中文服务请按1。",
    "greeting_en": "For English, press 2.",
    "menu": {
        "zh": "".join(f"{CATEGORY_NAMES[c]['zh']}请按{i}，" for i, c in enumerate(MENU, 1)) + "查询案件进度请按9。",
        "en": " ".join(f"For {CATEGORY_NAMES[c]['en'].lower()}, press {i}." for i, c in enumerate(MENU, 1))
        + " To hear the status of a case, press 9.",
    },
    "record": {"zh": "请在提示音后说明您的问题，说完请按井号键。",
               "en": "Please describe your problem after the tone, then press the pound key."},
    "thanks": {"zh": "谢谢，您的问题已记录。我们会尽快通过短信与您联系。",
               "en": "Thank you, your problem is recorded. We will contact you by text message shortly."},
    "ask_case": {"zh": "请输入案件编号中的十四位数字，以井号键结束。",
                 "en": "Please enter the fourteen digits of your case number, then press pound."},
    "not_found": {"zh": "没有找到这个案件编号。", "en": "We could not find that case number."},
    "invalid": {"zh": "输入无效。", "en": "That is not a valid choice."},
}

#: The note on the message of a case a recording opened, until the transcript gives it words. It
#: is the message's subject line, not its text: the text is what the caller said (nothing yet),
#: which is what categorising and the repeat check read - two calls' notes are not one problem.
RECORDING_NOTE = {
    "pending": {"zh": "语音留言{seconds}，文字转写待补", "en": "Voice message{seconds}; transcript pending"},
    "failed": {"zh": "语音留言{seconds}，无文字转写", "en": "Voice message{seconds}; no transcript"},
}


def recording_note(form: dict[str, str], lang: str, transcription: str = "pending") -> str:
    duration = form.get("RecordingDuration", "")
    seconds = ""
    if duration.isdigit():
        seconds = f"（{duration} 秒）" if lang == "zh" else f" ({duration} s)"
    return RECORDING_NOTE["failed" if transcription == "failed" else "pending"][lang].format(seconds=seconds)


def _lang(request: Request[Any, Any, Any]) -> str:
    return "en" if request.query_params.get("lang") == "en" else "zh"


class TwilioVoiceChannel:
    """The built-in voice plugin (same Twilio account settings as SMS)."""

    Settings = TwilioSettings

    def __init__(self, settings: TwilioSettings | None = None) -> None:
        self.settings = settings or TwilioSettings()

    def _state_key(self, services: GatewayServices, call_sid: str) -> str:
        return services.store.keys.plugin("call", call_sid)

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        def menu(lang: str) -> VoiceResponse:
            response = VoiceResponse()
            gather = response.gather(input="dtmf speech", num_digits=1, action=f"{PREFIX}/menu?lang={lang}",
                                     timeout=6, language=VOICE[lang], hints=SPEECH_HINTS[lang], speech_timeout="auto")
            gather.say(SAY["menu"][lang], language=VOICE[lang])
            response.redirect(f"{PREFIX}/menu?lang={lang}&Digits=7")  # silence: record as "other"
            return response

        @post("", operation_id="twilioVoiceIn", summary="Twilio: a call comes in", tags=["webhooks"], status_code=200)
        async def call_in(request: Request[Any, Any, Any]) -> Response[bytes]:
            form = await verified_form(services, settings, request)
            call_sid = form.get("CallSid", "")
            if call_sid and form.get("From"):
                key = self._state_key(services, call_sid)
                await services.require_redis().hset(key, mapping={"from": e164(form["From"])})
                await services.require_redis().expire(key, CALL_STATE_TTL)
            response = VoiceResponse()
            gather = response.gather(input="dtmf speech", num_digits=1, action=f"{PREFIX}/language", timeout=4,
                                     language=VOICE["zh"], hints=LANGUAGE_HINTS, speech_timeout="auto")
            gather.say(SAY["greeting_zh"], language=VOICE["zh"])
            gather.say(SAY["greeting_en"], language=VOICE["en"])
            response.redirect(f"{PREFIX}/language?Digits=1")
            return twiml(response)

        @post("/language", operation_id="twilioVoiceLanguage", tags=["webhooks"], status_code=200)
        async def language(request: Request[Any, Any, Any]) -> Response[bytes]:
            form = await verified_form(services, settings, request)
            digits = form.get("Digits") or (spoken_language(form["SpeechResult"]) if form.get("SpeechResult")
                                            else request.query_params.get("Digits", "1"))
            lang = "en" if digits == "2" else "zh"
            call_sid = form.get("CallSid", "")
            if call_sid:
                await services.require_redis().hset(self._state_key(services, call_sid), "lang", lang)
            return twiml(menu(lang))

        @post("/menu", operation_id="twilioVoiceMenu", tags=["webhooks"], status_code=200)
        async def menu_choice(request: Request[Any, Any, Any]) -> Response[bytes]:
            form = await verified_form(services, settings, request)
            lang = _lang(request)
            digits = form.get("Digits") or (spoken_choice(form["SpeechResult"], lang) if form.get("SpeechResult")
                                            else request.query_params.get("Digits", ""))
            response = VoiceResponse()
            if digits == STATUS_CHOICE:
                gather = response.gather(num_digits=14, finish_on_key="#", action=f"{PREFIX}/status?lang={lang}",
                                         timeout=10)
                gather.say(SAY["ask_case"][lang], language=VOICE[lang])
                return twiml(response)
            if not digits.isdigit() or not 1 <= int(digits) <= len(MENU):
                response.say(SAY["invalid"][lang], language=VOICE[lang])
                response.redirect(f"{PREFIX}/language?Digits={'2' if lang == 'en' else '1'}")
                return twiml(response)
            category = MENU[int(digits) - 1]
            query = f"lang={lang}&category={category}"
            response.say(SAY["record"][lang], language=VOICE[lang])
            response.record(max_length=120, finish_on_key="#", play_beep=True, transcribe=True,
                            transcribe_callback=f"{PREFIX}/transcription?{query}",
                            recording_status_callback=f"{PREFIX}/recording?{query}",
                            recording_status_callback_event="completed",
                            action=f"{PREFIX}/recorded?{query}")
            return twiml(response)

        @post("/recorded", operation_id="twilioVoiceRecorded", tags=["webhooks"], status_code=200)
        async def recorded(request: Request[Any, Any, Any]) -> Response[bytes]:
            await verified_form(services, settings, request)
            lang = _lang(request)
            response = VoiceResponse()
            response.say(SAY["thanks"][lang], language=VOICE[lang])
            response.hangup()
            return twiml(response)

        @post("/recording", operation_id="twilioVoiceRecording", tags=["webhooks"], status_code=204)
        async def recording(request: Request[Any, Any, Any]) -> None:
            form = await verified_form(services, settings, request)
            if form.get("RecordingStatus", "completed") != "completed" or not form.get("RecordingUrl"):
                return None
            evidence = EvidenceLink(id="ev_pending_recording", sha256="", content_type="audio/mpeg", size=0,
                                    source="recording", remote_url=form["RecordingUrl"] + ".mp3",
                                    filename=f"{form.get('RecordingSid', 'recording')}.mp3")
            await self._take(services, request, form, kind="recording", text="", attachments=[evidence])
            return None

        @post("/transcription", operation_id="twilioVoiceTranscription", tags=["webhooks"], status_code=204)
        async def transcription(request: Request[Any, Any, Any]) -> None:
            form = await verified_form(services, settings, request)
            if form.get("TranscriptionStatus") != "completed" or not form.get("TranscriptionText", "").strip():
                call_sid = form.get("CallSid", "")
                if call_sid:  # a recording still to come opens the case saying there is no transcript
                    await services.require_redis().hset(self._state_key(services, call_sid), "transcription", "failed")
                return None  # recording-only: the complaint stands on the recording
            text = clean_text(form["TranscriptionText"], services.settings.max_text_chars)
            await self._take(services, request, form, kind="transcription", text=text, attachments=[])
            return None

        @post("/status", operation_id="twilioVoiceStatus", tags=["webhooks"], status_code=200)
        async def case_status(request: Request[Any, Any, Any]) -> Response[bytes]:
            form = await verified_form(services, settings, request)
            lang = _lang(request)
            digits = "".join(ch for ch in form.get("Digits", "") if ch.isdigit())
            response = VoiceResponse()
            complaint = None
            if len(digits) == 14:  # only the caller's own cases: a case number is not a password
                caller = Contact(kind="phone", value=e164(form.get("From", "") or "+0"))
                complaint = await services.store.case_for_contact(f"C-{digits[:8]}-{digits[8:]}", caller)
            if complaint is None:
                response.say(SAY["not_found"][lang], language=VOICE[lang])
            else:
                zh, en = STATUS_WORDS.get(complaint.status.value, (complaint.status.value, complaint.status.value))
                spoken = " ".join(digits[8:])
                text = (f"案件 {spoken} 当前状态：{zh}。" if lang == "zh" else f"Case {spoken} is {en}.")
                response.say(text, language=VOICE[lang])
            response.hangup()
            return twiml(response)

        return RouteMount(handlers=[call_in, language, menu_choice, recorded, recording, transcription, case_status],
                          prefix=PREFIX)

    async def _take(self, services: GatewayServices, request: Request[Any, Any, Any], form: dict[str, str], *,
                    kind: str, text: str, attachments: list[EvidenceLink]) -> None:
        """The first of the recording / transcription callbacks opens the complaint; the second
        joins it. Twilio's retries of either are harmless (idempotency per call and kind).

        A recording that opens the case carries a "recording pending" note as its subject (the
        recording is fetched later); a transcript that comes after it joins as an edit of that
        message (``edit_of``): the caller's words, where the recording had none yet."""
        call_sid = form.get("CallSid", "")
        if not call_sid:
            return
        redis = services.require_redis()
        key = self._state_key(services, call_sid)
        lang = _lang(request)
        category = request.query_params.get("category")
        async with redis.pipeline(transaction=True) as pipe:  # who opened the case, written at once
            pipe.hsetnx(key, "message_id", new_id("msg"))
            pipe.hsetnx(key, "first_part", kind)
            pipe.expire(key, CALL_STATE_TTL)
            pipe.hgetall(key)
            set_id, set_part, _, raw_state = await pipe.execute()
        state = {k.decode(): v.decode() for k, v in raw_state.items()}
        caller = state.get("from") or e164(form.get("From", "") or "+0")
        opened_by, first_part = state["message_id"], state.get("first_part")
        metadata, subject = {"call_sid": call_sid, "part": kind}, None
        # this part opens the case; or it did, and Twilio retries it: the same message again (a
        # call state from before "first_part" was kept sets it now: that part did not open it)
        if set_id or (not set_part and first_part == kind):
            message_id, complaint_ref = opened_by, None
            if kind == "recording" and not text:
                subject = recording_note(form, lang, state.get("transcription", "pending"))
        else:
            message_id, complaint_ref = new_id("msg"), opened_by
            if kind == "transcription" and first_part == "recording":
                metadata["edit_of"] = opened_by  # the recording's words
        message = build_message(
            message_id=message_id, channel=CHANNEL, sender=Contact(kind="phone", value=caller), text=text,
            provider_message_id=call_sid, language=lang, category_hint=category if category in MENU else None,
            attachments=attachments, complaint_ref=complaint_ref, metadata=metadata, subject=subject,
        )
        await services.intake.submit(message, idempotency_scope=f"call:{call_sid}:{kind}")

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> TwilioSmsSender | None:
        if channel != CHANNEL or not self.settings.account_sid:
            return None
        return TwilioSmsSender(self.settings, services, TwilioSmsChannel(self.settings)._optout_key)

    @hookimpl
    async def fetch_evidence(self, evidence: EvidenceLink, channel: str,
                             services: GatewayServices) -> tuple[bytes, str] | None:
        if channel != CHANNEL or not evidence.remote_url:
            return None
        return await fetch_twilio_media(self.settings, evidence.remote_url, evidence.content_type)
