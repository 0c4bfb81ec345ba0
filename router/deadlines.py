"""Deadlines from the service standards (shared/domain.md), as a policy supervisors can change.

- first response: 60 s online / app, 30 s on the phone (per channel, per category override);
- resolution: 48 h for a complex case, 24 h first handling for a formal complaint;
- a customer tier scales them (``vip`` 0.5 by default); a routing rule may override them;
- a warning at ``warn_fraction`` of the allowance, escalation levels after a breach;
- optional business hours (7 × 24 by default): allowances then count working time only.

Timers are members of one Redis sorted set scored by their due time (ms):
``<complaint id>|<deadline kind>|<warn or due>|<generation>``. A running deadline has one timer at a
time: its warning while that is still to come, else its due time (the warning's firing sets the
due timer in the same change), so a new case writes two deadline timers, not four.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from normalizer.language import desk_language
from normalizer.categories import CATEGORIES
from normalizer.ids import dt_to_ms
from normalizer.schema import REFUND_METHODS, Complaint, Deadline

FIRST_RESPONSE, RESOLUTION = "first_response", "resolution"
#: Where breached cases are copied unless the policy names another queue.
DEFAULT_ESCALATION_QUEUE = "escalation"
#: The key of a breach's history detail that names the queue the case was copied to.
ESCALATION_QUEUE_DETAIL = "escalation_queue"
#: A queue name as the skill-queue API takes it (``POST /v1/queues/{skill}/claim``).
QUEUE_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"


class BusinessHours(msgspec.Struct, forbid_unknown_fields=True):
    timezone: str = "Asia/Shanghai"
    #: ISO weekdays that are working days (1 = Monday).
    days: list[Annotated[int, msgspec.Meta(ge=1, le=7)]] = msgspec.field(default_factory=lambda: [1, 2, 3, 4, 5])
    start: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")] = "09:00"
    end: Annotated[str, msgspec.Meta(pattern=r"^([01]\d|2[0-4]):[0-5]\d$")] = "18:00"
    holidays: list[date] = []

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contains(self, moment: datetime) -> bool:
        t = moment.astimezone(self.zone())
        if t.isoweekday() not in self.days or t.date() in self.holidays:
            return False
        close_t = time.max if self.end == "24:00" else time.fromisoformat(self.end)
        return time.fromisoformat(self.start) <= t.time() < close_t

    def add(self, start: datetime, seconds: float) -> datetime:
        """``start`` plus ``seconds`` of working time."""
        zone = self.zone()
        t = start.astimezone(zone)
        left = timedelta(seconds=seconds)
        open_t = time.fromisoformat(self.start)
        close_t = time.max if self.end == "24:00" else time.fromisoformat(self.end)
        for _ in range(3700):  # ten years of days at most
            day = t.date()
            if day.isoweekday() in self.days and day not in self.holidays:
                opens = datetime.combine(day, open_t, zone)
                closes = datetime.combine(day, close_t, zone)
                begin = max(t, opens)
                if begin < closes:
                    if begin + left <= closes:
                        return (begin + left).astimezone(timezone.utc)
                    left -= closes - begin
            t = datetime.combine(day + timedelta(days=1), time.min, zone)
        raise ValueError("business hours leave no working time")


_HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"


class QuietHours(msgspec.Struct, forbid_unknown_fields=True):
    """Night hours in the desk's time zone when nothing the desk sends by itself goes out (an
    agent's own answer still does); what falls due in them waits until they end."""

    timezone: str = "Asia/Shanghai"
    start: Annotated[str, msgspec.Meta(pattern=_HHMM)] = "22:00"
    end: Annotated[str, msgspec.Meta(pattern=_HHMM)] = "08:00"

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` falls in the quiet hours (a window may run past midnight)."""
        t = moment.astimezone(ZoneInfo(self.timezone)).time()
        start, end = time.fromisoformat(self.start), time.fromisoformat(self.end)
        return start <= t < end if start < end else (t >= start or t < end)

    def release(self, moment: datetime) -> datetime:
        """``moment`` itself, or, if it falls in the quiet hours, the moment they end."""
        if not self.contains(moment):
            return moment
        zone = ZoneInfo(self.timezone)
        local = moment.astimezone(zone)
        ends = datetime.combine(local.date(), time.fromisoformat(self.end), zone)
        if ends <= local:
            ends = datetime.combine(local.date() + timedelta(days=1), time.fromisoformat(self.end), zone)
        return ends.astimezone(timezone.utc)

    def validate(self) -> list[str]:
        problems = []
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"progress.quiet_hours.timezone: unknown time zone {self.timezone!r}")
        if self.start == self.end:
            problems.append("progress.quiet_hours: start and end must differ (set quiet_hours to null for none)")
        return problems


#: The state changes a progress update can announce (``router.cases.progress.CHANGES`` words them).
PROGRESS_CHANGES = ("taken", "awaiting_materials", "awaiting_approval", "decided")


class ProgressPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Progress updates without asking (处理过程中，定期向申诉人反馈进度): sent on the customer's own
    channel when the case changes state, and when nothing customer-visible was sent for a while."""

    enabled: bool = True
    #: Silence allowed while a case is open before an update goes out (seconds); per category
    #: (``"payment_amount"``), per formal flag (``"formal"``), else ``"default"``. 0 = no periodic update.
    interval_seconds: dict[str, Annotated[int, msgspec.Meta(ge=0)]] = msgspec.field(
        default_factory=lambda: {"default": 24 * 3600, "formal": 12 * 3600})
    #: The state changes that tell the customer (taken, awaiting_materials, awaiting_approval, decided).
    on_changes: list[str] = msgspec.field(
        default_factory=lambda: ["taken", "awaiting_materials", "awaiting_approval", "decided"])
    quiet_hours: QuietHours | None = msgspec.field(default_factory=QuietHours)
    #: The no-spam rule: "taken" (no news of its own) never follows another customer-visible
    #: message by less than this: sooner, it is held until the gap has passed, and dropped if the
    #: customer heard from us meanwhile (an agent who claims a case and answers at once sends one
    #: message, not two). Periodic updates count their interval from the last message.
    min_gap_seconds: Annotated[int, msgspec.Meta(ge=0, le=24 * 3600)] = 600

    def interval_for(self, category: str, formal: bool) -> int:
        """The periodic update's interval for a case (0 = none): the category's own entry, else
        ``formal`` for a formal complaint, else ``default``."""
        if category in self.interval_seconds:
            return self.interval_seconds[category]
        if formal and "formal" in self.interval_seconds:
            return self.interval_seconds["formal"]
        return self.interval_seconds.get("default", 0)

    def release(self, moment: datetime) -> datetime:
        """When an automatic update due at ``moment`` may go out (after the quiet hours)."""
        return moment if self.quiet_hours is None else self.quiet_hours.release(moment)

    def validate(self) -> list[str]:
        problems = []
        if "default" not in self.interval_seconds:
            problems.append("progress.interval_seconds: a 'default' entry is required (0 = no periodic update)")
        for key in self.interval_seconds:
            if key not in ("default", "formal") and key not in CATEGORIES:
                problems.append(f"progress.interval_seconds: {key!r} is not 'default', 'formal' or a category "
                                f"({', '.join(CATEGORIES)})")
        for change in self.on_changes:
            if change not in PROGRESS_CHANGES:
                problems.append(f"progress.on_changes: unknown change {change!r} (one of {', '.join(PROGRESS_CHANGES)})")
        if self.quiet_hours is not None:
            problems.extend(self.quiet_hours.validate())
        return problems


class MaterialsPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Appeal materials (router/cases/materials.py): how the customer is reminded of what is missing
    (reminders are automatic updates: they wait out the quiet hours)."""

    #: A reminder when requested materials have not all arrived after this long (0 = none).
    reminder_seconds: Annotated[int, msgspec.Meta(ge=0)] = 48 * 3600
    #: Reminders at most (each after ``reminder_seconds`` more).
    max_reminders: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2


class RefundPolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Refunds and compensations as outcomes (router/cases/outcomes.py): which the policy approves by
    itself, and how the customer is told when to expect the money."""

    #: A refund or compensation above this amount (a decimal string per currency) needs a
    #: supervisor's approval before it is carried out; a currency not named always needs it.
    approval_threshold: dict[str, str] = msgspec.field(
        default_factory=lambda: {"CNY": "500.00", "USD": "70.00", "HKD": "550.00"})
    #: What the customer is told about when to expect the money, per method and language (it
    #: follows "expect it" / "预计…到账" in the outcome notice).
    expected: dict[str, dict[str, str]] = msgspec.field(default_factory=lambda: {
        "original_route": {"zh": "1–7 个工作日内", "en": "within 1–7 working days"},
        "wallet_balance": {"zh": "24 小时内", "en": "within 24 hours"},
    })

    def threshold(self, currency: str) -> Decimal | None:
        """The amount up to which the policy approves a refund in ``currency`` (None: always a supervisor)."""
        raw = self.approval_threshold.get(currency)
        return None if raw is None else Decimal(raw)

    def expected_wording(self, method: str, language: str) -> str:
        """When to expect the money, in ``language`` (English, then the default wording, if not given)."""
        lang = desk_language(language)
        texts = self.expected.get(method) or RefundPolicy().expected.get(method) or {}
        return texts.get(lang) or texts.get("en") or ""

    def validate(self) -> list[str]:
        problems = []
        for currency, amount in self.approval_threshold.items():
            if not re.fullmatch(r"[A-Z]{3}", currency):
                problems.append(f"refunds.approval_threshold: {currency!r} is not an ISO 4217 code (3 capital letters)")
            if not re.fullmatch(r"\d{1,12}(\.\d{1,2})?", amount):
                problems.append(f"refunds.approval_threshold.{currency}: {amount!r} is not a decimal amount (e.g. \"500.00\")")
        for method, texts in self.expected.items():
            if method not in REFUND_METHODS:
                problems.append(f"refunds.expected: unknown method {method!r} (one of {', '.join(REFUND_METHODS)})")
            for lang, text in texts.items():
                if lang not in ("zh", "en") or not text.strip():
                    problems.append(f"refunds.expected.{method}.{lang}: a non-empty text in zh or en")
        return problems


class DeadlinePolicy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    #: First response allowance per channel; "default" for channels not named (online channels).
    first_response_seconds: dict[str, Annotated[int, msgspec.Meta(ge=1)]] = msgspec.field(
        default_factory=lambda: {"default": 60, "phone": 30, "twilio_voice": 30})
    #: Per-category first-response overrides (win over the channel's).
    first_response_by_category: dict[str, Annotated[int, msgspec.Meta(ge=1)]] = {}
    #: A complex case: a solution within 48 h.
    resolution_seconds: Annotated[int, msgspec.Meta(ge=1)] = 48 * 3600
    #: A formal complaint: first handling within 24 h.
    formal_resolution_seconds: Annotated[int, msgspec.Meta(ge=1)] = 24 * 3600
    #: Customer tier → factor on every allowance.
    tier_factor: dict[str, Annotated[float, msgspec.Meta(gt=0, le=10)]] = msgspec.field(
        default_factory=lambda: {"vip": 0.5})
    #: Warn when this fraction of an allowance has passed (0 = no warnings).
    warn_fraction: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.8
    #: After a breach, the next level's allowance (level 2, level 3, ...); empty = no further level.
    escalation_seconds: list[Annotated[int, msgspec.Meta(ge=1)]] = msgspec.field(default_factory=lambda: [900, 3600])
    #: Priority added on each breach (0..9 scale, higher first).
    breach_priority_boost: Annotated[int, msgspec.Meta(ge=0, le=9)] = 2
    #: The queue a breached case is copied to (supervisors watch it and may claim from it).
    escalation_queue: str = DEFAULT_ESCALATION_QUEUE
    #: None = 7 × 24.
    business_hours: BusinessHours | None = None
    #: The appeal process: progress updates, materials reminders, refund approval.
    progress: ProgressPolicy = msgspec.field(default_factory=ProgressPolicy)
    materials: MaterialsPolicy = msgspec.field(default_factory=MaterialsPolicy)
    refunds: RefundPolicy = msgspec.field(default_factory=RefundPolicy)

    def validate(self) -> list[str]:
        problems = []
        if "default" not in self.first_response_seconds:
            problems.append("first_response_seconds: a 'default' entry is required")
        if not re.fullmatch(QUEUE_NAME, self.escalation_queue):
            problems.append("escalation_queue: a queue name (lowercase letters, digits, _ and -; up to 40)")
        if self.business_hours is not None:
            try:
                self.business_hours.zone()
            except (ZoneInfoNotFoundError, ValueError):
                problems.append(f"business_hours.timezone: unknown time zone {self.business_hours.timezone!r}")
            if self.business_hours.start >= self.business_hours.end:
                problems.append("business_hours: start must be before end")
            if not self.business_hours.days:
                problems.append("business_hours.days: at least one working day")
        problems.extend(self.progress.validate())
        problems.extend(self.refunds.validate())
        return problems

    def _after(self, start: datetime, seconds: float) -> datetime:
        if self.business_hours is None:
            return start + timedelta(seconds=seconds)
        return self.business_hours.add(start, seconds)

    def _factor(self, tier: str | None) -> float:
        return self.tier_factor.get(tier or "", 1.0)

    def first_response_allowance(self, channel: str, category: str, tier: str | None,
                                 override: int | None = None) -> float:
        seconds = override or self.first_response_by_category.get(category) or self.first_response_seconds.get(
            channel, self.first_response_seconds.get("default", 60))
        return seconds * self._factor(tier)

    def resolution_allowance(self, formal: bool, tier: str | None, override: int | None = None) -> float:
        seconds = override or (self.formal_resolution_seconds if formal else self.resolution_seconds)
        return seconds * self._factor(tier)

    def deadline(self, kind: str, start: datetime, allowance: float, *, level: int = 1) -> Deadline:
        due = self._after(start, allowance)
        warn = self._after(start, allowance * self.warn_fraction) if self.warn_fraction else None
        return Deadline(kind=kind, due=due, warn_at=warn, level=level)

    def in_business_hours(self, moment: datetime) -> bool:
        return True if self.business_hours is None else self.business_hours.contains(moment)

    def for_new(self, complaint: Complaint, start: datetime, *, first_override: int | None = None,
                resolution_override: int | None = None) -> list[Deadline]:
        return [
            self.deadline(FIRST_RESPONSE, start, self.first_response_allowance(
                complaint.channel, complaint.category, complaint.customer_tier, first_override)),
            self.deadline(RESOLUTION, start, self.resolution_allowance(
                complaint.formal_complaint, complaint.customer_tier, resolution_override)),
        ]

    def next_level(self, breached: Deadline, now: datetime) -> Deadline | None:
        """The escalation deadline that starts when ``breached`` passes, if the policy has one."""
        steps = self.escalation_seconds
        if breached.level > len(steps):
            return None
        return self.deadline(f"escalation_{breached.level + 1}", now, steps[breached.level - 1],
                             level=breached.level + 1)


def timer_members(complaint_id: str, deadline: Deadline) -> dict[str, int]:
    """The timer a running deadline needs now (member → due ms): its warning while that is still
    to come, else its due time."""
    if deadline.state != "running":
        return {}
    base = f"{complaint_id}|{deadline.kind}"
    if deadline.warn_at is not None and not deadline.warned:
        return {f"{base}|warn|{deadline.gen}": dt_to_ms(deadline.warn_at)}
    return {f"{base}|due|{deadline.gen}": dt_to_ms(deadline.due)}


def parse_member(member: str) -> tuple[str, str, str, int] | None:
    parts = member.split("|")
    if len(parts) != 4 or not parts[3].isdigit():
        return None
    return parts[0], parts[1], parts[2], int(parts[3])


_policy_decoder = msgspec.json.Decoder(DeadlinePolicy)


def decode_policy(data: bytes) -> DeadlinePolicy:
    return _policy_decoder.decode(data)
