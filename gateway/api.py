"""The operations API: complaints, skill queues, quarantine; agents and supervisors."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter, SkipValidation

from gateway import paths
from gateway.auth import ROLE_AGENT, ROLE_APP, ROLE_SUPERVISOR, Principal, principal_of, roles_guard
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from router.store import Conflict, PlannedJob, TxEffects
from normalizer.ids import dt_to_ms, new_id
from router.customers import Customers
from gateway.views import complaint_json, complaint_list_item, complaint_public, masked
from normalizer.contacts import KINDS as CONTACT_KINDS
from normalizer.contacts import normalise_or_keep
from normalizer.inbound import AttachmentIn, InputRejected, build_message, clean_text, money, store_attachments
from normalizer.inbound import transaction_id as check_transaction_id
from normalizer.schema import (
    CHANNEL_COUNTER,
    CHANNEL_PHONE,
    Complaint,
    ComplaintStatus,
    Contact,
    HistoryEvent,
    MessageStatus,
)
from plugins.contract import GatewayServices
from normalizer.categories import accept_category_hint
from router import cases, templates, timers
from router.worker import _reply_template, after_key
from router.jobs import event_job

STAFF = {ROLE_AGENT, ROLE_SUPERVISOR}
#: Injected by the app (see create_app); not validated, it is our own object.
Services = NamedDependency[SkipValidation[GatewayServices]]
_CONTACT_KINDS = "^(" + "|".join((*CONTACT_KINDS, "id_card_last4", "other")) + ")$"


class ContactIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: Annotated[str, msgspec.Meta(pattern=_CONTACT_KINDS)]
    value: Annotated[str, msgspec.Meta(min_length=1, max_length=254)]
    display_name: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class ComplaintIn(msgspec.Struct, forbid_unknown_fields=True):
    """A complaint an agent records for a customer at a service point or on the phone."""

    contact: ContactIn
    text: str
    channel: Literal["counter", "phone"] = "counter"
    client_message_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")] | None = None
    transaction_id: str | None = None
    amount: str | None = None
    currency: str | None = None
    category_hint: str | None = None
    language: Annotated[str, msgspec.Meta(pattern=r"^(zh|en)$")] | None = None
    attachments: list[AttachmentIn] = []


class ReplyIn(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    #: The answer asks the customer for something: the resolution clock pauses until they reply.
    awaiting_customer: bool = False


class ResolveIn(msgspec.Struct, forbid_unknown_fields=True):
    outcome: Literal["upheld", "partly_upheld", "rejected", "answered"] = "answered"
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    #: Skip the satisfaction survey (e.g. the customer asked not to be contacted again).
    no_survey: bool = False


class SplitIn(msgspec.Struct, forbid_unknown_fields=True):
    message_id: Annotated[str, msgspec.Meta(max_length=80)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


def _staff_or_app(principal: Principal, complaint: Complaint, pii_roles: tuple[str, ...] = ()) -> dict[str, Any]:
    if principal.role in STAFF:
        view = complaint_json(complaint)
        return view if principal.role in pii_roles else masked(view)
    if complaint.channel == "app":
        return complaint_public(complaint)
    raise ProblemError(404, "complaint_not_found", "No such complaint.")


def _parse_cursor(cursor: str | None) -> tuple[int, str] | None:
    if not cursor:
        return None
    try:
        ms, _, cid = base64.urlsafe_b64decode(cursor.encode() + b"==").decode().partition(":")
        return int(ms), cid
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, "invalid_cursor", "The cursor is not one this API gave out.", field="next") from None


def _make_cursor(position: tuple[int, str] | None) -> str | None:
    if position is None:
        return None
    return base64.urlsafe_b64encode(f"{position[0]}:{position[1]}".encode()).decode().rstrip("=")


class ComplaintsController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["complaints"]

    @post(paths.COMPLAINTS, operation_id="recordComplaint", status_code=202, opt={"roles": STAFF},
          summary="Record a complaint on a customer's behalf (service point or phone)")
    async def record(self, request: Request[Any, Any, Any], services: Services) -> Response[dict[str, Any]]:
        require_json(request)
        settings = services.settings
        incoming = decode_json(await read_body(request, settings.max_body_bytes), ComplaintIn)
        principal = principal_of(request)
        try:
            text = clean_text(incoming.text, settings.max_text_chars)
            if not text:
                raise InputRejected("text_missing", "text is empty", "text")
            category_hint, warnings = accept_category_hint(incoming.category_hint)  # never refused over a hint
            amount = money(incoming.amount, incoming.currency)
            txn = check_transaction_id(incoming.transaction_id)
            evidence = await store_attachments(incoming.attachments, services.blobs, max_count=10,
                                               max_bytes=settings.max_evidence_bytes, source=incoming.channel)
        except InputRejected as exc:
            raise ProblemError(422, exc.code, str(exc), field=exc.field) from None
        value = incoming.contact.value.strip()
        if incoming.contact.kind == "email":
            value = value.casefold()
        message = build_message(
            message_id=new_id("msg"),
            channel=CHANNEL_COUNTER if incoming.channel == "counter" else CHANNEL_PHONE,
            sender=Contact(kind=incoming.contact.kind, value=value, display_name=incoming.contact.display_name),
            text=text, provider_message_id=incoming.client_message_id, language=incoming.language,
            amount=amount, transaction=txn, category_hint=category_hint, attachments=evidence,
            recorded_by=principal.actor,
        )
        scope = f"{principal.actor}:{incoming.client_message_id}" if incoming.client_message_id else None
        request_hash = msgspec.json.encode(incoming).hex()[:64] if scope else ""
        outcome = await services.intake.submit(message, idempotency_scope=scope, request_hash=request_hash)
        if outcome.status == "conflict":
            raise ProblemError(409, "idempotency_key_reused",
                               "This client_message_id was already used with a different body.")
        return Response({"message_id": outcome.message_id, "status": MessageStatus.received.value,
                         "warnings": warnings},
                        status_code=202, headers={"Location": f"/v1/messages/{outcome.message_id}"})

    @get(paths.COMPLAINT, operation_id="getComplaint", opt={"roles": STAFF | {ROLE_APP}},
         summary="A complaint with its status and history (the app sees its own, public view)")
    async def show(self, request: Request[Any, Any, Any], services: Services,
                   complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        complaint = await _load(services, complaint_id)
        principal = principal_of(request)
        view = _staff_or_app(principal, complaint, services.settings.pii_roles)
        if principal.role in STAFF:  # who the customer is: every contact, every open case
            customers = Customers(services.store)
            open_cases, total = await customers.cases(complaint.customer_id)
            view["customer"] = {"id": complaint.customer_id, "contacts": await customers.contacts(complaint.customer_id),
                                "open_cases": open_cases, "cases_total": total}
        return view

    @get(paths.COMPLAINTS, operation_id="listComplaints", opt={"roles": STAFF},
         summary="Complaints, newest first, filtered by status, skill, category, customer, contact or channel")
    async def index(
        self,
        services: Services,
        status: Annotated[ComplaintStatus | None, QueryParameter()] = None,
        skill: Annotated[str | None, QueryParameter(max_length=64)] = None,
        category: Annotated[str | None, QueryParameter(max_length=64)] = None,
        customer: Annotated[str | None, QueryParameter(max_length=80)] = None,
        contact: Annotated[str | None, QueryParameter(max_length=300, description="kind:value, e.g. phone:+8613800138000")] = None,
        channel: Annotated[str | None, QueryParameter(max_length=40)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, QueryParameter(name="next", max_length=200)] = None,
    ) -> dict[str, Any]:
        if contact:
            kind, sep, value = contact.partition(":")
            if not sep or not kind or not value:
                raise ProblemError(400, "invalid_contact", "contact must be kind:value", field="contact")
            owner = await services.store.customer_of(normalise_or_keep(Contact(kind=kind, value=value)))
            if owner is None or (customer and customer != owner):
                return {"items": [], "next": None}
            customer = owner
        items, position = await services.store.list(
            status=status.value if status else None, skill=skill, category=category, customer_id=customer,
            channel=channel, limit=limit, before=_parse_cursor(cursor),
        )
        return {"items": [complaint_list_item(c) for c in items], "next": _make_cursor(position)}

    @get(paths.COMPLAINT_EVIDENCE, operation_id="getEvidence", opt={"roles": STAFF | {ROLE_APP}},
         summary="An attachment, recording or screenshot of a complaint")
    async def evidence(self, request: Request[Any, Any, Any], services: Services,
                       complaint_id: Annotated[str, PathParameter(max_length=80)],
                       evidence_id: Annotated[str, PathParameter(max_length=80)]) -> Response[bytes]:
        complaint = await _load(services, complaint_id)
        _staff_or_app(principal_of(request), complaint)  # may this reader see this case at all
        link = next((e for e in complaint.evidence if e.id == evidence_id), None)
        if link is None:
            raise ProblemError(404, "evidence_not_found", f"Complaint has no evidence {evidence_id}.")
        try:
            data = await services.blobs.get(link.sha256)
        except KeyError:
            raise ProblemError(404, "evidence_missing", "The evidence is recorded but not (yet) stored.") from None
        filename = (link.filename or link.id).replace('"', "")
        return Response(data, media_type=link.content_type, headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        })

    @post(paths.COMPLAINT_REPLIES, operation_id="replyToComplaint", status_code=201, opt={"roles": STAFF},
          summary="Answer the customer on the complaint's channel")
    async def reply(self, request: Request[Any, Any, Any], services: Services,
                    complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 256 * 1024), ReplyIn)
        try:
            text = clean_text(incoming.text, services.settings.max_text_chars)
        except InputRejected as exc:
            raise ProblemError(422, exc.code, str(exc), field=exc.field) from None
        if not text:
            raise ProblemError(422, "text_missing", "text is empty", field="text")
        principal = principal_of(request)
        cid = (await _load(services, complaint_id)).id
        store = services.store
        lease_holder = await store.lease_holder(cid)
        reply_id = cases.new_reply_id()

        def change(complaint: Complaint, effects: TxEffects) -> None:
            if complaint.status in (ComplaintStatus.resolved, ComplaintStatus.closed):
                raise Conflict("complaint_closed", f"{complaint.case_number} is {complaint.status.value}; reopen it first.")
            if principal.role == ROLE_AGENT:
                holder = lease_holder or complaint.assignee
                if holder is not None and holder != principal.id:
                    raise Conflict("claimed_by_other", f"{complaint.case_number} is with agent {holder}.")
            cases.answer(store, complaint, effects, reply_id=reply_id, text=text, actor=principal.actor,
                         now=datetime.now(timezone.utc), agent=principal.id,
                         awaiting_customer=incoming.awaiting_customer)

        complaint = await store.update(cid, change)
        reply = next(r for r in complaint.replies if r.id == reply_id)
        return {"reply": msgspec.to_builtins(reply), "complaint": complaint_json(complaint)}

    @post(paths.COMPLAINT_RESOLVE, operation_id="resolveComplaint", status_code=200, opt={"roles": STAFF},
          summary="Close a complaint with its outcome")
    async def resolve(self, request: Request[Any, Any, Any], services: Services,
                      complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        body = await read_body(request, 64 * 1024)
        incoming = decode_json(body, ResolveIn) if body.strip() else ResolveIn()
        if incoming.outcome == "rejected" and not incoming.reason.strip():
            raise ProblemError(422, "reason_required", "A rejected appeal needs a reason the customer can read.",
                               field="reason")
        await templates.refresh(services.store.r, services.store.keys.p)
        principal = principal_of(request)
        cid = (await _load(services, complaint_id)).id
        store = services.store
        lease_holder = await store.lease_holder(cid)

        def change(complaint: Complaint, effects: TxEffects) -> None:
            if complaint.status in (ComplaintStatus.resolved, ComplaintStatus.closed):
                raise Conflict("complaint_closed", f"{complaint.case_number} is already {complaint.status.value}.")
            if principal.role == ROLE_AGENT and lease_holder not in (None, principal.id):
                raise Conflict("claimed_by_other", f"{complaint.case_number} is with agent {lease_holder}.")
            now = datetime.now(timezone.utc)
            complaint.status = ComplaintStatus.resolved
            complaint.resolved_at = now
            complaint.outcome = incoming.outcome
            complaint.outcome_reason = incoming.reason.strip() or None
            complaint.lease_expires_at = None
            effects.ops.append(lambda pipe: store.release_lease(pipe, complaint.id))
            cases.leave_queues(store, complaint, effects)
            effects.ops.append(lambda pipe: store.stop_first_response_clock(pipe, complaint))
            timers.stop(store, complaint, effects, {"resolution"}, "met", now)
            timers.stop(store, complaint, effects, None, "cancelled", now)
            complaint.history.append(HistoryEvent(at=now, actor=principal.actor, action="resolved", public=True,
                                                  detail={"outcome": incoming.outcome,
                                                          "reason": incoming.reason.strip()[:500]}))
            effects.jobs.append(event_job(complaint, "resolved", principal.actor, {"outcome": incoming.outcome}))
            # the customer hears the outcome (and, if rejected, why and what route is open), then
            # the survey; their next message answers the survey or reopens the case
            _reply_template(store, complaint, effects, f"outcome_{incoming.outcome}",
                            reason=incoming.reason.strip())
            if not incoming.no_survey:
                _reply_template(store, complaint, effects, "survey")
            window = services.settings.reopen_window_hours * 3600
            if window:
                effects.ops.append(lambda pipe: pipe.set(after_key(store, complaint.contact), complaint.id,
                                                         ex=window))

        return complaint_json(await store.update(cid, change))

    @post(paths.COMPLAINT_SPLIT, operation_id="splitRepeat", status_code=202, opt={"roles": STAFF},
          summary="Undo a repeat-report merge: the message leaves this case and opens its own")
    async def split(self, request: Request[Any, Any, Any], services: Services,
                    complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), SplitIn)
        principal = principal_of(request)
        store = services.store
        keys = store.keys
        mid = incoming.message_id
        cid = (await _load(services, complaint_id)).id

        def change(complaint: Complaint, effects: TxEffects) -> None:
            merge = next((m for m in complaint.merges if m.message_id == mid and not m.split), None)
            if merge is None:
                raise Conflict("not_merged", f"{mid} was not merged into {complaint.case_number} (or was split already).")
            now = datetime.now(timezone.utc)
            merge.split, merge.split_by, merge.split_reason = True, principal.actor, incoming.reason
            complaint.messages = [m for m in complaint.messages if m.message_id != mid]
            complaint.evidence = [e for e in complaint.evidence if e.id not in merge.evidence_ids]
            complaint.repeat_count = max(0, complaint.repeat_count - 1)
            complaint.history.append(HistoryEvent(at=now, actor=principal.actor, action="split",
                                                  detail={"message_id": mid, "reason": incoming.reason[:500],
                                                          "merge_reason": merge.reason}))
            # the message goes through the worker again, this time to a case of its own
            effects.ops.append(lambda pipe: pipe.hset(keys.msg(mid), mapping={
                "status": MessageStatus.received.value, "nodedup": "1", "complaint_id": ""}))
            effects.ops.append(lambda pipe: pipe.zadd(keys.pending, {mid: dt_to_ms(now)}))
            effects.jobs.append(PlannedJob("process_message", f"ingest:{mid}:split", (mid,)))

        complaint = await store.update(cid, change)
        return {"complaint": complaint_json(complaint), "message_id": mid, "status": "requeued"}


class QueuesController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["queues"]

    @get(paths.QUEUES, operation_id="listQueues", opt={"roles": STAFF},
         summary="Each skill queue: depth, oldest age, deadlines breached")
    async def index(self, services: Services) -> dict[str, Any]:
        from router.rulestore import RuleStore

        active = await RuleStore(services.store.r, services.store.keys.p).active()
        escalation = (await timers.load_policy(services.store)).escalation_queue  # listed even when empty
        return {"items": await services.store.queue_stats(extra=[*active.rules.queues, escalation]), "next": None,
                "rules_version": active.version}

    @post(paths.QUEUES_CLAIM_NEXT, operation_id="claimNextForMe", status_code=200, opt={"roles": STAFF},
          summary="Lease the most urgent complaint across the calling agent's skills (204 when none)")
    async def claim_any(self, request: Request[Any, Any, Any], services: Services) -> Response[Any]:
        from gateway.api_routing import skills_of

        principal = principal_of(request)
        skills = await skills_of(services.store, principal.id)
        if skills is None:
            skills = [q["skill"] for q in await services.store.queue_stats()]
        for _ in range(20):
            heads = []
            for skill in skills:
                head = await services.store.r.zrange(services.store.keys.queue(skill), 0, 0, withscores=True)
                if head:
                    heads.append((head[0][1], skill))
            if not heads:
                return Response(None, status_code=204)
            response = await self._claim(request, services, min(heads)[1])
            if response.status_code != 204:  # None: the handler's 200
                return response
        return Response(None, status_code=204)

    @post(paths.QUEUE_CLAIM, operation_id="claimNext", status_code=200, opt={"roles": STAFF},
          summary="Lease the next complaint of a skill queue to the calling agent (204 when empty)")
    async def claim(self, request: Request[Any, Any, Any], services: Services,
                    skill: Annotated[str, PathParameter(max_length=64, pattern=r"^[a-z0-9_-]+$")]) -> Response[Any]:
        from gateway.api_routing import skills_of

        principal = principal_of(request)
        if principal.role == ROLE_AGENT:
            allowed = await skills_of(services.store, principal.id)
            if allowed is not None and skill not in allowed:
                raise ProblemError(403, "skill_not_allowed", f"Agent {principal.id} does not work the {skill} queue.")
        return await self._claim(request, services, skill)

    async def _claim(self, request: Request[Any, Any, Any], services: Services, skill: str) -> Response[Any]:
        principal = principal_of(request)
        store = services.store
        lease_seconds = services.settings.claim_lease_seconds
        while True:
            claimed = await store.claim(skill, principal.id, lease_seconds)
            if claimed is None:
                return Response(None, status_code=204)
            cid, expires_ms = claimed
            expires = datetime.fromtimestamp(expires_ms / 1000, tz=timezone.utc)

            def change(complaint: Complaint, _: TxEffects) -> None:
                if complaint.status not in (ComplaintStatus.accepted, ComplaintStatus.reopened,
                                            ComplaintStatus.in_progress, ComplaintStatus.received):
                    raise Conflict("not_claimable", complaint.status.value)
                complaint.status = ComplaintStatus.in_progress
                complaint.assignee = principal.id
                complaint.lease_expires_at = expires
                complaint.history.append(HistoryEvent(at=datetime.now(timezone.utc), actor=principal.actor,
                                                      action="claimed", public=True,
                                                      detail={"lease_expires_at": expires.isoformat()}))

            try:
                complaint = await store.update(cid, change)
            except Conflict:
                # answered or resolved meanwhile: drop the stale lease and take the next one
                async with store.r.pipeline(transaction=True) as pipe:
                    store.release_lease(pipe, cid)
                    await pipe.execute()
                continue
            return Response({"complaint": complaint_json(complaint), "lease_expires_at": expires.isoformat()})


class QuarantineController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["quarantine"]

    @get(paths.QUARANTINE, operation_id="listQuarantine", opt={"roles": {ROLE_SUPERVISOR}},
         summary="Inputs that could not be parsed, with their raw form")
    async def index(self, services: Services,
                    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50) -> dict[str, Any]:
        items = await services.store.quarantined(limit)
        return {"items": [_quarantine_view(i) for i in items], "next": None}

    @post(paths.QUARANTINE_RETRY, operation_id="retryQuarantined", status_code=202,
          opt={"roles": {ROLE_SUPERVISOR}}, summary="Process a quarantined input again")
    async def retry(self, services: Services,
                    item_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        store = services.store
        item = await store.quarantined_one(item_id)
        mid = item.get("message_id", b"").decode()
        if not mid:
            raise ProblemError(409, "not_retryable", "This input never became a message; fix the plugin and resend.")
        await store.r.hset(store.keys.msg(mid), "status", MessageStatus.received.value)
        await store.r.zadd(store.keys.pending, {mid: dt_to_ms(datetime.now(timezone.utc))})
        await store.enqueue(PlannedJob("process_message", f"ingest:{mid}:retry:{new_id('r')}", (mid,)))
        await store.discard_quarantined(item_id)
        return {"message_id": mid, "status": "requeued"}

    @delete(paths.QUARANTINE_ITEM, operation_id="discardQuarantined", status_code=204,
            opt={"roles": {ROLE_SUPERVISOR}}, summary="Discard a quarantined input")
    async def discard(self, services: Services, item_id: Annotated[str, PathParameter(max_length=80)]) -> None:
        await services.store.discard_quarantined(item_id)


def _quarantine_view(item: dict[str, Any]) -> dict[str, Any]:
    raw: bytes = item.get("raw", b"")
    return {
        "id": item["id"],
        "channel": item.get("channel", b"").decode(),
        "reason": item.get("reason", b"").decode(errors="replace"),
        "message_id": item.get("message_id", b"").decode() or None,
        "received_at": datetime.fromtimestamp(int(item.get("received_ms", b"0")) / 1000, tz=timezone.utc).isoformat(),
        "raw_base64": base64.b64encode(raw).decode(),
        "raw_size": len(raw),
    }


async def _load(services: Services, ref: str) -> Complaint:
    if ref.startswith("C-"):
        return await services.store.find_by_case_number(ref)
    return await services.store.get(ref)

