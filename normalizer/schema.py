"""The one complaint schema: what every channel's traffic is turned into.

Structs that cross a boundary (HTTP, Redis, plugins) are msgspec structs. New fields always
get defaults so that records already in Redis, and jobs already queued, still decode.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone

import msgspec

#: The channels built in; plugins may add their own names.
CHANNEL_APP = "app"
CHANNEL_COUNTER = "counter"
CHANNEL_PHONE = "phone"
#: Replies nobody wrote by hand (RFC 3834 ``Auto-Submitted`` on e-mail, rate-limited).
AUTOMATIC_REPLY_KINDS = frozenset({"ack", "repeat_ack", "status", "survey", "notice", "progress"})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ComplaintStatus(str, enum.Enum):
    """The lifecycle: received → accepted → in_progress → responded → resolved / closed / reopened."""

    received = "received"
    accepted = "accepted"
    in_progress = "in_progress"
    responded = "responded"
    resolved = "resolved"
    closed = "closed"
    reopened = "reopened"


OPEN_STATUSES = frozenset(
    {
        ComplaintStatus.received,
        ComplaintStatus.accepted,
        ComplaintStatus.in_progress,
        ComplaintStatus.responded,
        ComplaintStatus.reopened,
    }
)


class MessageStatus(str, enum.Enum):
    """Processing state of one inbound message, as `GET /v1/messages/{id}` shows it."""

    received = "received"  # durable in Redis, job queued
    processed = "processed"  # became a complaint or a follow-up
    quarantined = "quarantined"  # could not be processed; raw form kept


class Amount(msgspec.Struct, frozen=True):
    """Money as a decimal string (never a float) and an ISO 4217 currency."""

    value: str
    currency: str


class Contact(msgspec.Struct, frozen=True):
    """How to reach a customer on one channel: `kind` is the id space (app user id, phone,
    e-mail, wa_id, ...), `value` the id in it."""

    kind: str
    value: str
    display_name: str | None = None


#: States of an attachment: announced by the channel and still to be fetched from the provider,
#: its bytes in the blob store, or given up on (``error`` says why).
EVIDENCE_PENDING = "pending"
EVIDENCE_STORED = "stored"
EVIDENCE_FAILED = "failed"


class EvidenceLink(msgspec.Struct, frozen=True):
    """A reference to a stored attachment, recording or screenshot (bytes live in the blob store).

    An attachment the channel only announced (MMS media, a WhatsApp media id, a Telegram file)
    is ``pending`` on its complaint until a job of its own fetches it (``stored``) or gives up
    after a bounded number of ``tries`` (``failed``, with the reason in ``error``); the complaint
    never waits for it. Links written before these fields existed decode as ``stored``."""

    id: str
    sha256: str
    content_type: str
    size: int
    filename: str | None = None
    source: str | None = None
    # Set while the worker still has to fetch the bytes from the provider (e.g. MMS media).
    remote_url: str | None = None
    state: str = EVIDENCE_STORED
    #: Why the last fetch failed (while ``pending``) or why it was given up (``failed``).
    error: str | None = None
    #: Fetches tried so far.
    tries: int = 0


class InboundMessage(msgspec.Struct, kw_only=True):
    """One customer message from any channel, after the adapter has verified and parsed it."""

    id: str
    channel: str
    provider_message_id: str | None = None
    sender: Contact
    text: str = ""
    language: str = "en"
    received_at: datetime
    attachments: list[EvidenceLink] = []
    #: Where the raw provider payload is kept (a Redis key), for audit and quarantine retries.
    raw_ref: str | None = None
    # Facts the channel states outright (the app) or the normalizer found in the text.
    transaction_id: str | None = None
    amount: Amount | None = None
    category_hint: str | None = None
    #: Extra contacts the channel vouches for (the app's profile: phone, e-mail).
    verified_contacts: list[Contact] = []
    #: An existing case this message explicitly belongs to (a reply in a thread).
    complaint_ref: str | None = None
    #: Set when an agent records the complaint on the customer's behalf.
    recorded_by: str | None = None
    metadata: dict[str, str] = {}
    #: The channel's subject line, where it has one (e-mail).
    subject: str | None = None
    #: Why no automatic acknowledgement may be sent (an auto-reply, a bounce, a mailing list).
    suppress_acknowledgement: str | None = None


class HistoryEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An append-only record: who did what, when, and why."""

    at: datetime
    actor: str  # "system", "worker", "agent:<id>", "supervisor:<id>", "customer"
    action: str
    detail: dict[str, str] = {}
    public: bool = False  # shown to the customer (the app) as a progress update


class MessageEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A customer message as the complaint keeps it."""

    message_id: str
    channel: str
    text: str
    received_at: datetime
    provider_message_id: str | None = None
    language: str = "en"
    subject: str | None = None
    #: Set when the customer edited an earlier message (Telegram): the id of the message this
    #: text replaces. The earlier text stays, so the complaint keeps the whole text history.
    edit_of: str | None = None


class Reply(msgspec.Struct, kw_only=True):
    """Something we said to the customer: an acknowledgement or an agent's answer."""

    id: str
    kind: str  # "ack", "agent", "status", "survey"
    text: str
    author: str
    channel: str
    created_at: datetime
    delivery: str = "queued"  # queued → sent → delivered / failed
    delivered_at: datetime | None = None
    provider_message_id: str | None = None
    error: str | None = None
    #: Where it goes when not to the complaint's own contact (a repeat report that came in on
    #: another channel is answered there).
    to: Contact | None = None
    language: str | None = None


class Merge(msgspec.Struct, kw_only=True):
    """A customer message attached to an existing case as a repeat report, and why."""

    message_id: str
    reason: str  # same_transaction, same_amount, similar_text
    detail: dict[str, str] = {}
    at: datetime
    by: str = "worker"
    evidence_ids: list[str] = []
    split: bool = False
    split_by: str | None = None
    split_reason: str | None = None


class Deadline(msgspec.Struct, kw_only=True):
    """One clock on a case: ``first_response``, ``resolution``, or ``escalation_<n>`` (the next
    level's deadline after a breach). ``gen`` changes when the clock is paused or restarted, so
    a timer set for an earlier version of it does nothing."""

    kind: str
    due: datetime
    warn_at: datetime | None = None
    state: str = "running"  # running, paused, met, breached, cancelled
    gen: int = 1
    level: int = 1
    warned: bool = False
    met_at: datetime | None = None
    breached_at: datetime | None = None
    remaining_ms: int | None = None  # while paused



# -- the appeal process (shared/domain.md: materials, payment records, refunds, causes) ------------

#: What an agent may ask the customer for (router/cases/materials.py words them in zh / en).
MATERIAL_KINDS = ("transaction_record", "charge_screenshot", "bank_statement", "id_proof",
                  "communication_records", "other")
#: How a refund or compensation reaches the customer.
REFUND_METHODS = ("original_route", "wallet_balance")
#: Why it happened, recorded at resolution (系统错误、操作失误、欺诈行为、网络问题 and the rest).
ROOT_CAUSES = ("system_error", "operator_error", "fraud", "network", "merchant", "customer_error", "other")


class MaterialRequest(msgspec.Struct, kw_only=True):
    """One item of appeal materials an agent asked the customer for, and whether it arrived."""

    id: str
    kind: str  # one of MATERIAL_KINDS
    note: str | None = None  # free text (what "other" means; a hint for the others)
    requested_at: datetime
    requested_by: str
    state: str = "awaited"  # awaited, received, waived
    received_at: datetime | None = None
    #: The evidence and the message that brought it (any channel).
    evidence_ids: list[str] = []
    message_id: str | None = None
    channel: str | None = None


class PaymentCharge(msgspec.Struct, frozen=True, kw_only=True):
    """One charge as the payment system records it."""

    transaction_id: str
    amount: Amount
    status: str  # succeeded, refunded, failed, pending, ... as the payment system says
    merchant: str | None = None
    charged_at: datetime | None = None


#: Where a payment-records lookup stands: the charge found, none found, the records system did not
#: answer and the lookup is tried again later, or it was given up on (``error`` says why).
PAYMENT_CHECK_STATES = ("found", "not_found", "retrying", "failed")


class PaymentCheck(msgspec.Struct, kw_only=True):
    """What a payment-records lookup found for the case (核实支付记录)."""

    source: str  # the plugin that looked
    checked_at: datetime
    state: str = "not_found"  # one of PAYMENT_CHECK_STATES
    found: bool = False
    #: Lookups made so far (a records system that was away is asked again, a bounded number of times).
    tries: int = 1
    next_try_at: datetime | None = None
    charge: PaymentCharge | None = None
    #: Other charges that look like the same payment taken again.
    duplicates: list[PaymentCharge] = []
    duplicate_confirmed: bool = False
    #: The amount the customer states differs from what was charged.
    amount_mismatch: bool = False
    claimed_amount: Amount | None = None
    error: str | None = None


class Refund(msgspec.Struct, kw_only=True):
    """A refund or compensation as the outcome of a case, and its approval (router/cases/outcomes.py)."""

    amount: Amount
    method: str  # one of REFUND_METHODS
    kind: str = "refund"  # refund or compensation
    state: str = "proposed"  # awaiting_approval, approved, rejected
    proposed_by: str
    proposed_at: datetime
    decided_by: str | None = None  # "policy" (at or below the threshold) or the supervisor
    decided_at: datetime | None = None
    decision_reason: str | None = None
    #: When the customer can expect the money (free text or a date, as the desk words it).
    expected: str | None = None
    #: Which proposal on this case it is (1, then 2 after a rejection...): fixes its notice's reply id.
    proposal: int = 1
    #: The approval threshold in force for its currency when it was proposed (None: none named).
    threshold: Amount | None = None
    #: The resolution it belongs to, carried out once it is approved.
    outcome: str = "upheld"
    outcome_reason: str = ""
    no_survey: bool = False


class Complaint(msgspec.Struct, kw_only=True):
    """A case: one customer, one problem, from intake to resolution."""

    id: str
    case_number: str
    status: ComplaintStatus
    category: str
    formal_complaint: bool
    channel: str
    customer_id: str
    contact: Contact
    language: str
    created_at: datetime
    updated_at: datetime
    amount: Amount | None = None
    transaction_id: str | None = None
    skill: str | None = None
    priority: int = 5
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    first_responded_at: datetime | None = None
    resolved_at: datetime | None = None
    assignee: str | None = None
    lease_expires_at: datetime | None = None
    outcome: str | None = None
    outcome_reason: str | None = None
    routed_by: str | None = None
    messages: list[MessageEntry] = []
    replies: list[Reply] = []
    evidence: list[EvidenceLink] = []
    history: list[HistoryEvent] = []
    tags: list[str] = []
    #: How often the customer reported the same problem again while this case was open.
    repeat_count: int = 0
    merges: list[Merge] = []
    incident_id: str | None = None
    deadlines: list[Deadline] = []
    #: The customer's survey answer, 1 (very dissatisfied) to 5 (very satisfied).
    satisfaction: int | None = None
    reopened_count: int = 0
    customer_tier: str | None = None
    #: How sure the learned categoriser was of ``category`` (0-1); ``None`` when a hint, a plugin
    #: or the keyword rules decided; 1.0 once an agent corrected it.
    category_confidence: float | None = None
    #: The categoriser's second choice and its confidence.
    category_runner_up: str | None = None
    category_runner_up_confidence: float | None = None
    #: A case this one may repeat (a middle-band match): linked for an agent to merge, not merged.
    possible_repeat_of: str | None = None
    #: Appeal materials asked for, each ticked off when it arrives (router/cases/materials.py).
    materials: list[MaterialRequest] = []
    #: What the payment-records lookup found (an enricher plugin).
    payment_check: PaymentCheck | None = None
    #: A refund or compensation proposed as the outcome, and its approval.
    refund: Refund | None = None
    #: Why it happened (one of ROOT_CAUSES), recorded at resolution.
    root_cause: str | None = None
    #: Where the appeal waits, beyond ``status``: awaiting_materials, awaiting_approval (or None).
    stage: str | None = None
    #: When the customer last heard from us (any customer-visible reply): progress updates count from it.
    last_update_at: datetime | None = None
    #: When the next periodic progress update is due (quiet hours taken into account; None: none
    #: planned): it goes out then unless the customer hears from us before (router/cases/progress.py).
    next_update_at: datetime | None = None
    #: The kinds of the materials still awaited (router/cases/materials.py keeps it with ``materials``).
    materials_missing: list[str] = []


class ComplaintEvent(msgspec.Struct, frozen=True, kw_only=True):
    """What listeners receive: `kind` is created, routed, replied, sla_breached or resolved."""

    kind: str
    complaint_id: str
    case_number: str
    at: datetime
    actor: str = "system"
    detail: dict[str, str] = {}


class Classification(msgspec.Struct, frozen=True, kw_only=True):
    """A classifier's verdict."""

    category: str
    formal_complaint: bool = False
    source: str = "plugin"
    matched: tuple[str, ...] = ()


class RouteDecision(msgspec.Struct, frozen=True, kw_only=True):
    """Where a complaint goes and why."""

    skill: str
    priority: int
    rule: str
    version: str = "builtin"


class OutboundMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message to send on a channel: what a sender plugin receives."""

    id: str
    channel: str
    complaint_id: str
    case_number: str
    to: Contact
    text: str
    kind: str
    language: str = "en"
    #: Provider-specific threading data (e.g. e-mail Message-ID), opaque to the core.
    thread: dict[str, str] = {}


class DeliveryResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a sender answers: `sent` (handed to the provider) or `delivered` (final)."""

    status: str = "sent"
    provider_message_id: str | None = None
    error: str | None = None
    #: True when retrying could help (timeouts, 5xx); False for a permanent refusal.
    retryable: bool = False
