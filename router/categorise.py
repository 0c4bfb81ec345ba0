"""Categorising a complaint by zh/en keywords (shared/domain.md's taxonomy)."""

from __future__ import annotations

import re

import msgspec

from normalizer.categories import CATEGORIES

KEYWORDS: dict[str, tuple[str, ...]] = {
    "payment_amount": ("扣款", "重复扣", "扣了两次", "多扣", "金额不对", "退款", "没收到退款", "误付", "转错", "钱扣了",
                       "charged twice", "double charge", "double-charged", "duplicate charge", "wrong amount",
                       "refund", "paid by mistake", "overcharged", "charged but"),
    "transaction": ("交易失败", "付款失败", "支付失败", "交易争议", "商家", "交易记录", "转账失败",
                    "payment failed", "declined", "merchant", "dispute", "transaction history", "transaction failed"),
    "account_security": ("密码", "重置", "冻结", "解冻", "被盗", "盗刷", "异地登录", "验证码",
                         "password", "reset", "frozen", "locked", "hacked", "stolen", "unauthorized",
                         "unauthorised", "otp"),
    "fee_dispute": ("手续费", "服务费", "提现费", "减免", "fee", "fees", "service charge", "withdrawal fee", "waive"),
    "function_fault": ("闪退", "打不开", "更新", "升级", "兼容", "无法使用", "卡顿", "崩溃",
                       "crash", "crashes", "crashed", "crashing", "won't open", "update", "compatible", "bug", "error", "freezes"),
    "balance_query": ("余额", "查余额", "balance"),
}
PRECEDENCE = ("payment_amount", "transaction", "account_security", "fee_dispute", "function_fault", "balance_query")
# Money taken outweighs the surrounding story: "payment failed but the money was taken" is an
# amount appeal, not a failed transaction (shared/domain.md).
MONEY_WEIGHT = {"payment_amount": 2}
FORMAL = ("投诉", "曝光", "12315", "银保监", "金融监管", "i want to complain", "formal complaint", "file a complaint",
          "make a complaint", "escalate", "ombudsman", "regulator")


def _pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    parts = []
    for w in words:
        if w.isascii():
            parts.append(r"(?<![a-z])" + re.escape(w) + r"(?![a-z])")
        else:
            parts.append(re.escape(w))
    return re.compile("|".join(parts), re.IGNORECASE)


_RULES = {cat: _pattern(words) for cat, words in KEYWORDS.items()}
_FORMAL = _pattern(FORMAL)


class Categorisation(msgspec.Struct, frozen=True):
    category: str
    formal_complaint: bool
    matched: tuple[str, ...]
    source: str


def categorise(text: str, category_hint: str | None = None) -> Categorisation:
    formal = bool(_FORMAL.search(text))
    if category_hint in CATEGORIES:
        return Categorisation(category_hint, formal, (), "hint")
    best, best_hits, best_score = "other", (), 0
    for cat in PRECEDENCE:
        hits = tuple(m.group(0) for m in _RULES[cat].finditer(text))
        score = sum(len(h) for h in hits) * MONEY_WEIGHT.get(cat, 1)
        if score > best_score:
            best, best_hits, best_score = cat, hits, score
    if not best_hits:
        return Categorisation("other", formal, (), "default")
    return Categorisation(best, formal, best_hits, "keywords")
