"""Amounts and transaction ids in what customers write (zh / en)."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

CURRENCIES = frozenset({"CNY", "HKD", "MOP", "TWD", "USD", "EUR", "GBP", "JPY", "SGD", "AUD", "CAD", "KRW",
                        "THB", "MYR"})
_MAX = Decimal(10) ** 12
_NUM = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?![\d.])"
_PREFIX = [
    (r"(?:HK\$|HKD\s*)", "HKD"), (r"(?:US\$|USD\s*)", "USD"), (r"(?:MOP\s*\$?)", "MOP"),
    (r"(?:NT\$|TWD\s*)", "TWD"), (r"(?:S\$|SGD\s*)", "SGD"),
    (r"(?:[¥￥]|RMB\s*|CNY\s*|人民币\s*)", "CNY"), (r"\$", "USD"), (r"(?:€|EUR\s*)", "EUR"),
    (r"(?:£|GBP\s*)", "GBP"), (r"(?:JPY\s*)", "JPY"),
]
_SUFFIX = [(r"\s*(?:元|块|人民币|RMB|CNY)", "CNY"), (r"\s*(?:港币|港元|HKD)", "HKD"), (r"\s*(?:美元|USD)", "USD"),
           (r"\s*(?:欧元|EUR)", "EUR")]
_PREFIX_RE = [(re.compile(r"(?<![A-Za-z0-9])" + p + r"\s*" + _NUM), c) for p, c in _PREFIX]
_SUFFIX_RE = [(re.compile(r"(?<![\d.,])" + _NUM + s), c) for s, c in _SUFFIX]

_TXN_LABELLED = re.compile(
    r"(?:交易号|交易单号|订单号|订单编号|流水号|商户单号|支付单号|order\s*(?:no\.?|number|id|#)|"
    r"transaction\s*(?:id|no\.?|number|#)|txn\s*(?:id|no\.?)?|reference\s*(?:no\.?|number)?)"
    r"\s*[:：#]?\s*([A-Za-z0-9][A-Za-z0-9-]{5,40})",
    re.IGNORECASE,
)
_TXN_BARE = re.compile(r"(?<![A-Za-z0-9])(T\d{12,30})(?![A-Za-z0-9])")


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _to_decimal(integer: str, fraction: str | None) -> Decimal | None:
    try:
        value = Decimal(integer.replace(",", "") + ("." + fraction if fraction else ""))
    except InvalidOperation:
        return None
    return value if 0 < value < _MAX else None


def extract_amount(text: str) -> tuple[str, str] | None:
    text = _fold(text)
    found: list[tuple[int, Decimal, str]] = []
    for regex, currency in _PREFIX_RE + _SUFFIX_RE:
        for m in regex.finditer(text):
            value = _to_decimal(m.group(1), m.group(2))
            if value is not None:
                found.append((m.start(), value, currency))
    if not found:
        return None
    _, value, currency = min(found, key=lambda f: f[0])
    return format_amount(value), currency


def extract_transaction_id(text: str) -> str | None:
    text = _fold(text)
    m = _TXN_LABELLED.search(text)
    if m and any(ch.isdigit() for ch in m.group(1)):
        return m.group(1).upper()
    m = _TXN_BARE.search(text)
    return m.group(1).upper() if m else None


_AMOUNT_INPUT = re.compile(r"^\d{1,12}(?:\.\d{1,2})?$")


def parse_amount(value: str) -> Decimal:
    value = value.strip()
    if not _AMOUNT_INPUT.match(value):
        raise ValueError(f"{value!r} is not a non-negative decimal with at most 2 decimal places (e.g. \"128.50\")")
    return Decimal(value)


def format_amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))
