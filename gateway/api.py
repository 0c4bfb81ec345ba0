"""The operations API: complaints, skill queues, quarantine; agents and supervisors."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.params import PathParameter, QueryParameter

from gateway import paths
from gateway.api_approvals import RefundIn, refund_proposal, root_cause_checked
from gateway.api_common import CONTACT_KINDS_PATTERN, STAFF, Services, load_complaint
from gateway.api_doc import documented
from gateway.api_types import (Claimed, ComplaintOut, ComplaintPage, Merged, QuarantinePage, QueueList, Recorded,
                               Replied, Requeued, Split)
from gateway.api_routing import skills_of
from gateway.auth import ROLE_AGENT, ROLE_APP, ROLE_SUPERVISOR, Principal, principal_of, roles_guard
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from router.store import PlannedJob
from normalizer.ids import dt_to_ms, new_id
from router.customers import Customers
from gateway.views import complaint_json, complaint_list_item, complaint_public, masked
from normalizer.contacts import normalise_or_keep
from normalizer.inbound import AttachmentIn, InputRejected, build_message, clean_text, money, store_attachments
from normalizer.inbound import transaction_id as check_transaction_id
from normalizer.schema import CHANNEL_COUNTER, CHANNEL_PHONE, Complaint, ComplaintStatus, Contact, MessageStatus
from normalizer.categories import accept_category_hint
from router import cases, timers
from router.cases.outcomes import AWAITING
from router.rules import Engine
from router.rulestore import RuleStore
from router.understanding.corrections import CorrectionError


class ContactIn(msgspec.Struct, forbid_unknown_fields=True):
    kind: Annotated[str, msgspec.Meta(pattern=CONTACT_KINDS_PATTERN)]
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
    #: Why it happened: one of normalizer.schema.ROOT_CAUSES.
    root_cause: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    refund: RefundIn | None = None


class CorrectIn(msgspec.Struct, forbid_unknown_fields=True):
    """An agent's correction of the category (``reason``: why, kept with the labelled example)."""

    category: Annotated[str, msgspec.Meta(max_length=64)]
    reason: Annotated[str, msgspec.Meta(max_length=2000)]


class MergeIn(msgspec.Struct, forbid_unknown_fields=True):
    into: Annotated[str, msgspec.Meta(max_length=80)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


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

    @documented(ComplaintIn, Recorded, problems=(409, 429),
                ok_example={"message_id": "msg_01HZX5Y2", "status": "received", "warnings": []},
                example={"contact": {"kind": "phone", "value": "+8613800138000", "display_name": "王女士"},
                         "text": "扣了我两次 128.50 元", "channel": "counter", "client_message_id": "counter-2026-000123",
                         "amount": "128.50", "currency": "CNY", "transaction_id": "T20260301000123"})
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

    @documented(ok=ComplaintOut)
    @get(paths.COMPLAINT, operation_id="getComplaint", opt={"roles": STAFF | {ROLE_APP}},
         summary="A complaint with its status and history (the app sees its own, public view)")
    async def show(self, request: Request[Any, Any, Any], services: Services,
                   complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        complaint = await load_complaint(services, complaint_id)
        principal = principal_of(request)
        view = _staff_or_app(principal, complaint, services.settings.pii_roles)
        if principal.role in STAFF:  # who the customer is: every contact, every open case
            customers = Customers(services.store)
            open_cases, total = await customers.cases(complaint.customer_id)
            view["customer"] = {"id": complaint.customer_id, "contacts": await customers.contacts(complaint.customer_id),
                                "open_cases": open_cases, "cases_total": total}
        return view

    @documented(ok=ComplaintPage, problems=(400,))
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

    @documented(ok=bytes, ok_description="The file, with its content type")
    @get(paths.COMPLAINT_EVIDENCE, operation_id="getEvidence", opt={"roles": STAFF | {ROLE_APP}},
         summary="An attachment, recording or screenshot of a complaint")
    async def evidence(self, request: Request[Any, Any, Any], services: Services,
                       complaint_id: Annotated[str, PathParameter(max_length=80)],
                       evidence_id: Annotated[str, PathParameter(max_length=80)]) -> Response[bytes]:
        complaint = await load_complaint(services, complaint_id)
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

    @documented(ReplyIn, Replied, problems=(409,),
                example={"text": "We have found the duplicate charge; the refund is on its way.",
                         "awaiting_customer": False})
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
        cid = (await load_complaint(services, complaint_id)).id
        complaint, reply = await cases.reply(services.store, cid, text=text, actor=principal.actor, agent=principal.id,
                                             claim_binds=principal.role == ROLE_AGENT,
                                             awaiting_customer=incoming.awaiting_customer)
        return {"reply": msgspec.to_builtins(reply), "complaint": complaint_json(complaint)}

    @documented(ResolveIn, ComplaintOut, body_required=False, problems=(409,),
                ok_description="Resolved: the customer is told the outcome",
                also={202: (ComplaintOut, "A refund above the approval threshold awaits a supervisor "
                                          "(stage awaiting_approval)")},
                example={"outcome": "upheld",
                         "reason": "Charged twice by the terminal; the second charge is refunded.",
                         "root_cause": "system_error",
                         "refund": {"amount": {"value": "128.50", "currency": "CNY"}, "method": "original_route"}})
    @post(paths.COMPLAINT_RESOLVE, operation_id="resolveComplaint", status_code=200, opt={"roles": STAFF},
          summary="Close a complaint with its outcome (and root cause, and a refund or compensation)",
          description="200: resolved, the customer told the outcome (a refund's amount, method and when to "
                      "expect it), then the survey. 202: a refund above the approval threshold awaits a "
                      "supervisor's approval (stage awaiting_approval, GET /v1/approvals); not resolved yet.")
    async def resolve(self, request: Request[Any, Any, Any], services: Services,
                      complaint_id: Annotated[str, PathParameter(max_length=80)]) -> Response[dict[str, Any]]:
        body = await read_body(request, 64 * 1024)
        incoming = decode_json(body, ResolveIn) if body.strip() else ResolveIn()
        if incoming.outcome == "rejected" and not incoming.reason.strip():
            raise ProblemError(422, "reason_required", "A rejected appeal needs a reason the customer can read.",
                               field="reason")
        root_cause = root_cause_checked(incoming.root_cause)
        refund = refund_proposal(incoming.refund, incoming.outcome)
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        complaint = await cases.resolve(services.store, cid, outcome=incoming.outcome, reason=incoming.reason,
                                        no_survey=incoming.no_survey, actor=principal.actor,
                                        agent=principal.id if principal.role == ROLE_AGENT else None,
                                        reopen_window_s=services.settings.reopen_window_hours * 3600,
                                        root_cause=root_cause, refund=refund)
        return Response(complaint_json(complaint), status_code=202 if complaint.stage == AWAITING else 200)

    @documented(SplitIn, Split, problems=(409,),
                example={"message_id": "msg_01HZX5Y2", "reason": "A different charge, not a repeat"})
    @post(paths.COMPLAINT_SPLIT, operation_id="splitRepeat", status_code=202, opt={"roles": STAFF},
          summary="Undo a repeat-report merge: the message leaves this case and opens its own")
    async def split(self, request: Request[Any, Any, Any], services: Services,
                    complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), SplitIn)
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        complaint = await cases.split(services.store, cid, message_id=incoming.message_id, reason=incoming.reason,
                                      actor=principal.actor)
        return {"complaint": complaint_json(complaint), "message_id": incoming.message_id, "status": "requeued"}

    @documented(CorrectIn, ComplaintOut, problems=(409,),
                example={"category": "payment_amount", "reason": "The customer was charged twice, not refused"})
    @patch(paths.COMPLAINT, operation_id="correctComplaint", status_code=200, opt={"roles": STAFF},
           summary="Correct the category (with a reason): the case is re-routed and the correction kept")
    async def correct(self, request: Request[Any, Any, Any], services: Services,
                      complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), CorrectIn)
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        engine, policy = await _routing_now(services)
        key = request.headers.get("idempotency-key") or None
        try:
            complaint = await cases.correct_category(services.store, cid, to_category=incoming.category,
                                                     reason=incoming.reason, actor=principal.actor, engine=engine,
                                                     policy=policy, key=key[:64] if key else None)
        except CorrectionError as exc:
            raise ProblemError(422, "invalid_correction", str(exc), field=exc.field) from None
        return complaint_json(complaint)

    @documented(MergeIn, Merged, problems=(409,),
                example={"into": "C-20260301-000042", "reason": "Same duplicate charge, reported again by e-mail"})
    @post(paths.COMPLAINT_MERGE, operation_id="mergeComplaint", status_code=200, opt={"roles": STAFF},
          summary="Merge this case into the case it repeats (its messages, evidence and replies go there)")
    async def merge(self, request: Request[Any, Any, Any], services: Services,
                    complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), MergeIn)
        if not incoming.reason.strip():
            raise ProblemError(422, "reason_required", "A merge needs a reason.", field="reason")
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        into = (await load_complaint(services, incoming.into)).id
        engine, policy = await _routing_now(services)
        try:
            source, target = await cases.merge_case(services.store, cid, into=into, reason=incoming.reason,
                                                    actor=principal.actor, engine=engine, policy=policy)
        except cases.MergeRefused as exc:
            raise ProblemError(422, exc.code, str(exc), field="into") from None
        return {"complaint": complaint_json(source), "into": complaint_json(target)}


async def _routing_now(services: Any) -> tuple[Engine, Any]:
    """The active routing rules, compiled, and the deadline policy (what a re-route decides by)."""
    active = await RuleStore(services.store.r, services.store.keys).active()
    return Engine(active.rules, active.version), await timers.load_policy(services.store)


class QueuesController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["queues"]

    @documented(ok=QueueList)
    @get(paths.QUEUES, operation_id="listQueues", opt={"roles": STAFF},
         summary="Each skill queue: depth, oldest age, deadlines breached")
    async def index(self, services: Services) -> dict[str, Any]:
        active = await RuleStore(services.store.r, services.store.keys).active()
        escalation = (await timers.load_policy(services.store)).escalation_queue  # listed even when empty
        return {"items": await services.store.queue_stats(extra=[*active.rules.queues, escalation]), "next": None,
                "rules_version": active.version}

    @documented(ok=Claimed, also={204: (None, "No case is waiting in the agent's queues")})
    @post(paths.QUEUES_CLAIM_NEXT, operation_id="claimNextForMe", status_code=200, opt={"roles": STAFF},
          summary="Lease the most urgent complaint across the calling agent's skills (204 when none)")
    async def claim_any(self, request: Request[Any, Any, Any], services: Services) -> Response[Any]:
        principal = principal_of(request)
        skills = await skills_of(services.store, principal.id)
        if skills is None:
            skills = [q["skill"] for q in await services.store.queue_stats()]
        return _claimed(await cases.claim_most_urgent(services.store, skills, agent=principal.id, actor=principal.actor,
                                                      lease_seconds=services.settings.claim_lease_seconds))

    @documented(ok=Claimed, also={204: (None, "The queue is empty")})
    @post(paths.QUEUE_CLAIM, operation_id="claimNext", status_code=200, opt={"roles": STAFF},
          summary="Lease the next complaint of a skill queue to the calling agent (204 when empty)")
    async def claim(self, request: Request[Any, Any, Any], services: Services,
                    skill: Annotated[str, PathParameter(max_length=64, pattern=r"^[a-z0-9_-]+$")]) -> Response[Any]:
        principal = principal_of(request)
        if principal.role == ROLE_AGENT:
            allowed = await skills_of(services.store, principal.id)
            if allowed is not None and skill not in allowed:
                raise ProblemError(403, "skill_not_allowed", f"Agent {principal.id} does not work the {skill} queue.")
        return _claimed(await cases.claim(services.store, skill, agent=principal.id, actor=principal.actor,
                                          lease_seconds=services.settings.claim_lease_seconds))


def _claimed(claimed: cases.Claimed | None) -> Response[Any]:
    if claimed is None:
        return Response(None, status_code=204)
    return Response({"complaint": complaint_json(claimed.complaint),
                     "lease_expires_at": claimed.lease_expires_at.isoformat()})


class QuarantineController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["quarantine"]

    @documented(ok=QuarantinePage)
    @get(paths.QUARANTINE, operation_id="listQuarantine", opt={"roles": {ROLE_SUPERVISOR}},
         summary="Inputs that could not be parsed, with their raw form")
    async def index(self, services: Services,
                    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50) -> dict[str, Any]:
        items = await services.store.quarantined(limit)
        return {"items": [_quarantine_view(i) for i in items], "next": None}

    @documented(ok=Requeued, problems=(409,), ok_example={"message_id": "msg_01HZX5Y2", "status": "requeued"})
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

    @documented(ok_description="Discarded")
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
