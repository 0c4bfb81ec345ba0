"""A generic signed-JSON webhook channel: a partner's in-app chat, a CRM, anything that can POST
JSON and sign it. Written as an integrator would: a separate package that the gateway finds
through its entry point, using only the documented kit (``plugins.kit``).

In:  ``POST /webhooks/signed_webhook`` with ``{"events": [{"type": "message", "id": "...",
     "from": "...", "text": "...", "language": "zh"|"en" (optional)}, ...]}`` — several events
     in one request; events of other types (``"read"``, ``"typing"``, ...) are skipped. Headers
     ``X-Timestamp`` (Unix seconds) and ``X-Signature: sha256=<hex HMAC-SHA256 of
     "<timestamp>.<raw body>" with the shared secret>``; a missing or wrong signature, or a
     timestamp more than ``max_age_seconds`` away, is refused with 403 and nothing stored. Each
     message's ``id`` makes the partner's retries harmless. Answer: 202 ``{"taken": n}`` once
     every message is durable; a 429 / 503 from the desk is passed on, and the partner sends the
     whole request again (what was taken is then a duplicate, nothing is taken twice).
Out: replies are POSTed as the same kind of signed JSON to ``callback_url``:
     ``{"id", "to", "text", "case_number", "kind"}``; the partner answers 2xx. A network
     error, a 5xx or a 429 is retried later; another 4xx is final.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
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
    check_fresh,
    clean_text,
    hookimpl,
    http_failure,
    new_id,
    quarantine_once,
    require_configured,
    same_secret,
    tls,
)

CHANNEL = "signed_webhook"
MAX_BODY = 64 * 1024


class Settings(msgspec.Struct, forbid_unknown_fields=True):
    secret: str = ""
    callback_url: str = ""
    max_age_seconds: int = 300


class Event(msgspec.Struct):  # tolerant: a partner may add fields
    type: str
    id: str = ""
    text: str = ""
    language: str | None = None
    from_: str = msgspec.field(name="from", default="")


class Envelope(msgspec.Struct):
    events: list[Event]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class SignedWebhookChannel:
    Settings = Settings
    #: ``python -m gateway plugins check`` fails, naming the variable, while one of these is empty.
    required_settings = ("secret", "callback_url")

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        settings = self.settings

        @post("", operation_id="signedWebhookIn", summary="A partner's signed JSON events", tags=["webhooks"],
              status_code=202)
        async def receive(request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
            require_configured(settings.secret, "signed_webhook secret")
            body = await bounded_body(request, MAX_BODY)
            timestamp = request.headers.get("x-timestamp", "")
            if not same_secret(request.headers.get("x-signature"), sign(settings.secret, timestamp, body)):
                raise ProblemError(REFUSED, "signature_invalid", "X-Signature is missing or does not match.")
            check_fresh(timestamp, settings.max_age_seconds)
            try:
                events = msgspec.json.decode(body, type=Envelope).events
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await quarantine_once(services, CHANNEL, f"unparseable body: {exc}", body)
                return Response({"taken": 0}, status_code=202)
            # every message checked before any is taken; other events (read, typing) skipped
            messages = [self._message(services, event) for event in events if event.type == "message"]
            for message in messages:
                # a 429 / 503 from the desk propagates: the partner retries the whole request
                await services.intake.submit(message, idempotency_scope=f"id:{message.provider_message_id}", raw=body)
            return Response({"taken": len(messages)}, status_code=202)

        return RouteMount(handlers=[receive])  # mounted at /webhooks/signed_webhook

    def _message(self, services: GatewayServices, event: Event) -> InboundMessage:
        if not (0 < len(event.id) <= 128 and 0 < len(event.from_) <= 128):
            raise ProblemError(422, "invalid_message", "a message needs an id and a from (1-128 characters)")
        try:
            text = clean_text(event.text, services.settings.max_text_chars)
        except InputRejected as exc:
            raise ProblemError(422, "invalid_message", str(exc)) from None
        return build_message(message_id=new_id("msg"), channel=CHANNEL,
                             sender=Contact(kind="partner_user", value=event.from_), text=text,
                             language=event.language if event.language in ("zh", "en") else None,
                             provider_message_id=event.id)

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
            async with httpx.AsyncClient(timeout=10, verify=tls()) as http:
                response = await http.post(self.settings.callback_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return http_failure(None, exc)
        if response.status_code >= 300:
            return http_failure(response)
        return DeliveryResult(status="sent", provider_message_id=message.id)
