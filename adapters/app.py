"""The payment app's own channel: ``POST /v1/messages`` in, replies shown through the API.

A plugin like any other: settings, authenticity (the app's API key), parse, send.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import PathParameter

from plugins.auth import ROLE_APP, principal_of, roles_guard
from plugins.kit import (
    Contact,
    DeliveryResult,
    DirectRequest,
    DirectResponse,
    GatewayServices,
    InputRejected,
    OutboundMessage,
    ProblemError,
    RouteMount,
    build_message,
    clean_text,
    hookimpl,
    new_id,
)
from plugins.requests import decode_json, read_body, require_json
from normalizer.inbound import AttachmentIn, money, store_attachments
from normalizer.inbound import transaction_id as check_transaction_id
from normalizer.schema import CHANNEL_APP
from normalizer.categories import accept_category_hint

_USER_ID = r"^[A-Za-z0-9_.:@-]{1,128}$"
_CLIENT_MESSAGE_ID = r"^[A-Za-z0-9_.:-]{1,128}$"


#: Who may post a message: the app's keys.
_SUBMIT_ROLES = frozenset({ROLE_APP})
#: ``MessageAccepted`` as JSON, as the framework encodes it.
_encode_accepted = msgspec.json.Encoder().encode

#: The paths the payment app posts to and reads from (shared/design.md).
MESSAGES = "/v1/messages"
MESSAGE = "/v1/messages/{message_id:str}"

class AppMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    """A customer message from the payment app."""

    user_id: Annotated[str, msgspec.Meta(pattern=_USER_ID, description="The app's stable user id")]
    text: Annotated[str, msgspec.Meta(description="What the customer wrote")] = ""
    client_message_id: Annotated[str, msgspec.Meta(pattern=_CLIENT_MESSAGE_ID, description="Idempotency key chosen by the app")] | None = None
    transaction_id: str | None = None
    amount: Annotated[str, msgspec.Meta(description='Decimal string, e.g. "128.50"')] | None = None
    currency: Annotated[str, msgspec.Meta(description="ISO 4217; CNY when omitted")] | None = None
    category_hint: str | None = None
    attachments: list[AttachmentIn] = []
    language: Annotated[str, msgspec.Meta(pattern=r"^(zh|en)$")] | None = None
    #: The user's phone and e-mail from the app profile (the app vouches for them).
    phone: Annotated[str, msgspec.Meta(max_length=32)] | None = None
    email: Annotated[str, msgspec.Meta(max_length=254)] | None = None
    #: The customer's service tier as the app knows it ("vip" shortens the deadlines by policy).
    customer_tier: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,32}$")] | None = None
    #: An existing case (id or case number) this message continues.
    complaint_id: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class MessageAccepted(msgspec.Struct):
    message_id: str
    status: str
    #: What was accepted but not taken as sent (an unknown category_hint, ignored): code, field, detail.
    warnings: list[dict[str, str]] = []


class MessageState(msgspec.Struct):
    message_id: str
    status: str
    complaint_id: str | None = None
    case_number: str | None = None


class AppChannel:
    """The built-in plugin for the payment app."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        #: Most attachments one message may carry.
        max_attachments: int = 5

    def __init__(self, settings: "AppChannel.Settings | None" = None) -> None:
        self.settings = settings or AppChannel.Settings()

    @hookimpl
    def gateway_routes(self, services: GatewayServices) -> RouteMount:
        plugin_settings = self.settings

        @post(
            MESSAGES,
            operation_id="submitAppMessage",
            summary="A customer message from the payment app",
            description="Answers 202 once the message and its processing job are durable in Redis.",
            opt={"roles": _SUBMIT_ROLES},
            status_code=202,
            tags=["app"],
        )
        async def submit_message(request: Request[Any, Any, Any]) -> Response[MessageAccepted]:
            # the guard called here, first, rather than as guards=[...]: Litestar copies the route
            # handler for every guard call (~15 % of this path's Python, bench/profile_gateway.py)
            await roles_guard(request, submit_message)
            require_json(request)
            body = await read_body(request, services.settings.max_body_bytes)
            accepted, headers = await accept(body, principal_of(request).id)
            return Response(accepted, status_code=202, headers=headers)

        async def submit_direct(request: DirectRequest) -> DirectResponse:
            """``submit_message`` without the framework (``plugins.direct``): the same steps, in
            the same order, the same answers."""
            require_json(request)  # (the caller admitted already, by the roles of submit_message)
            body = await request.body(services.settings.max_body_bytes)
            accepted, headers = await accept(body, request.principal.id)  # type: ignore[union-attr]
            return DirectResponse(202, _encode_accepted(accepted), headers)

        async def accept(body: bytes, app_key: str) -> tuple[MessageAccepted, dict[str, str]]:
            """The message in ``body``, durable: what the 202 says, and its headers."""
            settings = services.settings
            incoming = decode_json(body, AppMessageIn)
            try:
                text = clean_text(incoming.text, settings.max_text_chars)
                if not text and not incoming.attachments:
                    raise InputRejected("text_missing", "text is empty and there are no attachments", "text")
                category_hint, warnings = accept_category_hint(incoming.category_hint)  # never refused over a hint
                amount = money(incoming.amount, incoming.currency)
                txn = check_transaction_id(incoming.transaction_id)
            except InputRejected as exc:
                raise ProblemError(422, exc.code, str(exc), field=exc.field) from None

            scope = None
            request_hash = ""
            if incoming.client_message_id:
                scope = f"{incoming.user_id}:{incoming.client_message_id}"
                request_hash = hashlib.sha256(msgspec.json.encode(incoming)).hexdigest()[:32]
                state = await services.store.r.get(services.store.keys.idem(CHANNEL_APP, scope))
                if state is not None:  # a retry: answer without storing attachments again
                    mid, _, stored_hash = state.decode().partition("|")
                    outcome = "duplicate" if stored_hash == request_hash else "conflict"
                    await services.intake.answer_retry(CHANNEL_APP, outcome)
                    if outcome == "conflict":
                        raise _idempotency_conflict(mid)
                    return MessageAccepted(mid, "received", warnings), {"Location": f"/v1/messages/{mid}"}
            try:
                evidence = await store_attachments(
                    incoming.attachments, services.blobs, max_count=plugin_settings.max_attachments,
                    max_bytes=settings.max_evidence_bytes, source="app",
                )
            except InputRejected as exc:
                raise ProblemError(422, exc.code, str(exc), field=exc.field) from None
            verified = []
            if incoming.phone:
                verified.append(Contact(kind="phone", value=incoming.phone.strip()))
            if incoming.email:
                verified.append(Contact(kind="email", value=incoming.email.strip().casefold()))
            message = build_message(  # amount, transaction id, language: found by the worker, after the 202
                derive=False,
                message_id=new_id("msg"),
                channel=CHANNEL_APP,
                sender=Contact(kind="app_user", value=incoming.user_id),
                text=text,
                provider_message_id=incoming.client_message_id,
                language=incoming.language,
                amount=amount,
                transaction=txn,
                category_hint=category_hint,
                attachments=evidence,
                verified_contacts=verified,
                complaint_ref=incoming.complaint_id,
                metadata={"app_key": app_key, **({"tier": incoming.customer_tier} if incoming.customer_tier else {})},
            )
            outcome = await services.intake.submit(message, idempotency_scope=scope, request_hash=request_hash)
            if outcome.status == "conflict":
                raise _idempotency_conflict(outcome.message_id)
            return (MessageAccepted(outcome.message_id, "received", warnings),
                    {"Location": f"/v1/messages/{outcome.message_id}"})

        @get(
            MESSAGE,
            operation_id="getAppMessage",
            summary="Processing state of a message and, once known, its complaint",
            guards=[roles_guard],
            opt={"roles": {ROLE_APP, "agent", "supervisor"}},
            tags=["app"],
        )
        async def message_state(
            message_id: Annotated[str, PathParameter(max_length=80)],
        ) -> MessageState:
            state = await services.store.message_state(message_id)
            if state is None:
                raise ProblemError(404, "message_not_found", f"No message {message_id}.")
            case_number = None
            if state["complaint_id"]:
                complaint = await services.store.get(state["complaint_id"])
                case_number = complaint.case_number
            return MessageState(message_id, state["status"], state["complaint_id"], case_number)

        return RouteMount(handlers=[submit_message, message_state], prefix="", direct={f"POST {MESSAGES}": submit_direct})

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "AppSender | None":
        return AppSender() if channel == CHANNEL_APP else None


class AppSender:
    """App replies are read by the app through ``GET /v1/complaints/{id}``: being stored on the
    complaint is delivery."""

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        return DeliveryResult(status="delivered", provider_message_id=message.id)


def _idempotency_conflict(message_id: str) -> ProblemError:
    return ProblemError(
        409,
        "idempotency_key_reused",
        "This client_message_id was already used with a different body.",
        extra={"message_id": message_id},
    )
