"""A generic signed-JSON webhook channel: a partner's in-app chat, a CRM, anything that can POST
JSON and sign it. Written as an integrator would: a separate package that the gateway finds
through its entry point, using only the plugin contract (``plugins.hookspecs``,
``plugins.contract``) and the gateway's intake.

In:  ``POST /webhooks/signed_webhook`` with ``{"id": "...", "from": "...", "text": "...",
     "language": "zh"|"en" (optional)}``, headers ``X-Timestamp`` (Unix seconds) and
     ``X-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" with the shared secret>``.
     A timestamp more than ``max_age_seconds`` away is refused (replay protection); ``id`` makes
     the partner's retries harmless. Answer: 202 ``{"message_id": ...}`` once durable.
Out: replies are POSTed as the same kind of signed JSON to ``callback_url``:
     ``{"id", "to", "text", "case_number", "kind"}``; the partner answers 2xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Annotated, Any

import httpx
import msgspec
from litestar import Request, Response, post

from plugins.problems import ProblemError
from normalizer.ids import new_id
from normalizer.inbound import InputRejected, build_message, clean_text
from normalizer.schema import Contact, DeliveryResult, OutboundMessage
from plugins.contract import GatewayServices, RouteMount
from plugins.hookspecs import hookimpl

CHANNEL = "signed_webhook"
MAX_BODY = 64 * 1024


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    secret: str = ""
    callback_url: str = ""
    max_age_seconds: int = 300


class Inbound(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    text: Annotated[str, msgspec.Meta(max_length=20_000)]
    language: Annotated[str, msgspec.Meta(pattern="^(zh|en)$")] | None = None
    from_: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = msgspec.field(name="from", default="")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class SignedWebhookChannel:
    Settings = Settings

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        @post("", operation_id="signedWebhookIn", summary="A partner's signed JSON message", tags=["webhooks"],
              status_code=202)
        async def receive(request: Request[Any, Any, Any]) -> Response[dict[str, str]]:
            if not settings.secret:
                raise ProblemError(503, "channel_not_configured", "signed_webhook has no secret configured.")
            body = await request.body()
            if len(body) > MAX_BODY:
                raise ProblemError(413, "payload_too_large", f"At most {MAX_BODY} bytes.")
            timestamp = request.headers.get("x-timestamp", "")
            if not hmac.compare_digest(request.headers.get("x-signature", ""), sign(settings.secret, timestamp, body)):
                raise ProblemError(401, "signature_invalid", "X-Signature does not match.")
            if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > settings.max_age_seconds:
                raise ProblemError(401, "timestamp_stale", "X-Timestamp is missing or too old.")
            try:
                incoming = msgspec.json.decode(body, type=Inbound)
                text = clean_text(incoming.text, services.settings.max_text_chars)
            except (msgspec.DecodeError, msgspec.ValidationError, InputRejected) as exc:
                raise ProblemError(422, "invalid_message", str(exc)) from None
            if not incoming.from_:
                raise ProblemError(422, "invalid_message", "from is required", field="from")
            message = build_message(message_id=new_id("msg"), channel=CHANNEL,
                                    sender=Contact(kind="partner_user", value=incoming.from_), text=text,
                                    language=incoming.language, provider_message_id=incoming.id)
            outcome = await services.intake.submit(message, idempotency_scope=f"id:{incoming.id}", raw=body)
            return Response({"message_id": outcome.message_id}, status_code=202)

        return RouteMount(handlers=[receive])  # mounted at /webhooks/signed_webhook

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "CallbackSender | None":
        if channel != CHANNEL or not self.settings.callback_url:
            return None
        return CallbackSender(self.settings)


class CallbackSender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        body = json.dumps({"id": message.id, "to": message.to.value, "text": message.text,
                           "case_number": message.case_number, "kind": message.kind}, ensure_ascii=False).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Timestamp": timestamp,
                   "X-Signature": sign(self.settings.secret, timestamp, body)}
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(self.settings.callback_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return DeliveryResult(status="failed", error=f"{type(exc).__name__}: {exc}", retryable=True)
        if response.status_code >= 300:
            return DeliveryResult(status="failed", error=f"HTTP {response.status_code}",
                                  retryable=response.status_code >= 500 or response.status_code == 429)
        return DeliveryResult(status="sent", provider_message_id=message.id)
