"""The LINE Messaging API as a channel, written only against the documented kit
(``plugins.kit``): a separate package the gateway finds through its entry point.

In:  ``POST /webhooks/line``: LINE's webhook, ``{"destination": ..., "events": [...]}`` with
     several events per request, signed in ``X-Line-Signature`` (base64 of the HMAC-SHA256 of
     the raw body with the channel secret). A missing or wrong signature is refused with 403 and
     nothing stored. Text messages from users become messages (``webhookEventId`` makes LINE's
     redeliveries harmless); every other event (follow, unfollow, postback, stickers, standby
     mode) is skipped. Answer 200 once every message is durable; a 429 / 503 from the desk is
     passed on and LINE redelivers the request.
Out: the push API, ``POST {api_base}/v2/bot/message/push`` with the channel access token and an
     ``X-Line-Retry-Key`` made from the reply's id: a reply sent again (after a timeout, a
     crash) is the same request to LINE, which answers 409 when it already took it.
     (Reply tokens expire within a minute, before most replies are written; see
     docs/plugins.md, "Replies on a reply-token channel".)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import httpx
import msgspec
from litestar import Request, Response, post

from plugins.kit import (
    REFUSED,
    Contact,
    DeliveryResult,
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
    new_id,
    quarantine_once,
    require_configured,
    same_secret,
    tls,
)

CHANNEL = "line"
MAX_BODY = 256 * 1024
MAX_TEXT = 5000  # LINE's limit for one text message
#: Retry keys are UUIDs made from the reply's id, so every try of one reply carries the same key.
RETRY_KEY_NAMESPACE = uuid.UUID("6f1c3a52-8f0e-4a8e-9a51-2b7d3c1e4f60")


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    channel_secret: str = ""
    channel_access_token: str = ""
    api_base: str = "https://api.line.me"
    timeout_seconds: float = 10.0


class Source(msgspec.Struct):
    type: str = ""
    userId: str = ""  # noqa: N815 - LINE's field name


class Content(msgspec.Struct):
    type: str = ""
    id: str = ""
    text: str = ""


class Event(msgspec.Struct):  # tolerant: LINE adds fields
    type: str
    webhookEventId: str = ""  # noqa: N815
    mode: str = "active"
    timestamp: int = 0
    replyToken: str = ""  # noqa: N815
    source: Source = msgspec.field(default_factory=Source)
    message: Content | None = None


class Webhook(msgspec.Struct):
    destination: str = ""
    events: list[Event] = []


def signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def retry_key(message: OutboundMessage) -> str:
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, message.id))


class LineChannel:
    Settings = Settings
    #: ``python -m gateway plugins check`` fails, naming the variable, while one of these is empty.
    required_settings = ("channel_secret", "channel_access_token")

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        @post("", operation_id="lineIn", summary="LINE: a webhook with one or more events", tags=["webhooks"],
              status_code=200)
        async def receive(request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
            require_configured(settings.channel_secret, "LINE channel secret")
            body = await bounded_body(request, MAX_BODY)
            if not same_secret(request.headers.get("x-line-signature"), signature(settings.channel_secret, body)):
                raise ProblemError(REFUSED, "signature_invalid", "X-Line-Signature is missing or does not match.")
            try:
                events = msgspec.json.decode(body, type=Webhook).events
                messages = [self._message(services, e) for e in events if self._is_customer_text(e)]
            except (msgspec.DecodeError, msgspec.ValidationError, InputRejected) as exc:
                await quarantine_once(services, CHANNEL, f"unparseable webhook: {exc}", body)
                return Response({"taken": 0}, status_code=200)
            for message in messages:  # a 429 / 503 propagates: LINE redelivers the whole request
                await services.intake.submit(message, idempotency_scope=f"event:{message.provider_message_id}",
                                             raw=body)
            return Response({"taken": len(messages)}, status_code=200)

        return RouteMount(handlers=[receive])  # mounted at /webhooks/line

    @staticmethod
    def _is_customer_text(event: Event) -> bool:
        return (event.type == "message" and event.mode == "active" and event.source.type == "user"
                and event.message is not None and event.message.type == "text")

    def _message(self, services: GatewayServices, event: Event) -> InboundMessage:
        if not event.webhookEventId or not event.source.userId:
            raise InputRejected("invalid_event", "a message event needs webhookEventId and source.userId")
        content = event.message or Content()
        return build_message(
            message_id=new_id("msg"), channel=CHANNEL, sender=Contact(kind="line_user", value=event.source.userId),
            text=clean_text(content.text, services.settings.max_text_chars), provider_message_id=event.webhookEventId,
            metadata={"line_message_id": content.id, "reply_token": event.replyToken})

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "PushSender | None":
        if channel != CHANNEL or not self.settings.channel_access_token:
            return None
        return PushSender(self.settings)


class PushSender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        body = json.dumps({"to": message.to.value, "messages": [{"type": "text", "text": message.text[:MAX_TEXT]}]},
                          ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.settings.channel_access_token}",
                   "X-Line-Retry-Key": retry_key(message)}
        try:
            async with httpx.AsyncClient(timeout=self.settings.timeout_seconds, verify=tls()) as http:
                response = await http.post(f"{self.settings.api_base}/v2/bot/message/push", content=body,
                                           headers=headers)
        except httpx.HTTPError as exc:
            return http_failure(None, exc)
        if response.status_code == 409:  # this retry key was accepted before: LINE has the message
            return DeliveryResult(status="sent", provider_message_id=response.headers.get("x-line-accepted-request-id"))
        if response.status_code >= 300:
            return http_failure(response)
        return DeliveryResult(status="sent", provider_message_id=response.headers.get("x-line-request-id"))
