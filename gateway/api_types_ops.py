"""What the operations API answers beyond complaints, as msgspec structs for the OpenAPI
document: service standards, routing rules, agents, the categoriser, approvals, appeals and the
console. Reports whose breakdowns are open-ended (per channel, per category, per day) name their
fixed fields and leave the breakdowns as objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from gateway.api_types import ComplaintOut, MaterialOut, Next, QueueStat
from normalizer.schema import Amount
from router.rules import RuleSet


class TemplateText(msgspec.Struct, kw_only=True):
    text: str
    default: str
    customised: bool


class Templates(msgspec.Struct, kw_only=True):
    """Per template and language (``{"ack": {"zh": {...}, "en": {...}}, ...}``): the text in force,
    the default, and whether the desk changed it."""

    templates: dict[str, dict[str, TemplateText]]


class Figures(msgspec.Struct, kw_only=True):
    complaints: int
    resolved: int
    resolution_rate: float | None
    first_responses: int
    first_response_p50_seconds: float | None
    first_response_p90_seconds: float | None
    first_response_within_standard: float | None
    surveys_answered: int
    satisfaction: float | None
    satisfaction_average: float | None
    deadlines_breached: int
    reopened: int
    root_causes: dict[str, int]
    refunds: dict[str, Any]


class ServiceReport(msgspec.Struct, kw_only=True):
    since: datetime
    until: datetime
    complaints: int
    truncated: bool
    standards: dict[str, Any]
    overall: Figures
    by_channel: dict[str, Figures]
    by_category: dict[str, Figures]
    meets: dict[str, bool]


class RulesVersion(msgspec.Struct, kw_only=True):
    """A version of the routing rules (its number is also the ETag)."""

    version: int
    rules: RuleSet
    by: str
    at: datetime
    reason: str
    rollback_of: int | None = None


class RulesHistory(msgspec.Struct, kw_only=True):
    items: list[dict[str, Any]]
    next: Next = None


class RulesMove(msgspec.Struct, kw_only=True):
    count: int
    examples: list[dict[str, Any]]
    from_: str = msgspec.field(name="from")
    to: str = ""


class RulesDryRun(msgspec.Struct, kw_only=True):
    examined: int
    would_move: int
    unchanged: int
    moves: list[RulesMove]
    by_rule: dict[str, int]


class Agent(msgspec.Struct, kw_only=True):
    id: str
    #: null: no skills set, every queue is open to the agent.
    skills: list[str] | None


class AgentPage(msgspec.Struct, kw_only=True):
    items: list[Agent]
    next: Next = None


class ModelOverview(msgspec.Struct, kw_only=True):
    current: dict[str, Any]
    versions: list[dict[str, Any]]
    history: list[dict[str, Any]]
    rollback_to: str | None = None


class ModelVersion(msgspec.Struct, kw_only=True):
    """A trained candidate: its figures, and its evaluation against the current version."""

    version: str


class ModelDryRun(msgspec.Struct, kw_only=True):
    version: str
    current_version: str | None
    examined: int
    would_change: int
    unchanged: int
    changes: list[dict[str, Any]]
    by_category: dict[str, dict[str, int]]


class ModelSwitch(msgspec.Struct, kw_only=True):
    """A promotion or a rollback, as the model's history records it."""

    action: str
    version: str | None
    previous: str | None
    by: str
    at: Any
    reason: str


class Correction(msgspec.Struct, kw_only=True):
    id: str
    complaint_id: str
    case_number: str
    from_category: str
    to_category: str
    reason: str
    by: str
    at: datetime
    channel: str | None = None
    language: str | None = None
    text: str | None = None


class CorrectionPage(msgspec.Struct, kw_only=True):
    items: list[Correction]
    total: int
    next: Next = None


class ApprovalItem(msgspec.Struct, kw_only=True):
    complaint_id: str
    case_number: str
    category: str
    channel: str
    refund: dict[str, Any] | None = None
    skill: str | None = None
    priority: int | None = None
    assignee: str | None = None
    amount: Amount | None = None
    resolution_due: datetime | None = None


class ApprovalPage(msgspec.Struct, kw_only=True):
    items: list[ApprovalItem]
    next: Next = None


class Materials(msgspec.Struct, kw_only=True):
    """What was asked for, what arrived, what is still missing."""

    items: list[MaterialOut]
    missing: list[str]
    stage: str | None = None
    resolution_due: datetime | None = None


class MaterialsChanged(msgspec.Struct, kw_only=True):
    materials: Materials
    complaint: ComplaintOut


class Me(msgspec.Struct, kw_only=True):
    role: str
    id: str
    actor: str
    queues: list[str]
    timezone: str
    claim_lease_seconds: int
    categories: dict[str, Any]
    statuses: dict[str, dict[str, str]]
    first_response_standard_seconds: dict[str, Any]
    escalation_queue: str


class WaitingCase(msgspec.Struct, kw_only=True):
    id: str
    case_number: str
    status: str
    category: str
    channel: str
    priority: int
    created_at: datetime
    skill: str | None = None
    language: str | None = None
    formal_complaint: bool = False
    repeat_count: int = 0
    assignee: str | None = None
    tags: list[str] = []
    first_response_due: datetime | None = None
    resolution_due: datetime | None = None
    lease_expires_at: datetime | None = None
    stage: str | None = None


class Worklist(msgspec.Struct, kw_only=True):
    queues: list[QueueStat]
    due: list[WaitingCase]
    mine: list[WaitingCase]
    at: datetime


class Pulse(msgspec.Struct, kw_only=True):
    id: str
    version: str
    at_ms: int


class Charts(msgspec.Struct, kw_only=True):
    since: datetime
    until: datetime
    step_seconds: int
    points: list[datetime]
    queues: dict[str, dict[str, Any]]
    channels: dict[str, dict[str, Any]]
    timezone: str
    truncated: bool
    now: dict[str, Any]


class Trend(msgspec.Struct, kw_only=True):
    timezone: str
    days: list[dict[str, Any]]
    truncated: bool


__all__ = [
    "AgentPage", "ApprovalPage", "Charts", "CorrectionPage", "Materials", "MaterialsChanged", "Me",
    "ModelDryRun", "ModelOverview", "ModelSwitch", "ModelVersion", "Pulse", "RulesDryRun", "RulesHistory",
    "RulesVersion", "ServiceReport", "Templates", "Trend", "Worklist",
]
