"""WhatsApp Cloud API, Messenger and Instagram through Meta's webhooks: ``GET, POST /webhooks/meta``
in, the Graph API send endpoints out.

One module, one shape: settings, verify (the ``hub.*`` handshake; ``X-Hub-Signature-256``, an
HMAC-SHA256 of the raw body with the app secret, checked before anything is parsed), parse
(several entries and messages per POST; one malformed entry is quarantined and the rest are
taken), send (respecting each product's customer-service window).

Channels and the stable contact ids they give (what cross-channel identity links on):
``whatsapp`` → ``wa_id``, ``messenger`` → ``psid`` (page-scoped id), ``instagram`` → ``igsid``.
``wamid`` / ``mid`` make Meta's retries harmless (WhatsApp retries for up to seven days).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
import msgspec
from litestar import Request, Response, get, post

from plugins.kit import (
    Contact,
    DeliveryResult,
    EvidenceLink,
    GatewayServices,
    InboundMessage,
    InputRejected,
    OutboundMessage,
    ProblemError,
    RouteMount,
    bounded_body,
    build_message,
    clean_text,
    hookimpl,
    http_failure,
    last_inbound_ms,
    new_id,
    note_inbound,
    quarantine_once,
    raise_if_transient,
    require_configured,
    same_secret,
    tls,
)
from plugins.webhooks import payload_digest, provider_error_code
from normalizer.text import split_text

WHATSAPP, MESSENGER, INSTAGRAM = "whatsapp", "messenger", "instagram"
CHANNELS = (WHATSAPP, MESSENGER, INSTAGRAM)
CONTACT_KIND = {WHATSAPP: "wa_id", MESSENGER: "psid", INSTAGRAM: "igsid"}
OBJECT_CHANNEL = {"whatsapp_business_account": WHATSAPP, "page": MESSENGER, "instagram": INSTAGRAM}
MEDIA_TYPES = ("image", "document", "audio", "video", "sticker")
MEDIA_SCHEME = "meta-media:"
SERVICE_WINDOW_MS = 24 * 3600 * 1000
HUMAN_AGENT_WINDOW_MS = 7 * 24 * 3600 * 1000
#: Graph error codes worth retrying: throttling (4, 80007, 130429), temporary (2, 131016).
RETRYABLE_GRAPH_CODES = frozenset({2, 4, 80007, 130429, 131016})
#: "Re-engagement message": WhatsApp refuses free text outside the 24-hour window.
OUTSIDE_WINDOW_CODES = frozenset({131047, 10})
TEXT_LIMIT = {WHATSAPP: 4096, MESSENGER: 2000, INSTAGRAM: 1000}


class MetaSettings(msgspec.Struct, forbid_unknown_fields=True):
    #: The app secret: X-Hub-Signature-256 is an HMAC of the raw body with it (META_APP_SECRET).
    app_secret: str = ""
    #: What we told Meta to send as hub.verify_token when subscribing (META_VERIFY_TOKEN).
    verify_token: str = ""
    #: The access token for Graph API calls (META_ACCESS_TOKEN): WhatsApp sends and media, and
    #: Messenger / Instagram sends, unless the more specific token below is set.
    access_token: str = ""
    #: A system-user token for WhatsApp Cloud API calls (META_WHATSAPP_TOKEN; empty: access_token).
    whatsapp_token: str = ""
    #: The WhatsApp business phone number id we send from.
    whatsapp_phone_number_id: str = ""
    #: An approved template sent when the 24-hour window is closed ("" = such replies fail).
    #: Its body takes one parameter: the case number.
    whatsapp_template: str = ""
    whatsapp_template_languages: dict[str, str] = msgspec.field(default_factory=lambda: {"zh": "zh_CN",
                                                                                           "en": "en_US"})
    #: The Page access token for Messenger and Instagram (META_PAGE_TOKEN; empty: access_token).
    page_token: str = ""
    graph_base: str = "https://graph.facebook.com"
    graph_version: str = "v21.0"
    max_body_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        self.whatsapp_token = self.whatsapp_token or self.access_token
        self.page_token = self.page_token or self.access_token


# -- parse ----------------------------------------------------------------------------------


@dataclass
class Inbound:
    """One customer message found in a webhook, with the raw event it came from."""

    message: InboundMessage
    scope: str
    at_ms: int
    raw: bytes


@dataclass
class StatusReport:
    channel: str
    provider_id: str
    status: str
    error: str | None = None
    at_ms: int | None = None


@dataclass
class ReadWatermark:
    channel: str
    contact_value: str
    watermark_ms: int


class Malformed(ValueError):
    pass


def _str(value: Any, what: str) -> str:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
        raise Malformed(f"{what} is missing or not a string")
    return str(value)


def _obj(value: Any, what: str) -> dict[str, Any]:
    """An optional object: absent (or null) is empty, anything but an object is malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Malformed(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    """An optional list: absent (or null) is empty, anything but a list is malformed."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{what} is not a list")
    return value


def _opt_str(value: Any) -> str | None:
    """A free-text field Meta may leave out (a name, a caption): only a string is kept."""
    return value if isinstance(value, str) and value else None


def _ms(value: Any, *, seconds: bool) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return int(time.time() * 1000)
    return number * 1000 if seconds else number


def _dt(ms: int) -> datetime:
    """A Meta timestamp as a time; one no clock can hold (a year before 1 or after 9999, beyond the
    platform's time_t) is the time it arrived, as a timestamp that is not a number is."""
    try:
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return datetime.now(timezone.utc)


def parse_entry(obj: str, entry: Any, max_chars: int) -> list[Inbound | StatusReport | ReadWatermark]:
    """Everything one ``entry`` of a webhook holds. Raises ``Malformed`` when it is not what
    Meta sends (the caller quarantines that entry and goes on with the others)."""
    if not isinstance(entry, dict):
        raise Malformed("entry is not an object")
    channel = OBJECT_CHANNEL.get(obj)
    if channel is None:
        raise Malformed(f"unknown object {obj!r}")
    if channel == WHATSAPP:
        changes = entry.get("changes")
        if not isinstance(changes, list):
            raise Malformed("entry.changes is not a list")
        found: list[Inbound | StatusReport | ReadWatermark] = []
        for change in changes:
            if not isinstance(change, dict) or change.get("field") != "messages":
                continue
            found.extend(_whatsapp_value(change.get("value"), max_chars))
        return found
    events = entry.get("messaging")
    if not isinstance(events, list):
        raise Malformed("entry.messaging is not a list")
    found = []
    for event in events:
        found.extend(_messaging_event(channel, event, max_chars))
    return found


def _whatsapp_value(value: Any, max_chars: int) -> list[Inbound | StatusReport | ReadWatermark]:
    if not isinstance(value, dict):
        raise Malformed("change.value is not an object")
    names = {}
    for contact in _list(value.get("contacts"), "contacts"):
        if isinstance(contact, dict) and isinstance(contact.get("wa_id"), (str, int)):
            names[str(contact["wa_id"])] = _opt_str(_obj(contact.get("profile"), "contact.profile").get("name"))
    found: list[Inbound | StatusReport | ReadWatermark] = []
    for status in _list(value.get("statuses"), "statuses"):
        if not isinstance(status, dict):
            raise Malformed("statuses[] is not an object")
        errors = _list(status.get("errors"), "status.errors")
        error = None
        if errors and isinstance(errors[0], dict):
            error = f"{errors[0].get('code')}: {errors[0].get('title', '')}"[:200]
        found.append(StatusReport(WHATSAPP, _str(status.get("id"), "status.id"), str(status.get("status", "")),
                                  error, _ms(status.get("timestamp"), seconds=True)))
    metadata = _obj(value.get("metadata"), "metadata")
    for raw in _list(value.get("messages"), "messages"):
        if not isinstance(raw, dict):
            raise Malformed("messages[] is not an object")
        wamid = _str(raw.get("id"), "message.id")
        wa_id = _str(raw.get("from"), "message.from")
        kind = raw.get("type")
        at_ms = _ms(raw.get("timestamp"), seconds=True)
        text, attachments = "", []
        if kind == "text":
            text = _str(_obj(raw.get("text"), "text").get("body"), "text.body")
        elif kind in MEDIA_TYPES:
            media = raw.get(kind)
            if not isinstance(media, dict):
                raise Malformed(f"{kind} is not an object")
            media_id = _str(media.get("id"), f"{kind}.id")
            text = _opt_str(media.get("caption")) or ""
            attachments.append(EvidenceLink(
                id=f"ev_pending_{media_id}", sha256="",
                content_type=_opt_str(media.get("mime_type")) or "application/octet-stream",
                size=0, filename=_opt_str(media.get("filename")), source=WHATSAPP, remote_url=MEDIA_SCHEME + media_id))
        elif kind == "location":
            loc = _obj(raw.get("location"), "location")
            text = " ".join(str(loc.get(k)) for k in ("name", "address") if loc.get(k))
        elif kind in ("button", "interactive"):
            reply = _obj(raw.get("button"), "button")
            if kind == "interactive":
                inner = _obj(raw.get("interactive"), "interactive")
                reply = _obj(inner.get("button_reply") or inner.get("list_reply"), "interactive reply")
            text = str(reply.get("text") or reply.get("title") or "")
        else:
            continue  # reactions, system notices, unsupported types: not a complaint
        context = _obj(raw.get("context"), "context")
        message = build_message(
            message_id=new_id("msg"), channel=WHATSAPP,
            sender=Contact(kind="wa_id", value=wa_id, display_name=names.get(wa_id)),
            text=clean_text(text, max_chars), provider_message_id=wamid, received_at=_dt(at_ms),
            attachments=attachments,
            metadata={"phone_number_id": str(metadata.get("phone_number_id", "")),
                      **({"in_reply_to": str(context["id"])} if isinstance(context.get("id"), (str, int))
                         and context["id"] != "" else {})},
        )
        found.append(Inbound(message, f"wamid:{wamid}", at_ms, json.dumps(raw, ensure_ascii=False).encode()))
    return found


def _messaging_event(channel: str, event: Any, max_chars: int) -> list[Inbound | StatusReport | ReadWatermark]:
    if not isinstance(event, dict):
        raise Malformed("messaging[] is not an object")
    sender = _str(_obj(event.get("sender"), "sender").get("id"), "sender.id")
    at_ms = _ms(event.get("timestamp"), seconds=False)
    if isinstance(event.get("delivery"), dict):
        return [StatusReport(channel, str(mid), "delivered", None, at_ms)
                for mid in _list(event["delivery"].get("mids"), "delivery.mids")]
    if isinstance(event.get("read"), dict):
        read = event["read"]
        if read.get("mid"):  # Instagram names the message
            return [StatusReport(channel, str(read["mid"]), "read", None, at_ms)]
        return [ReadWatermark(channel, sender, _ms(read.get("watermark"), seconds=False))]
    raw = event.get("message") or event.get("postback")
    if not isinstance(raw, dict):
        return []  # reactions, referrals, optins ...: nothing to take
    if raw.get("is_echo") or raw.get("is_deleted") or raw.get("is_unsupported"):
        return []
    mid = _str(raw.get("mid"), "message.mid")
    text = str(raw.get("text") or raw.get("title") or "")
    attachments = []
    for n, item in enumerate(_list(raw.get("attachments"), "attachments")):
        if not isinstance(item, dict):
            raise Malformed("attachments[] is not an object")
        url = _obj(item.get("payload"), "attachment.payload").get("url")
        if item.get("type") in ("image", "video", "audio", "file") and isinstance(url, str) and url:
            attachments.append(EvidenceLink(
                id=f"ev_pending_{n}", sha256="", content_type={"image": "image/jpeg", "video": "video/mp4",
                                                              "audio": "audio/mpeg"}.get(item["type"],
                                                                                         "application/octet-stream"),
                size=0, source=channel, remote_url=url))
    if not text and not attachments:
        return []
    message = build_message(
        message_id=new_id("msg"), channel=channel, sender=Contact(kind=CONTACT_KIND[channel], value=sender),
        text=clean_text(text, max_chars), provider_message_id=mid, received_at=_dt(at_ms),
        attachments=attachments,
        metadata={"recipient": str(_obj(event.get("recipient"), "recipient").get("id", ""))},
    )
    return [Inbound(message, f"mid:{mid}", at_ms, json.dumps(event, ensure_ascii=False).encode())]


def signature_ok(app_secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return same_secret(header[len("sha256="):].lower(), expected)


# -- the plugin -----------------------------------------------------------------------------


class MetaChannel:
    """The built-in WhatsApp / Messenger / Instagram plugin."""

    Settings = MetaSettings

    def __init__(self, settings: MetaSettings | None = None) -> None:
        self.settings = settings or MetaSettings()

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        @get("", operation_id="metaVerify", summary="Meta: webhook subscription handshake", tags=["webhooks"],
             media_type="text/plain")
        async def verify(request: Request[Any, Any, Any]) -> Response[str]:
            require_configured(settings.verify_token, "META_VERIFY_TOKEN")
            q = request.query_params
            if q.get("hub.mode") != "subscribe" or not same_secret(q.get("hub.verify_token"), settings.verify_token):
                raise ProblemError(403, "verify_token_invalid", "hub.verify_token does not match.")
            challenge = q.get("hub.challenge", "")
            if not challenge or len(challenge) > 200:
                raise ProblemError(400, "invalid_request", "hub.challenge is missing.")
            return Response(challenge, media_type="text/plain")

        @post("", operation_id="metaIn", summary="Meta: WhatsApp / Messenger / Instagram events",
              tags=["webhooks"], status_code=200)
        async def receive(request: Request[Any, Any, Any]) -> dict[str, Any]:
            require_configured(settings.app_secret, "META_APP_SECRET")
            body = await bounded_body(request, settings.max_body_bytes)
            if not signature_ok(settings.app_secret, body, request.headers.get("x-hub-signature-256")):
                raise ProblemError(403, "signature_invalid", "X-Hub-Signature-256 is missing or does not match.")
            return await self.take(services, body)

        return RouteMount(handlers=[verify, receive], prefix="/webhooks/meta")

    async def take(self, services: GatewayServices, body: bytes) -> dict[str, Any]:
        """Take a signed webhook body: every good entry, the bad ones quarantined. Answers 200
        unless Redis fails (then Meta retries the whole POST, and what was taken is deduplicated)."""
        try:
            payload = json.loads(body)
            obj, entries = payload["object"], payload["entry"]
            if not isinstance(entries, list):
                raise TypeError("entry is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            await quarantine_once(services, "meta", f"unparseable webhook body: {exc}", body)
            return {"accepted": 0, "quarantined": 1}
        taken = statuses = quarantined = 0
        for n, entry in enumerate(entries):
            try:
                items = parse_entry(str(obj), entry, services.settings.max_text_chars)
            except (Malformed, InputRejected, TypeError, AttributeError, ValueError) as exc:
                raw = json.dumps(entry, ensure_ascii=False, default=str).encode()
                await quarantine_once(services, OBJECT_CHANNEL.get(str(obj), "meta"), f"malformed entry {n}: {exc}",
                                      raw, identity=f"{payload_digest(body)}:{n}")
                quarantined += 1
                continue
            for item in items:
                if isinstance(item, Inbound):
                    # the window first: a worker woken by the intake may answer at once, and must
                    # see that the customer just wrote (it only moves forward, so a refused or
                    # repeated delivery does no harm)
                    await note_inbound(services, item.message.channel, item.message.sender.value, item.at_ms)
                    await services.intake.submit(item.message, idempotency_scope=item.scope, raw=item.raw)
                    taken += 1
                elif isinstance(item, StatusReport):
                    status = {"failed": "failed", "sent": "sent", "delivered": "delivered", "read": "read"}.get(
                        item.status)
                    if status:
                        await services.store.apply_provider_status(
                            item.channel, item.provider_id, status, error=item.error,
                            at=_dt(item.at_ms) if item.at_ms else None)
                    statuses += 1
                else:
                    await services.store.apply_read_watermark(item.channel, item.contact_value, item.watermark_ms)
                    statuses += 1
        return {"accepted": taken, "statuses": statuses, "quarantined": quarantined}

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "MetaSender | None":
        if channel == WHATSAPP and self.settings.whatsapp_token and self.settings.whatsapp_phone_number_id:
            return MetaSender(self.settings, services, channel)
        if channel in (MESSENGER, INSTAGRAM) and self.settings.page_token:
            return MetaSender(self.settings, services, channel)
        return None

    @hookimpl
    async def fetch_evidence(self, evidence: EvidenceLink, channel: str,
                             services: GatewayServices) -> tuple[bytes, str] | None:
        if channel not in CHANNELS or not evidence.remote_url:
            return None
        return await fetch_media(self.settings, channel, evidence.remote_url, evidence.content_type)


def _graph(settings: MetaSettings, path: str) -> str:
    return f"{settings.graph_base.rstrip('/')}/{settings.graph_version}/{path.lstrip('/')}"


async def fetch_media(settings: MetaSettings, channel: str, url: str, declared: str) -> tuple[bytes, str] | None:
    """A WhatsApp media id is looked up (its short-lived URL), then downloaded with the token;
    Messenger and Instagram attachments come as signed CDN URLs. 5xx / 429 raise (retry later);
    other 4xx answer ``None`` (the media is gone)."""
    headers = {}
    async with httpx.AsyncClient(verify=tls(), timeout=20, follow_redirects=True) as http:
        if url.startswith(MEDIA_SCHEME):
            headers = {"Authorization": f"Bearer {settings.whatsapp_token}"}
            info = await http.get(_graph(settings, url[len(MEDIA_SCHEME):]), headers=headers)
            raise_if_transient(info, "Graph API")
            if info.status_code >= 400:
                return None
            meta = info.json()
            url, declared = meta["url"], meta.get("mime_type", declared)
        response = await http.get(url, headers=headers)
    raise_if_transient(response, "Graph API")
    if response.status_code >= 400:
        return None
    return response.content, response.headers.get("content-type", declared).split(";")[0] or declared


class MetaSender:
    """Sends through the Graph API. WhatsApp: free text inside the 24-hour customer-service
    window, the configured template outside it. Messenger / Instagram: a RESPONSE inside 24 h,
    the HUMAN_AGENT tag up to 7 days, nothing after that."""

    def __init__(self, settings: MetaSettings, services: GatewayServices, channel: str) -> None:
        self.settings = settings
        self.services = services
        self.channel = channel

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        last = await last_inbound_ms(self.services, self.channel, message.to.value)
        age = int(time.time() * 1000) - last if last else None
        if self.channel == WHATSAPP:
            if age is None or age > SERVICE_WINDOW_MS:
                return await self._whatsapp_template(message)
            return await self._post_all(message, [
                {"messaging_product": "whatsapp", "recipient_type": "individual", "to": message.to.value,
                 "type": "text", "text": {"body": part, "preview_url": False}}
                for part in split_text(message.text, TEXT_LIMIT[WHATSAPP])], template_fallback=True)
        if age is not None and age <= SERVICE_WINDOW_MS:
            extra: dict[str, Any] = {"messaging_type": "RESPONSE"}
        elif age is not None and age <= HUMAN_AGENT_WINDOW_MS:
            extra = {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
        else:
            return DeliveryResult(status="failed", error=f"{self.channel}: the customer last wrote more than "
                                  "7 days ago; Meta allows no further messages until they write again")
        return await self._post_all(message, [
            {"recipient": {"id": message.to.value}, "message": {"text": part}, **extra}
            for part in split_text(message.text, TEXT_LIMIT[self.channel])])

    async def _whatsapp_template(self, message: OutboundMessage) -> DeliveryResult:
        if not self.settings.whatsapp_template:
            return DeliveryResult(status="failed", error="whatsapp: outside the 24-hour window and no template "
                                  "is configured (whatsapp_template)")
        language = self.settings.whatsapp_template_languages.get(message.language, "en_US")
        return await self._post_all(message, [{
            "messaging_product": "whatsapp", "to": message.to.value, "type": "template",
            "template": {"name": self.settings.whatsapp_template, "language": {"code": language},
                         "components": [{"type": "body", "parameters": [
                             {"type": "text", "text": message.case_number}]}]},
        }])

    async def _post_all(self, message: OutboundMessage, bodies: list[dict[str, Any]], *,
                        template_fallback: bool = False) -> DeliveryResult:
        if self.channel == WHATSAPP:
            url = _graph(self.settings, f"{self.settings.whatsapp_phone_number_id}/messages")
            token = self.settings.whatsapp_token
        else:
            url, token = _graph(self.settings, "me/messages"), self.settings.page_token
        ids = []
        async with httpx.AsyncClient(verify=tls(), timeout=15) as http:
            for body in bodies:
                try:
                    response = await http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
                except httpx.HTTPError as exc:
                    return http_failure(None, exc)
                if response.status_code >= 400:
                    if template_fallback and not ids and provider_error_code(response) in OUTSIDE_WINDOW_CODES:
                        return await self._whatsapp_template(message)  # our clock and Meta's disagreed
                    return http_failure(response, retryable_codes=RETRYABLE_GRAPH_CODES)
                answer = response.json()
                pid = ((answer.get("messages") or [{}])[0].get("id") if self.channel == WHATSAPP
                       else answer.get("message_id"))
                if pid:
                    ids.append(str(pid))
                    await self.services.store.remember_outbound(self.channel, str(pid), message.complaint_id,
                                                                message.id, contact_value=message.to.value)
        return DeliveryResult(status="sent", provider_message_id=",".join(ids) or None)


__all__ = ["MetaChannel", "MetaSettings", "MetaSender", "parse_entry", "signature_ok"]
