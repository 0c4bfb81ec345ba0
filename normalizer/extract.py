"""Amounts and transaction ids in what customers write (zh / en), in digits or in words.

Amounts: a currency sign or code before digits ("¥128.50", "HK$1,000", "RMB 1,280.00"), a unit
after them ("50块", "300 dollars"), Chinese numerals ("六十八块八", "两千五"), English words ("a
hundred dollars", "charged eight seventy five") and, in Chinese text, a plain decimal ("退我58.8").
``extract_amounts`` lists them all (a repeat report is recognised by an amount said again in other
words); ``extract_amount`` is the first.

Transaction ids: labelled ("订单号", "交易单号", "ref", "order #", ...), a "T" and 12+ digits, a code of
letters and 5+ digits ("EB-77120934"), dashed digit groups ("7730-2291-0046") or 12+ digits that are
no card, ID or phone number; read out digit by digit too ("T 二零二六零三幺八 五五幺二零七", "eight
eight two three one", "T as in Tom ..."). ``transaction_key`` is the form two mentions of one id
share (digits read out written as digits, no spaces or dashes, upper case).
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import NamedTuple

from normalizer.checksums import china_id_ok, luhn_ok
from normalizer.numerals import chinese_amounts, digit_view, english_amounts
from normalizer.text import TEXT_MEMO, first_char_guard

CURRENCIES = frozenset({"CNY", "HKD", "MOP", "TWD", "USD", "EUR", "GBP", "JPY", "SGD", "AUD", "CAD", "KRW",
                        "THB", "MYR", "PHP"})
_MAX = Decimal(10) ** 12
_NUM = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?!\d|\.\d|,\d)(?P<k>[kK](?![A-Za-z])|万)?"
# Each currency's prefix and unit pattern, with what a text must hold for it to find anything (a
# unit's needles in lower case, looked for in the text in lower case; "qu" for "quid": a dotted or
# dotless i is an "i" to the case-blind pattern, not to ``str.lower``): a few substring tests skip
# what the pattern would scan the whole text for (a case-blind pattern ~5 µs a text).
_PREFIX = [
    (r"(?:HK\$|HKD\s*)", "HKD", ("HK$", "HKD")), (r"(?:US\$|USD\s*)", "USD", ("US$", "USD")),
    (r"(?:MOP\s*\$?)", "MOP", ("MOP",)), (r"(?:NT\$|TWD\s*)", "TWD", ("NT$", "TWD")),
    (r"(?:S\$|SGD\s*)", "SGD", ("S$", "SGD")), (r"(?:CA\$|C\$|CAD\s*)", "CAD", ("CA$", "C$", "CAD")),
    (r"(?:A\$|AUD\s*)", "AUD", ("A$", "AUD")), (r"(?:₱|PHP\s*)", "PHP", ("₱", "PHP")),
    (r"(?:[¥￥]|RMB\s*|CNY\s*|人民币\s*)", "CNY", ("¥", "￥", "RMB", "CNY", "人民币")), (r"\$", "USD", ("$",)),
    (r"(?:€|EUR\s*)", "EUR", ("€", "EUR")), (r"(?:£|GBP\s*)", "GBP", ("£", "GBP")), (r"(?:JPY\s*)", "JPY", ("JPY",)),
]
_SUFFIX = [(r"\s*(?:元|块|人民币|RMB|CNY)", "CNY", ("元", "块", "人民币", "rmb", "cny")),
           (r"\s*(?:港币|港元|HKD|蚊)", "HKD", ("港币", "港元", "hkd", "蚊")),
           (r"\s*(?:美元|美金|USD|dollars?\b|bucks?\b)", "USD", ("美元", "美金", "usd", "dollar", "buck")),
           (r"\s*(?:欧元|EUR|euros?\b)", "EUR", ("欧元", "eur")),
           (r"\s*(?:英镑|GBP|pounds?\b|quid\b)", "GBP", ("英镑", "gbp", "pound", "qu"))]
# Each behind a look-ahead for its first characters, and run only on a text that has a digit and
# one of its needles: the same matches, ~0.09 -> ~0.03 ms a text.
_PREFIX_RE = [(re.compile(first_char_guard(r"(?<![A-Za-z0-9])" + p + r"\s*" + _NUM)), needles, c)
              for p, c, needles in _PREFIX]
_SUFFIX_RE = [(re.compile(first_char_guard(r"(?<![\d.,])" + _NUM + s, re.IGNORECASE), re.IGNORECASE), needles, c)
              for s, c, needles in _SUFFIX]
_DIGIT = re.compile(r"\d")
# a plain decimal in Chinese text is money ("全家买饭团58.8", "退款 47.6"), unless it is a version
# or a rate
_BARE_DECIMAL = re.compile(r"(?<![A-Za-z0-9_.,$¥￥£€])(\d{1,7})\.(\d{1,2})"
                           r"(?!\d|\.\d|\s*(?:%|％|折|倍|版|GB|MB|km|寸|分))")
_VERSION_BEFORE = re.compile(r"(?:ios|android|v|ver|version|update|updated|upgrade|版本?|系统|鸿蒙|harmonyos|miui|更新|升级|"
                             r"\d\.)\s*(?:到|至|to)?\s*$", re.IGNORECASE)
# a plain whole number in Chinese text, right after a word about money ("付了456", "转错的那1500",
# "余额还是1050"), unless it counts something else ("3次", "10天", "3月")
_BARE_INTEGER = re.compile(r"(?<=[付扣转充值提现退款收花交存取汇还赔欠额费价钱共计各每次遍笔那的了是有剩到为])\s?([1-9]\d{0,4})(万)?"
                           r"(?![\d.:/]|,\d|\s?\d|\s?(?:%|％|次|天|个|年|月|日|号|点|岁|人|条|张|遍|周|倍|分钟|小时|笔|回|户|页|"
                           r"秒|期|多|来|余|楼|米|[A-Za-z]|-\d))")
# ... or right before one ("房租3200扣了两次", "239退款还是没到")
_BARE_INTEGER_BEFORE = re.compile(r"(?<![A-Za-z0-9_.,:/+-])([1-9]\d{0,4})(万)?\s?"
                                  r"(?=扣了|扣咗|付了|退款|退了|的退款|那笔|那个|没到|没退|还没)")
_NUMBER_LABEL = re.compile(r"(?:号|码|號|碼|账户|帳戶|id|no\.?)\s*(?:是|为|:|：)?\s*$", re.IGNORECASE)  # "尾号是8899" is no amount
_HOTLINE = re.compile(r"^(?:123\d\d|95\d{3}|110|120|119)$")  # regulators' and banks' hotlines are no amounts
_CJK = re.compile(r"[\u3400-\u9fff]")

_TXN_LABEL = (r"(?:交易单号|交易编号|交易號|交易编码|交易号|订单号|訂單號|订单编号|流水号|商户单号|支付单号|退款单号|参考编号|"
              r"參考編號|编号|編號|单号|單號|订单|訂單|(?<![a-z])(?:order\s*(?:no\.?|number|id|#)?|"
              r"transaction\s*(?:id|no\.?|number|#|ref)?|txn\s*(?:id|no\.?|ref|#)?|"
              r"ref(?:erence)?\s*(?:no\.?|number|#)?|"
              r"(?:pmt|payment)\s*(?:id|no\.?|number|#|ref))(?![a-z]))")
# a further group of digits of the same id ("202602284471 09"), not a count after it ("88231 10 days")
_ID_GROUP = (r"(?: \d{2,}(?![A-Za-z0-9]|\s*(?:days?|hours?|weeks?|months?|years?|mins?|minutes?|times|天|日|号|小时|分钟|"
             r"个|次|笔|块|元)))")
_TXN_SEPARATOR = r"(?:\s*(?:是|为|:|：|#|(?<![a-z])(?:is|was|like|uh|um|number|no\.?)(?![a-z])))*\s*"
# the id patterns behind look-aheads for their first characters (the same matches, ~0.01 ms less a text)
_TXN_LABELLED = re.compile(first_char_guard(
    _TXN_LABEL + _TXN_SEPARATOR +
    r"((?:[A-Za-z]{1,4}(?: [A-Za-z]{1,4}){0,2}[ -](?=\d))?[A-Za-z0-9][A-Za-z0-9-]{4,40}" + _ID_GROUP + r"{0,4})"
    r"(?![A-Za-z0-9@])", re.IGNORECASE), re.IGNORECASE)
_TXN_BARE = re.compile(first_char_guard(r"(?<![A-Za-z0-9])(T ?\d{12,30})(?![A-Za-z0-9])"))
# a code of letters and digits ("EB-77120934", "TU20260311-0042", "20260318HK00077", "#A77388"), 5+
# digits; letters read out one by one before digits ("P X 77120") join them
_TXN_CODE = re.compile(first_char_guard(r"(?<![A-Za-z0-9@./_-])((?:(?=[A-Z0-9-]*[A-Z])(?=(?:[A-Z-]*\d){5})[A-Z0-9]+"
                                         r"(?:-[A-Z0-9]+)*|(?:[A-Z] ){1,3}\d{5,})" + _ID_GROUP + r"*)"
                                         r"(?![A-Za-z0-9@/_-]|\.\w)"))
_NOT_TXN_BEFORE = re.compile(r"(?:case|ticket|conf(?:irmation)?|工单|投诉单)\s*(?:no\.?|number|#|号)?\s*#?\s*$",
                             re.IGNORECASE)
# digits in dashed groups ("7730-2291-0046"), 10+ digits, that are no phone or card number
_TXN_DASHED = re.compile(first_char_guard(r"(?<![A-Za-z0-9+-])(\d{4,5}(?:-\d{4,5}){2,3})(?![A-Za-z0-9-])"))
_LONG_DIGITS = re.compile(first_char_guard(r"(?<![A-Za-z0-9.,+-])(\d{12,30})(?![A-Za-z0-9.,-])"))
_CASE_NUMBER = re.compile(r"^C-?\d{8}-?\d{6}$")


class FoundAmount(NamedTuple):
    start: int
    end: int
    value: Decimal
    currency: str
    kind: str  # "marked" (a sign, code or unit), "words", "plain" (a decimal in Chinese text)


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _to_decimal(integer: str, fraction: str | None, scale: str | None = None) -> Decimal | None:
    try:
        value = Decimal(integer.replace(",", "") + ("." + fraction if fraction else ""))
    except InvalidOperation:
        return None
    if scale:
        value *= 10000 if scale == "万" else 1000
    return value if 0 <= value < _MAX else None


def _overlaps(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and start < e for s, e in spans)


def extract_amounts(text: str) -> list[FoundAmount]:
    """Every amount in ``text``, in order (a value may appear more than once)."""
    return list(_amounts(text))


@lru_cache(maxsize=TEXT_MEMO)  # one message's text is read for its first amount, its repeat check and its case
def _amounts(text: str) -> tuple[FoundAmount, ...]:
    text = _fold(text)
    found: list[FoundAmount] = []
    spans: list[tuple[int, int]] = []

    def add(start: int, end: int, value: Decimal, currency: str, kind: str) -> None:
        if 0 <= value < _MAX and not _overlaps(spans, start, end):
            found.append(FoundAmount(start, end, value, currency, kind))
            spans.append((start, end))

    digits = _DIGIT.search(text) is not None  # every pattern but the words' needs one
    for regex, needles, currency in _PREFIX_RE if digits else ():
        if not any(needle in text for needle in needles):
            continue
        for m in regex.finditer(text):
            value = _to_decimal(m.group(1), m.group(2), m.group("k"))
            if value is not None:
                add(m.start(), m.end(), value, currency, "marked")
    for s in chinese_amounts(text):  # before the digit suffixes: "5毛" is 0.50, not 5
        add(s.start, s.end, s.value, s.currency, "words")
    lowered = text.lower() if digits else ""
    for regex, needles, currency in _SUFFIX_RE if digits else ():
        if not any(needle in lowered for needle in needles):
            continue
        for m in regex.finditer(text):
            value = _to_decimal(m.group(1), m.group(2), m.group("k"))
            if value is not None:
                add(m.start(), m.end(), value, currency, "marked")
    for s in english_amounts(text):
        add(s.start, s.end, s.value, s.currency, "words")
    if digits and _CJK.search(text):
        for m in _BARE_DECIMAL.finditer(text):
            if _VERSION_BEFORE.search(text[max(0, m.start() - 12):m.start()]):
                continue
            if m.group(2) == "0":
                continue  # "9.0" is a version; money is written "9.00" or "9"
            value = _to_decimal(m.group(1), m.group(2))
            if value is not None:
                add(m.start(), m.end(), value, "CNY", "plain")
        for regex in (_BARE_INTEGER, _BARE_INTEGER_BEFORE):
            for m in regex.finditer(text):
                if (_HOTLINE.match(m.group(1)) and not m.group(2)) or _NUMBER_LABEL.search(
                        text[max(0, m.start(1) - 6):m.start(1)]):
                    continue
                value = _to_decimal(m.group(1), None, m.group(2))
                if value is not None:
                    add(m.start(1), m.end(2) if m.group(2) else m.end(1), value, "CNY", "plain")
    found.sort()
    if found:  # a plain number or words take the currency the text names elsewhere
        named = [f.currency for f in found if f.kind == "marked"]
        if named:
            found = [f._replace(currency=named[0]) if f.kind != "marked" and f.currency in ("CNY", "USD")
                     and _default_currency(text, f) else f for f in found]
    return tuple(found)


def _default_currency(text: str, found: FoundAmount) -> bool:
    """Whether ``found``'s currency was a guess (no unit naming it)."""
    if found.kind == "plain":
        return True
    said = text[found.start:found.end].lower()
    return not any(u in said for u in ("块", "元", "人民币", "rmb", "yuan", "kuai", "dollar", "buck"))


def extract_amount(text: str) -> tuple[str, str] | None:
    """The first amount: (decimal string with two places, ISO 4217 currency)."""
    found = extract_amounts(text)
    if not found:
        return None
    return format_amount(found[0].value), found[0].currency


def transaction_key(value: str) -> str:
    """The form two mentions of one transaction id share: read-out digits as digits, no spaces,
    dashes or other marks, upper case ("tu20260311-0042" and "TU 20260311 0042" are one)."""
    return re.sub(r"[^0-9A-Z]", "", digit_view(_spelled(_fold(value))).text.upper())


def _clean_id(raw: str) -> str:
    raw = raw.strip()
    # "P X 77120", "TR 99803456" (letters read out before the digits): the letters join the digits
    raw = re.sub(r"^([A-Za-z]{1,4}(?: [A-Za-z]{1,4}){0,2}) (?=\d)", lambda m: m.group(1).replace(" ", ""), raw)
    raw = re.sub(r"^((?:[A-Za-z] )+)(?=[A-Za-z]?-?\d)", lambda m: m.group(1).replace(" ", ""), raw)
    head, *groups = raw.split(" ")
    # "202602284471 09" is one id read in groups; "88231 10" (a short id, then a count) is not
    groups = [g for g in groups if len(head) >= 8 or len(g) >= 3]
    return "".join([head, *groups]).upper()


def _personal(value: str) -> bool:

    digits = re.sub(r"\D", "", value)
    if len(value) == 18 and china_id_ok(value.upper()):
        return True
    return (13 <= len(digits) <= 19 and digits == value.replace("-", "").replace(" ", "") and luhn_ok(digits)) or bool(
        _PHONE_DIGITS.fullmatch(digits))


# digits that are a phone number with its country code (CN, UK, HK, TW, US)
_PHONE_DIGITS = re.compile(r"(?:86)?1[3-9]\d{9}|(?:44|0)7\d{9}|852[5-9]\d{7}|8869\d{8}|1[2-9]\d{9}")


_SPELLED = re.compile(r"(?<![A-Za-z])([A-Za-z]) as in [A-Za-z]+|\s+dash\s+(?=\S)", re.IGNORECASE)


def _spelled(text: str) -> str:
    """Letters spelled out on the phone ("T as in Tom") and "dash" written as they were meant."""
    lowered = text.lower()  # (a case-blind scan of every text costs ~10 µs; these tests ~0.3; a long s is an "s" to it)
    if " as " not in lowered and "dash" not in lowered and "ſ" not in text:
        return text
    return _SPELLED.sub(lambda m: m.group(1) or "-", text)


def transaction_spans(text: str, labelled_only: bool = False) -> list[tuple[int, int]]:
    """Where ``text`` names transaction ids (as written: digits read out are not looked at here);
    ``labelled_only``: only those a label names ("订单号 2026031188204417" is an order, whatever its
    digits)."""
    spans: list[tuple[int, int]] = []
    for m in _TXN_LABELLED.finditer(text):
        value = _clean_id(m.group(1))
        if (sum(ch.isdigit() for ch in value) >= 2 and not _CASE_NUMBER.match(value)
                and (labelled_only or not _personal(value))):
            spans.append(m.span(1))
    if labelled_only:
        return spans
    for regex in (_TXN_BARE, _TXN_CODE, _TXN_DASHED, _LONG_DIGITS):
        for m in regex.finditer(text):
            if not _personal(_clean_id(m.group(1))):
                spans.append(m.span(1))
    return spans


def extract_transaction_id(text: str) -> str | None:
    """The first transaction id named in ``text`` (upper case; digits read out written as digits)."""
    view = digit_view(_spelled(_fold(text))).text
    for m in _TXN_LABELLED.finditer(view):
        value = _clean_id(m.group(1))
        if (sum(ch.isdigit() for ch in value) >= (4 if len(value) < 6 else 2) and not _CASE_NUMBER.match(value)
                and not (len(value) == 18 and _personal(value))):
            return value
    candidates: list[tuple[int, str]] = []
    m = _TXN_BARE.search(view)
    if m:
        candidates.append((m.start(), m.group(1).replace(" ", "").upper()))
    for regex in (_TXN_CODE, _TXN_DASHED, _LONG_DIGITS):
        for m in regex.finditer(view):
            value = _clean_id(m.group(1))
            if (_CASE_NUMBER.match(value) or _personal(value)
                    or _NOT_TXN_BEFORE.search(view[max(0, m.start() - 20):m.start()])):
                continue
            candidates.append((m.start(), value))
            break
    return min(candidates)[1] if candidates else None


_AMOUNT_INPUT = re.compile(r"^\d{1,12}(?:\.\d{1,2})?$")


def parse_amount(value: str) -> Decimal:
    value = value.strip()
    if not _AMOUNT_INPUT.match(value):
        raise ValueError(f"{value!r} is not a non-negative decimal with at most 2 decimal places (e.g. \"128.50\")")
    return Decimal(value)


def format_amount(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))
