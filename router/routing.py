"""The default routing table: which skill queue a complaint goes to, at what priority.

Until supervisors own the rules (versioned rule sets), this table is the rule set; a decision
records the rule that made it.
"""

from __future__ import annotations

from normalizer.schema import RouteDecision

#: category → (skill queue, base priority 0..9; higher is served first)
DEFAULT_TABLE: dict[str, tuple[str, int]] = {
    "payment_amount": ("payments", 6),
    "account_security": ("security", 6),
    "transaction": ("transactions", 5),
    "fee_dispute": ("fees", 4),
    "function_fault": ("tech", 4),
    "balance_query": ("general", 3),
    "other": ("general", 3),
}
FORMAL_PRIORITY_BOOST = 2
MAX_PRIORITY = 9


def route(category: str, formal_complaint: bool) -> RouteDecision:
    skill, priority = DEFAULT_TABLE.get(category, DEFAULT_TABLE["other"])
    rule = f"category:{category}" if category in DEFAULT_TABLE else "default"
    if formal_complaint:
        priority = min(MAX_PRIORITY, priority + FORMAL_PRIORITY_BOOST)
        rule += "+formal"
    return RouteDecision(skill=skill, priority=priority, rule=rule, version="builtin")
