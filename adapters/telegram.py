"""Telegram bots: ``POST /webhooks/telegram`` in, the Bot API's ``sendMessage`` out.

One module, one shape: settings, verify (``X-Telegram-Bot-Api-Secret-Token``, the secret we gave
``setWebhook``, compared in constant time before the body is parsed), parse (text, photos — the
largest size is the evidence —, documents, voice notes, edits), send.

Telegram delivers a bot's updates one at a time and holds back the rest while one fails, so a
signed update we cannot take is quarantined and answered 200: it never blocks the queue.

Deduplication: a new message by chat + message id (a retried update repeats both), everything
else by ``update_id``. An edited message joins the complaint its original opened, as a new
revision of the text, never as a new complaint. ``/start``, ``/help`` and ``/status <case>`` are
answered at once, in the webhook's own response (Telegram lets a webhook answer with one
Bot API call), without touching the queue. The stable contact id is the Telegram user id.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import msgspec
from litestar import Request, Response, post

from plugins.kit import (
    Contact,
    DeliveryResult,
    EvidenceLink,
    GatewayServices,
    InputRejected,
    OutboundMessage,
    ProblemError,
    RouteMount,
    bounded_body,
    build_message,
    clean_text,
    hookimpl,
    http_failure,
    new_id,
    quarantine_once,
    raise_if_transient,
    require_configured,
    same_secret,
    tls,
)
from normalizer.status import normalise_case_number, status_text
from normalizer.text import split_text

CHANNEL = "telegram"
FILE_SCHEME = "tg-file:"
TEXT_LIMIT = 4096
MAX_FILE_BYTES = 20 * 1024 * 1024  # the Bot API serves files up to 20 MB

WELCOME = {
    "zh": "您好，这里是客户服务。请直接描述您的问题（可附截图），我们会给您一个案件编号。"
          "查询进度：/status 案件编号",
    "en": "Hello, this is customer care. Describe your problem (screenshots welcome) and we will give you a "
          "case number. To check progress: /status <case number>",
}
USAGE = {"zh": "用法：/status C-20261123-000001", "en": "Usage: /status C-20261123-000001"}


class TelegramSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: The bot's token from @BotFather (TELEGRAM_BOT_TOKEN).
    bot_token: str = ""
    #: The secret_token given to setWebhook; Telegram sends it in every request (TELEGRAM_SECRET_TOKEN).
    secret_token: str = ""
    #: Used while ``secret_token`` is empty: the same secret under its earlier name (TELEGRAM_SECRET).
    secret_token_fallback: str = ""
    api_base: str = "https://api.telegram.org"
    max_body_bytes: int = 256 * 1024
    #: Seconds a Bot API call may wait to connect and for each answer, and a file fetch in all,
    #: before it counts as failed and is retried later; keep it under GATEWAY_JOB_TIMEOUT_SECONDS.
    timeout_seconds: float = 15.0

    def __post_init__(self) -> None:
        self.secret_token = self.secret_token or self.secret_token_fallback


def client_language(user: dict[str, Any]) -> str | None:
    """The language the customer's Telegram app is set to (``zh-hans`` → zh), if it says."""
    code = str(user.get("language_code") or "").lower()
    return "zh" if code.startswith("zh") else "en" if code else None


class TelegramChannel:
    """The built-in Telegram bot plugin."""

    Settings = TelegramSettings

    def __init__(self, settings: TelegramSettings | None = None) -> None:
        self.settings = settings or TelegramSettings()

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        @post("", operation_id="telegramIn", summary="Telegram: a bot update", tags=["webhooks"], status_code=200)
        async def receive(request: Request[Any, Any, Any]) -> Response[Any]:
            require_configured(settings.secret_token, "TELEGRAM_SECRET_TOKEN")
            if not same_secret(request.headers.get("x-telegram-bot-api-secret-token"), settings.secret_token):
                raise ProblemError(403, "secret_token_invalid", "X-Telegram-Bot-Api-Secret-Token does not match.")
            body = await bounded_body(request, settings.max_body_bytes)
            answer = await self.take(services, body)
            return Response(answer or {}, media_type="application/json")

        return RouteMount(handlers=[receive], prefix="/webhooks/telegram")

    async def take(self, services: GatewayServices, body: bytes) -> dict[str, Any] | None:
        """Take one update; answers the Bot API call to make in the response, if any."""
        try:
            update = json.loads(body)
            update_id = int(update["update_id"])
        except (ValueError, KeyError, TypeError) as exc:
            await quarantine_once(services, CHANNEL, f"unparseable update: {exc}", body)
            return None
        edited = "edited_message" in update
        message = update.get("edited_message") if edited else update.get("message")
        if message is None:
            return None  # channel posts, callback queries, membership changes: nothing to take
        try:
            return await self._message(services, update_id, message, edited, body)
        except (KeyError, TypeError, ValueError, AttributeError, InputRejected) as exc:
            await quarantine_once(services, CHANNEL, f"malformed update {update_id}: {exc}", body,
                                  identity=f"upd:{update_id}")
            return None

    async def _message(self, services: GatewayServices, update_id: int, message: dict[str, Any], edited: bool,
                       body: bytes) -> dict[str, Any] | None:
        chat, user = message["chat"], message.get("from") or {}
        if chat.get("type") != "private" or user.get("is_bot"):
            return None  # the desk talks to customers one to one
        chat_id, user_id, message_id = int(chat["id"]), int(user["id"]), int(message["message_id"])
        text = clean_text(str(message.get("text") or message.get("caption") or ""), services.settings.max_text_chars)
        lang = client_language(user)
        sender = Contact(kind="telegram", value=str(user_id),
                         display_name=" ".join(filter(None, (user.get("first_name"), user.get("last_name")))) or None)
        if not edited and text.startswith("/"):
            command, _, argument = text.partition(" ")
            command = command.split("@", 1)[0].lower()
            if command in ("/start", "/help"):
                return self._say(chat_id, WELCOME[lang or "zh"])
            if command == "/status":
                case_number = normalise_case_number(argument)
                if case_number is None:
                    return self._say(chat_id, USAGE[lang or "zh"])
                complaint = await services.store.case_for_contact(case_number, sender)
                return self._say(chat_id, status_text(complaint, lang or (complaint.language if complaint else "zh"),
                                                      case_number))
        attachments = _attachments(message)
        if not text and not attachments:
            return None  # stickers, locations, contacts ...
        complaint_ref = None
        metadata = {"chat_id": str(chat_id), "message_id": str(message_id), "update_id": str(update_id)}
        scope = f"chat:{chat_id}:{message_id}"
        if edited:
            original = await services.store.idempotent_message(CHANNEL, scope)
            scope = f"upd:{update_id}"
            if original is not None:
                complaint_ref = original
                metadata["edit_of"] = original
        inbound = build_message(
            message_id=new_id("msg"), channel=CHANNEL, sender=sender, text=text,
            language=None if text else lang,  # the text's own language first
            provider_message_id=f"{chat_id}:{message_id}", attachments=attachments, complaint_ref=complaint_ref,
            metadata=metadata,
        )
        await services.intake.submit(inbound, idempotency_scope=scope, raw=body)
        return None

    @staticmethod
    def _say(chat_id: int, text: str) -> dict[str, Any]:
        return {"method": "sendMessage", "chat_id": chat_id, "text": text}

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "TelegramSender | None":
        if channel != CHANNEL or not self.settings.bot_token:
            return None
        return TelegramSender(self.settings, services)

    @hookimpl
    async def fetch_evidence(self, evidence: EvidenceLink, channel: str,
                             services: GatewayServices) -> tuple[bytes, str] | None:
        if channel != CHANNEL or not (evidence.remote_url or "").startswith(FILE_SCHEME):
            return None
        base = f"{self.settings.api_base.rstrip('/')}"
        # bounded as a whole: a stalled server fails this try (the job retries with backoff)
        # rather than outliving the job's own timeout
        async with (asyncio.timeout(self.settings.timeout_seconds),
                    httpx.AsyncClient(verify=tls(), timeout=self.settings.timeout_seconds) as http):
            info = await http.get(f"{base}/bot{self.settings.bot_token}/getFile",
                                  params={"file_id": evidence.remote_url[len(FILE_SCHEME):]})
            raise_if_transient(info, "Telegram")
            if info.status_code >= 400 or not info.json().get("ok"):
                return None
            path = info.json()["result"]["file_path"]
            response = await http.get(f"{base}/file/bot{self.settings.bot_token}/{path}")
        raise_if_transient(response, "Telegram")
        if response.status_code >= 400:
            return None
        return response.content, evidence.content_type


def _attachments(message: dict[str, Any]) -> list[EvidenceLink]:
    links = []
    photos = message.get("photo")
    if isinstance(photos, list) and photos:
        best = max(photos, key=lambda p: (int(p.get("file_size") or 0), int(p.get("width", 0)) * int(p.get("height", 0))))
        links.append(EvidenceLink(id="ev_pending_photo", sha256="", content_type="image/jpeg", size=0,
                                  source=CHANNEL, remote_url=FILE_SCHEME + str(best["file_id"])))
    for kind, default_type in (("document", "application/octet-stream"), ("voice", "audio/ogg"),
                               ("video", "video/mp4"), ("audio", "audio/mpeg")):
        item = message.get(kind)
        if isinstance(item, dict) and item.get("file_id"):
            if int(item.get("file_size") or 0) > MAX_FILE_BYTES:
                continue
            links.append(EvidenceLink(id=f"ev_pending_{kind}", sha256="", size=0, source=CHANNEL,
                                      content_type=str(item.get("mime_type") or default_type),
                                      filename=item["file_name"] if isinstance(item.get("file_name"), str) else None,
                                      remote_url=FILE_SCHEME + str(item["file_id"])))
    return links


class TelegramSender:
    """``sendMessage`` to the customer's private chat (its id is the user id)."""

    def __init__(self, settings: TelegramSettings, services: GatewayServices) -> None:
        self.settings = settings
        self.services = services

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        url = f"{self.settings.api_base.rstrip('/')}/bot{self.settings.bot_token}/sendMessage"
        ids = []
        async with httpx.AsyncClient(verify=tls(), timeout=self.settings.timeout_seconds) as http:
            for part in split_text(message.text, TEXT_LIMIT):
                try:
                    response = await http.post(url, json={"chat_id": int(message.to.value), "text": part})
                except httpx.HTTPError as exc:
                    return http_failure(None, exc)
                if response.status_code >= 400:
                    return http_failure(response)  # 429 / 5xx retry; 403 (blocked by the user) does not
                ids.append(str(response.json()["result"]["message_id"]))
        return DeliveryResult(status="sent", provider_message_id=",".join(ids) or None)


__all__ = ["TelegramChannel", "TelegramSettings", "TelegramSender"]
