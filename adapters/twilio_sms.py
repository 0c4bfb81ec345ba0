"""SMS / MMS through Twilio: ``POST /webhooks/twilio/sms`` in, the REST API out.

One module, one shape: settings, authenticity (``X-Twilio-Signature`` checked with
``twilio.request_validator`` against the configured public URL, on the raw form before
anything is stored), parse, send.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from litestar import Request, Response, post
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from plugins.kit import (
    Contact,
    DeliveryResult,
    EvidenceLink,
    GatewayServices,
    OutboundMessage,
    ProblemError,
    RouteMount,
    build_message,
    clean_text,
    hookimpl,
    new_id,
    raise_if_transient,
    tls,
)
from normalizer.text import split_text as split_sms

log = logging.getLogger("gateway.twilio")

CHANNEL = "twilio_sms"
#: Provider message ids of everything we send through Twilio (SMS and the voice channel's SMS).
OUTBOUND_NAMESPACE = "twilio"
MAX_FORM_BYTES = 64 * 1024
STOP_WORDS = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "退订", "TD"}
START_WORDS = {"START", "YES", "UNSTOP"}
HELP_WORDS = {"HELP", "INFO", "帮助"}
TWIML = "application/xml"

#: The twilio client blocks, so its calls run on threads of their own: a stalled Twilio ties up
#: these (each for at most ``timeout_seconds``), never the event loop's default pool, which the
#: IMAP pollers and evidence files share. Threads start on demand; 64 covers a worker's jobs.
REST_THREADS = ThreadPoolExecutor(max_workers=64, thread_name_prefix="twilio-rest")

HELP_TEXT = {
    "zh": "客户服务：直接回复短信描述您的问题；发送“进度 案件编号”查询进度；回复 STOP 退订。",
    "en": "Customer care: reply with your problem; send \"status <case number>\" for progress; reply STOP to opt out.",
}


class TwilioSettings(msgspec.Struct, forbid_unknown_fields=True):
    account_sid: str = ""
    auth_token: str = ""
    #: The sending number (E.164) or a Messaging Service SID (MG...).
    from_number: str = ""
    #: The REST API base (TWILIO_API_BASE): a local fake in tests, Twilio's own otherwise.
    api_base: str = "https://api.twilio.com"
    #: Longest single SMS body we send; longer replies are split at sentence ends.
    max_chars_per_message: int = 670
    #: Seconds a REST call (or a media download) may wait to connect and for each answer before
    #: it counts as failed and is retried later; keep it under GATEWAY_JOB_TIMEOUT_SECONDS.
    timeout_seconds: float = 10.0


def twilio_signed_url(services: GatewayServices, request: Request[Any, Any, Any]) -> str:
    """The URL Twilio signed: the public base URL (we sit behind a proxy) + path + query."""
    query = request.scope.get("query_string", b"").decode()
    return services.settings.public_url + request.url.path + (f"?{query}" if query else "")


async def verified_form(services: GatewayServices, settings: TwilioSettings,
                        request: Request[Any, Any, Any]) -> dict[str, str]:
    """The form parameters, only if Twilio signed them; otherwise 403 and nothing stored."""
    if not settings.auth_token:
        raise ProblemError(503, "channel_not_configured", "Twilio is not configured (TWILIO_AUTH_TOKEN).")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ProblemError(413, "payload_too_large", "The form is too large.")
    signature = request.headers.get("x-twilio-signature")
    if not signature:
        raise ProblemError(403, "signature_missing", "X-Twilio-Signature is missing.")
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
    except UnicodeDecodeError:
        raise ProblemError(403, "signature_invalid", "The request is not what Twilio signs.") from None
    if not RequestValidator(settings.auth_token).validate(twilio_signed_url(services, request), params, signature):
        raise ProblemError(403, "signature_invalid", "X-Twilio-Signature does not match.")
    return params


def twiml(response: Any) -> Response[bytes]:
    return Response(str(response).encode(), media_type=TWIML, status_code=200)


def e164(number: str) -> str:
    digits = re.sub(r"[^\d+]", "", number)
    return digits if digits.startswith("+") else "+" + digits


class TwilioSmsChannel:
    """The built-in SMS / MMS plugin."""

    Settings = TwilioSettings

    def __init__(self, settings: TwilioSettings | None = None) -> None:
        self.settings = settings or TwilioSettings()

    def _optout_key(self, services: GatewayServices, number: str) -> str:
        return services.store.keys.plugin("sms", "optout", number)

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        @post("/sms", operation_id="twilioSmsIn", summary="Twilio: an SMS / MMS arrives", tags=["webhooks"],
              status_code=200, include_in_schema=True)
        async def sms_in(request: Request[Any, Any, Any]) -> Response[bytes]:
            form = await verified_form(services, settings, request)
            sid = form.get("MessageSid") or form.get("SmsSid")
            sender = form.get("From", "")
            if not sid or not sender:
                raise ProblemError(400, "invalid_request", "MessageSid and From are required.")
            number = e164(sender)
            text = clean_text(form.get("Body", ""), services.settings.max_text_chars)
            keyword = text.strip().upper()
            redis = services.require_redis()
            if keyword in STOP_WORDS:
                await redis.set(self._optout_key(services, number), "1")
                return twiml(MessagingResponse())
            if keyword in START_WORDS:
                await redis.delete(self._optout_key(services, number))
                return twiml(MessagingResponse())
            if keyword in HELP_WORDS:
                reply = MessagingResponse()
                reply.message(HELP_TEXT["zh" if keyword == "帮助" else "en"])
                return twiml(reply)
            media = []
            try:
                count = min(int(form.get("NumMedia", "0") or 0), 10)
            except ValueError:
                count = 0
            for i in range(count):
                url = form.get(f"MediaUrl{i}")
                if url:
                    media.append(EvidenceLink(id=f"ev_pending_{i}", sha256="", content_type=form.get(
                        f"MediaContentType{i}", "application/octet-stream"), size=0, source="mms", remote_url=url))
            if not text and not media:
                return twiml(MessagingResponse())  # an empty SMS: nothing to take
            message = build_message(
                message_id=new_id("msg"), channel=CHANNEL, sender=Contact(kind="phone", value=number),
                text=text, provider_message_id=sid, attachments=media,
                metadata={"to": form.get("To", ""), "account": form.get("AccountSid", "")},
            )
            await services.intake.submit(message, idempotency_scope=f"sid:{sid}")
            return twiml(MessagingResponse())  # the acknowledgement follows by REST

        @post("/sms/status", operation_id="twilioSmsStatus", summary="Twilio: delivery status of our SMS",
              tags=["webhooks"], status_code=204)
        async def sms_status(request: Request[Any, Any, Any]) -> None:
            form = await verified_form(services, settings, request)
            status = form.get("MessageStatus", "")
            if status in ("sent", "delivered", "undelivered", "failed", "read"):
                await services.store.apply_provider_status(
                    OUTBOUND_NAMESPACE, form.get("MessageSid", ""), "failed" if status == "undelivered" else status,
                    error=form.get("ErrorCode") or None)
            return None

        return RouteMount(handlers=[sms_in, sms_status], prefix="/webhooks/twilio")

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "TwilioSmsSender | None":
        if channel != CHANNEL or not self.settings.account_sid:
            return None
        return TwilioSmsSender(self.settings, services, self._optout_key)

    @hookimpl
    async def fetch_evidence(self, evidence: EvidenceLink, channel: str,
                             services: GatewayServices) -> tuple[bytes, str] | None:
        if channel != CHANNEL or not evidence.remote_url:
            return None
        return await fetch_twilio_media(self.settings, evidence.remote_url, evidence.content_type)


async def fetch_twilio_media(settings: TwilioSettings, url: str, declared: str) -> tuple[bytes, str] | None:
    """Media and recordings answer with the account's credentials (and may redirect to storage).
    A 5xx or 429 raises (the attachment's fetch job tries again later, with backoff); a 4xx
    answers ``None`` (gone: the attachment is marked failed, the case goes on without it)."""
    import httpx

    async with httpx.AsyncClient(verify=tls(), timeout=settings.timeout_seconds, follow_redirects=True,
                                 auth=(settings.account_sid, settings.auth_token)) as http:
        response = await http.get(url)
    raise_if_transient(response, "Twilio media")
    if response.status_code >= 400:
        return None
    return response.content, response.headers.get("content-type", declared)


@functools.lru_cache(maxsize=16)
def _rest_client(account_sid: str, auth_token: str, timeout: float, base_url: str) -> Any:
    """One Twilio REST client per account and process: its HTTP session keeps the connection to
    Twilio and the TLS context (a new client per send built both again: ~30 ms of CPU each).
    The client's own default is no timeout at all: a stalled Twilio would hold the call forever."""
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout))
    client.api.base_url = base_url
    return client


class TwilioSmsSender:
    """Sends through the twilio REST client (run in a thread: the client is synchronous)."""

    def __init__(self, settings: TwilioSettings, services: GatewayServices, optout_key: Any) -> None:
        self.settings = settings
        self.services = services
        self.optout_key = optout_key

    def _client(self) -> Any:
        return _rest_client(self.settings.account_sid, self.settings.auth_token, self.settings.timeout_seconds,
                            self.settings.api_base.rstrip("/"))

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        redis = self.services.require_redis()
        number = e164(message.to.value)
        if await redis.exists(self.optout_key(self.services, number)):
            return DeliveryResult(status="suppressed", error="the customer opted out (STOP)")
        parts = split_sms(message.text, self.settings.max_chars_per_message)
        status_url = f"{self.services.settings.public_url}/webhooks/twilio/sms/status"
        sids = []
        try:
            client = self._client()
            for part in parts:
                kwargs = {"to": number, "body": part, "status_callback": status_url}
                if self.settings.from_number.startswith("MG"):
                    kwargs["messaging_service_sid"] = self.settings.from_number
                else:
                    kwargs["from_"] = self.settings.from_number
                created = await asyncio.get_running_loop().run_in_executor(
                    REST_THREADS, partial(client.messages.create, **kwargs))
                sids.append(created.sid)
                await self.services.store.remember_outbound(OUTBOUND_NAMESPACE, created.sid,
                                                            message.complaint_id, message.id)
        except Exception as exc:
            from twilio.base.exceptions import TwilioRestException

            status = getattr(exc, "status", 0) if isinstance(exc, TwilioRestException) else 0
            retryable = not isinstance(exc, TwilioRestException) or status >= 500 or status == 429
            return DeliveryResult(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], retryable=retryable)
        return DeliveryResult(status="sent", provider_message_id=",".join(sids))


__all__ = ["TwilioSmsChannel", "TwilioSettings", "split_sms", "verified_form", "twiml"]
