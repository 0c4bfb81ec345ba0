"""What the operations API answers, as msgspec structs: the schemas of the OpenAPI document
(gateway/api_doc.py). Handlers build their answers as they did (``complaint_json`` and friends);
these structs say what clients may rely on, and tests/unit/test_openapi_document.py decodes real
answers into them. Fields a reader may not see (a customer's public view drops the desk's own)
are optional here.

A complaint is normalizer.schema's ``Complaint`` as ``complaint_json`` encodes it, with the parts a
reader's view changes made optional.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from normalizer.schema import Complaint, MaterialRequest, Refund
from normalizer.schema import Reply as ReplyOut

Next = Annotated[str | None, msgspec.Meta(description="Pass as `next` for the following page; null: no more")]


class Problem(msgspec.Struct, kw_only=True):
    """An error, as RFC 9457 problem details, with a stable ``code`` (and ``field`` when one input
    field is at fault)."""

    type: str
    title: str
    status: int
    detail: str
    code: Annotated[str, msgspec.Meta(examples=["invalid_field", "payload_too_large"])]
    field: Annotated[str, msgspec.Meta(description="The field at fault, dotted: amount.value")] | None = None
    #: invalid_rules (422): each problem of the rule set, with where it is.
    problems: list[dict[str, Any]] | None = None
    #: version_mismatch (412): the routing rules' version active now.
    active_version: int | None = None
    #: idempotency_key_reused (409, POST /v1/messages): the message the key was first used for.
    message_id: str | None = None


class MaterialOut(MaterialRequest, kw_only=True):
    """An appeal material asked for (a customer does not see who asked)."""

    requested_by: str | None = None


class RefundOut(Refund, kw_only=True):
    """A refund or compensation (a customer sees amount, method, kind, state and expected only)."""

    proposed_by: str | None = None
    proposed_at: datetime | None = None


class OpenCase(msgspec.Struct, kw_only=True):
    id: str
    case_number: str
    status: str
    category: str
    channel: str
    created_at: datetime
    repeat_count: int = 0


class CustomerSummary(msgspec.Struct, kw_only=True):
    """Who the customer is (staff only): every contact, every open case."""

    id: str
    contacts: list[dict[str, str]]
    open_cases: list[OpenCase]
    cases_total: int


class ComplaintOut(Complaint, kw_only=True):
    """A complaint (design.md's field names). Staff see it whole; a customer's app sees the public
    view (no assignee, lease, root cause, routing or merges; the history's public entries; of a
    refund what the customer is owed and when; of materials not who asked)."""

    materials: list[MaterialOut] = []
    refund: RefundOut | None = None
    #: Texts with card, ID and phone numbers and e-mail addresses masked (lists, the app, roles without PII).
    pii_masked: bool | None = None
    #: The customer behind the case (staff's ``GET /v1/complaints/{id}`` only).
    customer: CustomerSummary | None = None


class ComplaintPage(msgspec.Struct, kw_only=True):
    items: list[ComplaintOut]
    next: Next = None


class Warning(msgspec.Struct, kw_only=True):
    code: str
    field: str | None = None
    detail: str | None = None


class Recorded(msgspec.Struct, kw_only=True):
    """The message is durable; ``GET /v1/messages/{message_id}`` follows it to its complaint."""

    message_id: str
    status: str
    warnings: list[Warning] = []


class Replied(msgspec.Struct, kw_only=True):
    reply: ReplyOut
    complaint: ComplaintOut


class Split(msgspec.Struct, kw_only=True):
    complaint: ComplaintOut
    message_id: str
    status: str


class Merged(msgspec.Struct, kw_only=True):
    complaint: ComplaintOut
    into: ComplaintOut


class Claimed(msgspec.Struct, kw_only=True):
    complaint: ComplaintOut
    lease_expires_at: datetime


class QueueStat(msgspec.Struct, kw_only=True):
    skill: str
    depth: int
    oldest_age_seconds: float
    awaiting_first_response: int = 0
    deadlines_breached: int = 0
    deadlines_near: int = 0


class QueueList(msgspec.Struct, kw_only=True):
    items: list[QueueStat]
    next: Next = None
    rules_version: int | None = None


class QuarantineItem(msgspec.Struct, kw_only=True):
    id: str
    channel: str
    reason: str
    received_at: datetime
    raw_base64: str
    raw_size: int
    message_id: str | None = None


class QuarantinePage(msgspec.Struct, kw_only=True):
    items: list[QuarantineItem]
    next: Next = None


class Requeued(msgspec.Struct, kw_only=True):
    message_id: str
    status: str


class Customer(CustomerSummary, kw_only=True):
    """A customer: linked contacts, open cases, and the history of links."""

    history: list[dict[str, Any]] = []


class Linked(msgspec.Struct, kw_only=True):
    """The link's outcome (``linked``, ``already``, ``moved``) and the customer after it."""

    status: str
    customer: Customer
    moved_from: str | None = None


class Incident(msgspec.Struct, kw_only=True):
    id: str
    category: str
    status: str
    created_at: Any = None
    updated_at: Any = None
    title: str | None = None
    customers: int | None = None
    answer: dict[str, str] | None = None
    complaints: list[dict[str, Any]] | None = None
    complaint_count: int | None = None
    answered: int | None = None
    skipped: int | None = None


class IncidentPage(msgspec.Struct, kw_only=True):
    items: list[Incident]
    next: Next = None


class Health(msgspec.Struct, kw_only=True):
    status: str


class Ready(msgspec.Struct, kw_only=True):
    status: Annotated[str, msgspec.Meta(examples=["ok", "unavailable"])]
    checks: dict[str, str]


__all__ = [
    "Claimed", "ComplaintOut", "ComplaintPage", "Customer", "CustomerSummary", "Health", "Incident",
    "IncidentPage", "Linked", "Merged", "Problem", "QuarantinePage", "QueueList", "Ready", "Recorded",
    "Replied", "Requeued", "Split",
]
