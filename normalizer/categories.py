"""The desk's categories (shared/domain.md's taxonomy) and what a client's ``category_hint`` may be.

A client's hint is taken when it names a known category, otherwise ignored: the customer's words
are never refused over a hint. A message with a hint we do not know is accepted, categorised
from its text as if it had no hint, and the answer says so in a ``warnings`` list, so the client
can fix its hint without losing the message.
"""

from __future__ import annotations

CATEGORIES = ("account_security", "transaction", "payment_amount", "fee_dispute", "function_fault",
              "balance_query", "other")
CATEGORY_NAMES = {
    "account_security": {"zh": "账户安全", "en": "Account security"},
    "transaction": {"zh": "交易问题", "en": "Transaction"},
    "payment_amount": {"zh": "支付金额申诉", "en": "Payment amount appeal"},
    "fee_dispute": {"zh": "手续费争议", "en": "Fee dispute"},
    "function_fault": {"zh": "功能故障", "en": "App fault"},
    "balance_query": {"zh": "余额查询", "en": "Balance query"},
    "other": {"zh": "其他", "en": "Other"},
}

HINT_IGNORED = "category_hint_ignored"


def accept_category_hint(hint: str | None) -> tuple[str | None, list[dict[str, str]]]:
    """``(the hint to keep, warnings)``: the hint itself when it is a known category (or absent),
    else ``None`` and one warning naming the field and the allowed values."""
    if hint is None or hint in CATEGORIES:
        return hint, []
    return None, [{
        "code": HINT_IGNORED,
        "field": "category_hint",
        "detail": f"category_hint is not one of {', '.join(CATEGORIES)}; it was ignored and the message "
                  "is categorised from its text.",
    }]
