"""The operations API, refunds and causes: refunds awaiting a supervisor's approval (or rejected
back to their agent), a supervisor's approval or rejection, and a supervisor's correction of a
case's root cause. The state changes are ``router.cases.outcomes``'s; this module parses, checks
roles and answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.params import PathParameter, QueryParameter

from gateway import paths
from gateway.api_common import STAFF, Services, load_complaint
from gateway.api_doc import documented
from gateway.api_types import ComplaintOut
from gateway.api_types_ops import ApprovalPage
from gateway.auth import ROLE_SUPERVISOR, principal_of, roles_guard
from gateway.views import complaint_json
from normalizer.inbound import InputRejected, money
from normalizer.schema import ROOT_CAUSES, Complaint
from plugins.problems import ProblemError
from plugins.requests import decode_json, read_body, require_json
from router.cases import outcomes
from router.cases.outcomes import AWAITING, REJECTED, RefundProposal


class MoneyIn(msgspec.Struct, forbid_unknown_fields=True):
    value: Annotated[str, msgspec.Meta(max_length=20)]  # a decimal string, "128.50"
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z]{3}$")]  # ISO 4217


class RefundIn(msgspec.Struct, forbid_unknown_fields=True):
    """A refund or compensation a case is resolved with (above the policy's threshold for its
    currency it awaits a supervisor's approval first)."""

    amount: MoneyIn
    method: Literal["original_route", "wallet_balance"]
    kind: Literal["refund", "compensation"] = "refund"


class DecisionIn(msgspec.Struct, forbid_unknown_fields=True):
    """A supervisor's decision on a refund: ``reason`` is optional to approve, required to reject."""

    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""


class RootCauseIn(msgspec.Struct, forbid_unknown_fields=True):
    root_cause: Annotated[str, msgspec.Meta(max_length=40)]
    reason: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


def refund_proposal(incoming: RefundIn | None, outcome: str) -> RefundProposal | None:
    """A resolve request's refund, checked: a positive decimal amount in an accepted ISO 4217
    currency, and no refund on an appeal the desk rejects (compensation may go with any outcome)."""
    if incoming is None:
        return None
    try:
        amount = money(incoming.amount.value, incoming.amount.currency, field="refund.amount.value")
    except InputRejected as exc:
        field = "refund.amount.currency" if exc.code == "invalid_currency" else "refund.amount.value"
        raise ProblemError(422, exc.code, str(exc), field=field) from None
    if amount is None or Decimal(amount.value) <= 0:
        raise ProblemError(422, "invalid_amount", "refund.amount.value must be more than 0.",
                           field="refund.amount.value")
    if incoming.kind == "refund" and outcome == "rejected":
        raise ProblemError(422, "refund_contradicts_outcome",
                           "A rejected appeal is not refunded; resolve it as upheld or partly_upheld, "
                           "or offer compensation.", field="refund")
    return RefundProposal(amount=amount, method=incoming.method, kind=incoming.kind)


def root_cause_checked(root_cause: str | None) -> str | None:
    if root_cause is not None and root_cause not in ROOT_CAUSES:
        raise ProblemError(422, "invalid_root_cause", f"root_cause must be one of {', '.join(ROOT_CAUSES)}.",
                           field="root_cause")
    return root_cause


def _approval_item(complaint: Complaint) -> dict[str, Any]:
    refund = complaint.refund
    return {
        "complaint_id": complaint.id, "case_number": complaint.case_number, "category": complaint.category,
        "channel": complaint.channel, "skill": complaint.skill, "priority": complaint.priority,
        "assignee": complaint.assignee, "amount": complaint.amount and msgspec.to_builtins(complaint.amount),
        "resolution_due": complaint.resolution_due and complaint.resolution_due.isoformat(),
        "refund": msgspec.to_builtins(refund),
    }


class ApprovalsController(Controller):
    path = ""
    guards = [roles_guard]
    tags = ["refunds"]

    @documented(ok=ApprovalPage, problems=(400,))
    @get(paths.APPROVALS, operation_id="listApprovals", opt={"roles": STAFF},
         summary="Refunds awaiting a supervisor's approval, oldest first (state=rejected: back with their agent)")
    async def index(self, services: Services,
                    refund_state: Annotated[Literal["awaiting_approval", "rejected"],
                                            QueryParameter(name="state")] = "awaiting_approval",
                    limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
                    cursor: Annotated[str | None, QueryParameter(name="next", max_length=12, pattern=r"^\d+$")] = None,
                    ) -> dict[str, Any]:
        items, following = await outcomes.pending(services.store, AWAITING if refund_state == AWAITING else REJECTED,
                                                  offset=int(cursor or 0), limit=limit)
        return {"items": [_approval_item(c) for c in items], "next": None if following is None else str(following)}

    @documented(DecisionIn, ComplaintOut, body_required=False, problems=(409,),
                example={"reason": "Duplicate charge confirmed by the payment records"})
    @post(paths.REFUND_APPROVE, operation_id="approveRefund", status_code=200, opt={"roles": {ROLE_SUPERVISOR}},
          summary="Approve the refund awaiting approval: the case is resolved and the customer told")
    async def approve(self, request: Request[Any, Any, Any], services: Services,
                      complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        body = await read_body(request, 16 * 1024)
        incoming = decode_json(body, DecisionIn) if body.strip() else DecisionIn()
        principal = principal_of(request)
        cid = (await load_complaint(services, complaint_id)).id
        try:
            complaint = await outcomes.approve(services.store, cid, actor=principal.actor, reason=incoming.reason,
                                               reopen_window_s=services.settings.reopen_window_hours * 3600)
        except outcomes.NotAllowed as exc:
            raise ProblemError(403, exc.code, str(exc)) from None
        return complaint_json(complaint)

    @documented(DecisionIn, ComplaintOut, problems=(409,),
                example={"reason": "The second charge was a separate purchase"})
    @post(paths.REFUND_REJECT, operation_id="rejectRefund", status_code=200, opt={"roles": {ROLE_SUPERVISOR}},
          summary="Reject the refund awaiting approval, with a reason: it goes back to the agent who proposed it")
    async def reject(self, request: Request[Any, Any, Any], services: Services,
                     complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), DecisionIn)
        if not incoming.reason.strip():
            raise ProblemError(422, "reason_required", "A rejection needs a reason the agent can act on.",
                               field="reason")
        cid = (await load_complaint(services, complaint_id)).id
        return complaint_json(await outcomes.reject(services.store, cid, actor=principal_of(request).actor,
                                                    reason=incoming.reason))

    @documented(RootCauseIn, ComplaintOut, problems=(409,),
                example={"root_cause": "operator_error", "reason": "The cashier keyed the amount twice"})
    @put(paths.COMPLAINT_ROOT_CAUSE, operation_id="correctRootCause", status_code=200,
         opt={"roles": {ROLE_SUPERVISOR}}, summary="Correct the root cause recorded for a case (with a reason)")
    async def root_cause(self, request: Request[Any, Any, Any], services: Services,
                         complaint_id: Annotated[str, PathParameter(max_length=80)]) -> dict[str, Any]:
        require_json(request)
        incoming = decode_json(await read_body(request, 16 * 1024), RootCauseIn)
        cause = root_cause_checked(incoming.root_cause) or ""
        cid = (await load_complaint(services, complaint_id)).id
        return complaint_json(await outcomes.correct_root_cause(services.store, cid, root_cause=cause,
                                                                reason=incoming.reason,
                                                                actor=principal_of(request).actor))


__all__ = ["ApprovalsController", "RefundIn", "refund_proposal", "root_cause_checked"]
