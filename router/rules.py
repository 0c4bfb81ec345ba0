"""Routing rules that supervisors own: an ordered list of rules and a default.

**First match wins**: rules are tried top to bottom; the first whose every condition holds
decides the skill queue (and may set the priority, deadline overrides and tags); when none
matches, ``default`` decides. A condition left out does not constrain.

Conditions: ``categories``, ``formal``, ``channels``, ``languages``, ``amount_min`` /
``amount_max`` (decimal strings, inclusive), ``currencies``, ``tiers``, ``keywords`` (any of
them in the text, case-insensitive), ``regex`` (searched in the text), ``business_hours``
(true: only inside the deadline policy's business hours; false: only outside), and
``repeat_count_min`` (re-evaluated when a repeat report joins a case).

Targets: ``skill`` (one of the rule set's ``queues``), ``priority`` (0–9, higher first; else the
category's default), ``priority_boost``, ``first_response_seconds`` / ``resolution_seconds``
(deadline overrides), ``tags``.

**Triage** (optional ``triage`` section, e.g. ``{"below": 0.55, "queue": "triage"}``): a
complaint the learned categoriser is less sure of than ``below`` goes to ``queue`` (one of the
rule set's queues), tagged ``triage``, before any rule is tried; an agent there corrects the
category, which routes it by the rules. A category given by a hint, a classifier plugin, the
keyword rules or an agent has no confidence and is never triaged. Versioned with the rules, and
replayed in dry runs.

The same structs read and write JSON and TOML (``to_toml`` / ``load_file``).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import msgspec

from normalizer.schema import RouteDecision
from normalizer.categories import CATEGORIES
from router.routing import DEFAULT_TABLE, FORMAL_PRIORITY_BOOST, MAX_PRIORITY

_NAME = r"^[a-z0-9][a-z0-9_-]{0,39}$"
Name = Annotated[str, msgspec.Meta(pattern=_NAME)]


class Condition(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    categories: list[str] | None = None
    formal: bool | None = None
    channels: list[str] | None = None
    languages: list[str] | None = None
    amount_min: str | None = None
    amount_max: str | None = None
    currencies: list[str] | None = None
    tiers: list[str] | None = None
    keywords: list[Annotated[str, msgspec.Meta(min_length=1, max_length=100)]] | None = None
    regex: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    business_hours: bool | None = None
    repeat_count_min: Annotated[int, msgspec.Meta(ge=0)] | None = None

    def is_empty(self) -> bool:
        return not msgspec.structs.asdict(self) or all(v is None for v in msgspec.structs.asdict(self).values())


class Target(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    skill: str
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] | None = None
    priority_boost: Annotated[int, msgspec.Meta(ge=-9, le=9)] = 0
    first_response_seconds: Annotated[int, msgspec.Meta(ge=1)] | None = None
    resolution_seconds: Annotated[int, msgspec.Meta(ge=1)] | None = None
    tags: list[Annotated[str, msgspec.Meta(pattern=_NAME)]] = []


class Rule(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    id: Name
    then: Target
    when: Condition = msgspec.field(default_factory=Condition)
    description: Annotated[str, msgspec.Meta(max_length=500)] = ""


class Triage(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Complaints the categoriser is less sure of than ``below`` go to ``queue``."""

    below: Annotated[float, msgspec.Meta(gt=0, le=1)]
    queue: Name
    priority: Annotated[int, msgspec.Meta(ge=0, le=9)] | None = None


#: The tag a triaged complaint carries, and the rule name its decision records.
TRIAGE = "triage"


class RuleSet(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    #: The skill queues these rules route to (queues exist because a rule set names them).
    queues: list[Name]
    rules: list[Rule] = []
    default: Target | None = None
    triage: Triage | None = None


class StoredVersion(msgspec.Struct, kw_only=True):
    version: int
    rules: RuleSet
    by: str
    at: datetime
    reason: str = ""
    rollback_of: int | None = None


@dataclass(frozen=True)
class Problem:
    rule: str
    field: str
    problem: str

    def as_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "field": self.field, "problem": self.problem}


def builtin_rules() -> RuleSet:
    """Version 0: the built-in table as a rule set (category → queue; formal +2 via the engine)."""
    queues = sorted({skill for skill, _ in DEFAULT_TABLE.values()})
    rules = [Rule(id=f"category-{cat.replace('_', '-')}", when=Condition(categories=[cat]),
                  then=Target(skill=skill)) for cat, (skill, _) in DEFAULT_TABLE.items() if cat != "other"]
    return RuleSet(queues=queues, rules=rules, default=Target(skill=DEFAULT_TABLE["other"][0]))


# -- validation -----------------------------------------------------------------------------


def _decimal(value: str | None, rule: str, field: str, problems: list[Problem]) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        problems.append(Problem(rule, field, f"{value!r} is not a decimal amount"))
        return None
    if not number.is_finite() or number < 0:
        problems.append(Problem(rule, field, "an amount is a finite number ≥ 0"))
        return None
    return number


def _check_target(target: Target, name: str, field: str, queues: set[str], problems: list[Problem]) -> None:
    if target.skill not in queues:
        problems.append(Problem(name, f"{field}.skill", f"unknown skill queue {target.skill!r} "
                                f"(the rule set's queues: {', '.join(sorted(queues)) or 'none'})"))


def validate(rule_set: RuleSet) -> list[Problem]:
    """Every problem, each named by rule and field; empty when the rule set may take effect."""
    problems: list[Problem] = []
    queues = set(rule_set.queues)
    if not rule_set.queues:
        problems.append(Problem("queues", "queues", "at least one skill queue"))
    if len(queues) != len(rule_set.queues):
        problems.append(Problem("queues", "queues", "a queue is named twice"))
    if rule_set.default is None:
        problems.append(Problem("default", "default", "a default target is required (where nothing else matches)"))
    else:
        _check_target(rule_set.default, "default", "default", queues, problems)
    if rule_set.triage is not None and rule_set.triage.queue not in queues:
        problems.append(Problem(TRIAGE, "triage.queue", f"unknown skill queue {rule_set.triage.queue!r} "
                                f"(the rule set's queues: {', '.join(sorted(queues)) or 'none'})"))
    seen: set[str] = set()
    for n, rule in enumerate(rule_set.rules):
        name = rule.id or f"#{n + 1}"
        if rule.id in seen:
            problems.append(Problem(name, "id", "another rule has this id"))
        seen.add(rule.id)
        _check_target(rule.then, name, "then", queues, problems)
        w = rule.when
        for field, values, allowed in (("when.categories", w.categories, set(CATEGORIES)),
                                       ("when.languages", w.languages, {"zh", "en"})):
            for value in values or ():
                if value not in allowed:
                    problems.append(Problem(name, field, f"unknown value {value!r} (one of {', '.join(sorted(allowed))})"))
        for field, values in (("when.categories", w.categories), ("when.channels", w.channels),
                              ("when.languages", w.languages), ("when.currencies", w.currencies),
                              ("when.tiers", w.tiers), ("when.keywords", w.keywords)):
            if values is not None and not values:
                problems.append(Problem(name, field, "an empty list matches nothing: leave the condition out"))
        for value in w.currencies or ():
            if not re.fullmatch(r"[A-Z]{3}", value):
                problems.append(Problem(name, "when.currencies", f"{value!r} is not an ISO 4217 code"))
        low = _decimal(w.amount_min, name, "when.amount_min", problems)
        high = _decimal(w.amount_max, name, "when.amount_max", problems)
        if low is not None and high is not None and low > high:
            problems.append(Problem(name, "when.amount_min", f"impossible range: {low} > {high}"))
        if w.regex is not None:
            try:
                re.compile(w.regex)
            except re.error as exc:
                problems.append(Problem(name, "when.regex", f"bad regular expression: {exc}"))
    problems.extend(_unreachable(rule_set))
    return problems


def _covers(a: Condition, b: Condition) -> bool:
    """Whether every message ``b`` matches is matched by ``a`` too (conservative: ``True`` only
    when that is certain)."""
    for field in ("categories", "channels", "languages", "currencies", "tiers"):
        mine, theirs = getattr(a, field), getattr(b, field)
        if mine is not None and (theirs is None or not set(theirs) <= set(mine)):
            return False
    for field in ("formal", "business_hours"):
        if getattr(a, field) is not None and getattr(a, field) != getattr(b, field):
            return False
    if a.keywords is not None:
        if b.keywords is None or not {k.lower() for k in b.keywords} <= {k.lower() for k in a.keywords}:
            return False
    if a.regex is not None and a.regex != b.regex:
        return False
    if a.repeat_count_min is not None and (b.repeat_count_min or 0) < a.repeat_count_min:
        return False
    try:
        if a.amount_min is not None and (b.amount_min is None or Decimal(b.amount_min) < Decimal(a.amount_min)):
            return False
        if a.amount_max is not None and (b.amount_max is None or Decimal(b.amount_max) > Decimal(a.amount_max)):
            return False
    except InvalidOperation:
        return False
    return True


def _unreachable(rule_set: RuleSet) -> list[Problem]:
    problems = []
    for i, rule in enumerate(rule_set.rules):
        for earlier in rule_set.rules[:i]:
            if _covers(earlier.when, rule.when):
                kind = "catch-all" if earlier.when.is_empty() else "broader"
                problems.append(Problem(rule.id, "when", f"unreachable: every message it matches is taken first "
                                        f"by the {kind} rule {earlier.id!r}"))
                break
    return problems


# -- decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What a routing decision looks at."""

    category: str
    formal: bool
    channel: str
    language: str
    text: str
    amount: Decimal | None = None
    currency: str | None = None
    tier: str | None = None
    repeat_count: int = 0
    in_business_hours: bool = True
    #: The learned categoriser's confidence in ``category``; ``None``: not the model's guess.
    confidence: float | None = None


@dataclass(frozen=True)
class Decision:
    skill: str
    priority: int
    rule: str
    version: int
    tags: tuple[str, ...] = ()
    first_response_seconds: int | None = None
    resolution_seconds: int | None = None

    def as_route(self) -> RouteDecision:
        return RouteDecision(skill=self.skill, priority=self.priority, rule=self.rule, version=str(self.version))


class _Compiled:
    __slots__ = ("rule", "categories", "formal", "channels", "languages", "low", "high", "currencies", "tiers",
                 "keywords", "regex", "business_hours", "repeat_min")

    def __init__(self, rule: Rule) -> None:
        w = rule.when
        self.rule = rule
        self.categories = frozenset(w.categories) if w.categories is not None else None
        self.formal = w.formal
        self.channels = frozenset(w.channels) if w.channels is not None else None
        self.languages = frozenset(w.languages) if w.languages is not None else None
        self.low = Decimal(w.amount_min) if w.amount_min is not None else None
        self.high = Decimal(w.amount_max) if w.amount_max is not None else None
        self.currencies = frozenset(w.currencies) if w.currencies is not None else None
        self.tiers = frozenset(w.tiers) if w.tiers is not None else None
        self.keywords = tuple(k.lower() for k in w.keywords) if w.keywords is not None else None
        self.regex = re.compile(w.regex) if w.regex is not None else None
        self.business_hours = w.business_hours
        self.repeat_min = w.repeat_count_min

    def matches(self, f: Facts, lowered: list[str]) -> bool:
        # cheapest tests first; text tests last
        if self.categories is not None and f.category not in self.categories:
            return False
        if self.formal is not None and f.formal != self.formal:
            return False
        if self.channels is not None and f.channel not in self.channels:
            return False
        if self.languages is not None and f.language not in self.languages:
            return False
        if self.tiers is not None and f.tier not in self.tiers:
            return False
        if self.repeat_min is not None and f.repeat_count < self.repeat_min:
            return False
        if self.business_hours is not None and f.in_business_hours != self.business_hours:
            return False
        if self.currencies is not None and f.currency not in self.currencies:
            return False
        if self.low is not None and (f.amount is None or f.amount < self.low):
            return False
        if self.high is not None and (f.amount is None or f.amount > self.high):
            return False
        if self.keywords is not None:
            if not lowered:
                lowered.append(f.text.lower())
            if not any(k in lowered[0] for k in self.keywords):
                return False
        if self.regex is not None and not self.regex.search(f.text):
            return False
        return True


class Engine:
    """A compiled rule set of one version."""

    def __init__(self, rule_set: RuleSet, version: int) -> None:
        self.rule_set = rule_set
        self.version = version
        self.compiled = [_Compiled(r) for r in rule_set.rules]

    def decide(self, facts: Facts) -> Decision:
        triage = self.rule_set.triage
        if triage is not None and facts.confidence is not None and facts.confidence < triage.below:
            return self._decision(Target(skill=triage.queue, priority=triage.priority, tags=[TRIAGE]), TRIAGE, facts)
        lowered: list[str] = []
        for c in self.compiled:
            if c.matches(facts, lowered):
                return self._decision(c.rule.then, c.rule.id, facts)
        assert self.rule_set.default is not None
        return self._decision(self.rule_set.default, "default", facts)

    def _decision(self, target: Target, rule_id: str, facts: Facts) -> Decision:
        base = DEFAULT_TABLE.get(facts.category, DEFAULT_TABLE["other"])[1]
        priority = target.priority if target.priority is not None else base
        if facts.formal and target.priority is None:
            priority += FORMAL_PRIORITY_BOOST
        priority = max(0, min(MAX_PRIORITY, priority + target.priority_boost))
        return Decision(skill=target.skill, priority=priority, rule=rule_id, version=self.version,
                        tags=tuple(target.tags), first_response_seconds=target.first_response_seconds,
                        resolution_seconds=target.resolution_seconds)


# -- files ----------------------------------------------------------------------------------

_rules_decoder = msgspec.json.Decoder(RuleSet)


def decode_json(data: bytes) -> RuleSet:
    return _rules_decoder.decode(data)


def load_file(path: Path) -> RuleSet:
    """A rule set from a .json or .toml file (msgspec validates the shapes)."""
    data = path.read_bytes()
    if path.suffix.lower() == ".toml":
        return msgspec.convert(tomllib.loads(data.decode()), RuleSet)
    return decode_json(data)


def to_toml(rule_set: RuleSet) -> str:
    """The rule set as TOML (the same shape as the JSON)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    data = msgspec.to_builtins(rule_set)
    lines = [f"queues = {value(data['queues'])}", ""]
    for section in ("default", "triage"):
        if section in data:
            lines.append(f"[{section}]")
            lines += [f"{k} = {value(v)}" for k, v in data[section].items()]
            lines.append("")
    for rule in data.get("rules", []):
        lines.append("[[rules]]")
        lines += [f"{k} = {value(v)}" for k, v in rule.items() if k not in ("when", "then")]
        lines.append("[rules.when]")
        lines += [f"{k} = {value(v)}" for k, v in rule.get("when", {}).items()]
        lines.append("[rules.then]")
        lines += [f"{k} = {value(v)}" for k, v in rule["then"].items()]
        lines.append("")
    return "\n".join(lines)
