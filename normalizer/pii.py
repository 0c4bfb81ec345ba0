"""Personal data in free text: card numbers (Luhn-checked), Chinese resident ID numbers (check
digit), phone numbers and e-mail addresses, written or read out ("幺三八 零零一三 七七二一",
"plus one four one five ...", "priya dot natarajan at yahoo dot co dot uk").

Phone numbers of every region the desk sees: Chinese mobiles and landlines, and numbers written
the way people write them elsewhere ("(212) 555-0100", "07700 900000", "+852 5123 9087",
"0912-345-678", "6234 8871") through libphonenumber's matcher (regions CN, HK, TW, US, GB; only
valid numbers), run on the digit groups of a text only (a text without seven digits costs nothing).
US and UK numbers from the ranges set aside for fiction (555-01xx, 07700 900xxx) are no valid
numbers to libphonenumber but are shaped like phone numbers and masked too. A digit group that
is a transaction id, an amount, a date or a case number is not a phone number.

Two strengths:

- ``mask_pii`` is precise: it masks what really is one of those kinds and leaves transaction
  ids, amounts, dates and case numbers alone, so that list views and plugins keep what the case
  needs. ``find_pii`` tells where each one is.
- ``mask_text`` is for logs: everything ``mask_pii`` masks, and any further run of 7+ digits,
  and credentials in URLs. A log line may lose a harmless number; it never keeps a personal one.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, NamedTuple

import phonenumbers

from normalizer.checksums import china_id_ok, luhn_ok
from normalizer.extract import extract_amounts, transaction_spans
from normalizer.numerals import digit_view
from normalizer.text import TEXT_MEMO

CARD, ID_NUMBER, PHONE, EMAIL = "card", "id_number", "phone", "email"
KINDS = (CARD, ID_NUMBER, PHONE, EMAIL)

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13–19 digits, optionally grouped by spaces or dashes, not part of a longer word.
_CARD = re.compile(r"(?<![0-9A-Za-z_+-])\d(?:[ -]?\d){12,18}(?![0-9A-Za-z])")
# 18-character resident ID: 17 digits and a check character (digit or X).
_ID18 = re.compile(r"(?<![0-9A-Za-z_-])\d{17}[\dXx](?![0-9A-Za-z])")
# Phones: international (+ and 7–15 digits, optionally grouped), Chinese mobiles (1[3-9] + 9
# digits, optionally 86-prefixed or grouped 3-4-4), Chinese landlines (0 + area code + number).
_PHONE = re.compile(
    r"(?<![0-9A-Za-z_-])(?:"
    r"\+\d{1,3}[ -]?\(?\d{1,4}\)?(?:[ -]?\d{2,4}){2,4}"
    r"|(?:86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}"
    r"|0\d{2,3}[ -]?\d{7,8}"
    r")(?![0-9A-Za-z])"
)
# US and UK numbers as written (the fiction ranges libphonenumber calls invalid included), TW mobiles
_PHONE_SHAPES = re.compile(
    r"(?<![0-9A-Za-z_-])(?:"
    r"(?:\+?1[ .-]?)?\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|(?:\+?1[ .-])?\d{3}[.-]\d{3}[.-]\d{4}"
    r"|(?:\+?44[ ]?|0)7\d{3}[ ]?\d{3}[ ]?\d{3}"
    r"|09\d{2}[ -]?\d{3}[ -]?\d{3}"
    r")(?![0-9A-Za-z])"
)
# where libphonenumber is asked: a group of 7+ digits, with the spaces, dashes and brackets phone
# numbers are written with
_PHONE_CLUSTER = re.compile(r"(?<![0-9A-Za-z_])\+?\(?\d(?:[ ().-]{0,2}\d){6,16}(?![0-9A-Za-z])")
PHONE_REGIONS = ("CN", "HK", "TW", "US", "GB")
MAX_CLUSTERS = 20  # digit groups per text given to libphonenumber (bounded work on a text of many numbers)
# what is never a phone number, whatever its digits
_NOT_PHONE = re.compile(
    r"C-\d{8}-\d{6}"  # case numbers
    r"|\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?:[ T]\d{1,2}:\d{2}(?::\d{2})?)?"  # dates
    r"|\d{1,2}/\d{1,2}/\d{2,4}"
)
# e-mail addresses read out: "priya dot natarajan at yahoo dot co dot uk"
_SPOKEN_EMAIL = re.compile(
    r"(?<![A-Za-z0-9])(?!(?:something|someone|somebody|it|that|this|me|him|her|them|us|you|home|work|least|all|"
    r"once|first|last|the|an?)\s)[A-Za-z0-9]+(?:(?:\s+(?:dot|underscore|dash|hyphen)\s+|[._-])[A-Za-z0-9]+)*"
    r"\s+at\s+[A-Za-z0-9-]+(?:\s+dot\s+[A-Za-z0-9-]+)*\s+dot\s+"
    r"(?:com|net|org|edu|gov|co|uk|cn|hk|tw|sg|io|me|info|biz|us|jp|au|ca|de|fr|in|my|ph)(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_DIGIT = re.compile(r"\d")
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z_-])\+?\d(?:[ -]?\d){6,}[Xx]?(?![0-9A-Za-z])")
# Credentials that providers put in URLs: Telegram's /bot<token>/, access_token=... query values.
_SECRET = re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+|((?:access_token|secret|appsecret_proof)=)[^&\s\"']+")



class Found(NamedTuple):
    start: int
    end: int
    kind: str


def _protected(view_text: str) -> list[tuple[int, int]]:
    """Spans of ``view_text`` no phone number may take: transaction ids, amounts, dates, case numbers."""
    spans = [(m.start(), m.end()) for m in _NOT_PHONE.finditer(view_text)]
    spans.extend(transaction_spans(view_text))
    spans.extend((a.start, a.end) for a in extract_amounts(view_text) if a.kind == "marked")
    return spans


def _phones(view_text: str) -> list[tuple[int, int]]:
    """Spans of ``view_text`` that are phone numbers: the written shapes, then libphonenumber's
    matcher on each group of digits."""
    found = [(m.start(), m.end()) for regex in (_PHONE, _PHONE_SHAPES) for m in regex.finditer(view_text)
             if 7 <= sum(ch.isdigit() for ch in m.group(0)) <= 15]
    clusters = list(_PHONE_CLUSTER.finditer(view_text))
    if not clusters:
        return found
    protected: list[tuple[int, int]] | None = None
    for cluster in clusters[:MAX_CLUSTERS]:
        if any(s <= cluster.start() and cluster.end() <= e for s, e in found):
            continue
        # a little context: the matcher looks at what stands around a number
        lo, hi = max(0, cluster.start() - 1), min(len(view_text), cluster.end() + 1)
        piece = view_text[lo:hi]
        for region in PHONE_REGIONS:
            for m in phonenumbers.PhoneNumberMatcher(piece, region, leniency=phonenumbers.Leniency.VALID):
                start, end = lo + m.start, lo + m.end
                if protected is None:
                    protected = _protected(view_text)
                if any(s < end and start < e for s, e in protected):
                    continue
                found.append((start, end))
            if any(s <= cluster.start() and cluster.end() <= e for s, e in found):
                break
    return found


class _Recent:
    """The answers for the last few texts. A worker asks about one message's text several times
    (the plugins' masked message and complaint, the case's fingerprint, its number tokens): one
    search for phone numbers with libphonenumber is ~0.15 ms of CPU on a text with 7+ digits.
    Oldest out first; a lost race between threads costs a recomputation, never a wrong answer
    (the answers are immutable and depend on the key alone)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: dict[tuple[str, frozenset[str]], tuple[Found, ...]] = {}

    def get(self, key: tuple[str, frozenset[str]]) -> tuple[Found, ...] | None:
        return self.items.get(key)

    def put(self, key: tuple[str, frozenset[str]], value: tuple[Found, ...]) -> None:
        items = self.items
        while len(items) >= self.size:
            try:
                del items[next(iter(items))]
            except (KeyError, RuntimeError, StopIteration):  # another thread changed it meanwhile
                break
        items[key] = value


_ALL_KINDS = frozenset(KINDS)
_recent = _Recent(TEXT_MEMO)


def find_pii(text: str, kinds: Iterable[str] = KINDS) -> list[Found]:
    """Where the personal data in ``text`` is (non-overlapping, in order)."""
    wanted = _ALL_KINDS if kinds is KINDS else frozenset(kinds)
    key = (text, wanted)
    found = _recent.get(key)
    if found is None:
        everything = _recent.get((text, _ALL_KINDS)) if wanted != _ALL_KINDS else None
        if everything is not None and all(f.kind in wanted for f in everything):
            # every kind is searched in a fixed order, each skipping what an earlier one took: with
            # nothing of the other kinds found, the wanted kinds' search took exactly these
            found = everything
        else:
            found = tuple(_find_pii(text, wanted))
        _recent.put(key, found)
    return list(found)


def _find_pii(text: str, wanted: frozenset[str]) -> list[Found]:
    found: list[Found] = []
    taken = [False] * len(text)
    view = digit_view(text)  # digits read out one by one, written as digits
    scan = view.text

    def take(start: int, end: int, kind: str) -> None:  # a span of ``text``
        if not any(taken[start:end]):
            found.append(Found(start, end, kind))
            for i in range(start, end):
                taken[i] = True

    def add(start: int, end: int, kind: str) -> None:  # a span of ``scan``
        take(*view.span(start, end), kind)

    if EMAIL in wanted:
        for m in _EMAIL.finditer(text):
            take(m.start(), m.end(), EMAIL)
        if " at " in text:
            for m in _SPOKEN_EMAIL.finditer(text):
                take(m.start(), m.end(), EMAIL)
    if len(_DIGIT.findall(scan)) < 7:
        return sorted(found)  # no card, ID or phone number has fewer than seven digits
    if ID_NUMBER in wanted:
        for m in _ID18.finditer(scan):
            if china_id_ok(m.group(0)):
                add(m.start(), m.end(), ID_NUMBER)
    if CARD in wanted:
        orders: list[tuple[int, int]] | None = None
        for m in _CARD.finditer(scan):
            digits = re.sub(r"\D", "", m.group(0))
            if 13 <= len(digits) <= 19 and luhn_ok(digits):
                if orders is None:

                    orders = transaction_spans(scan, labelled_only=True)
                if any(s <= m.start() and m.end() <= e for s, e in orders):
                    continue  # "订单号 2026031188204417": an order number that happens to pass Luhn
                add(m.start(), m.end(), CARD)
    if PHONE in wanted:
        for start, end in sorted(_phones(scan), key=lambda s: (s[0], -s[1])):
            add(start, end, PHONE)
    return sorted(found)


def _placeholder(kind: str, value: str) -> str:
    if kind == EMAIL:
        return "[email]"
    digits = re.sub(r"\D", "", value)
    return {CARD: f"[card ···{digits[-4:]}]", ID_NUMBER: "[ID number]", PHONE: f"[phone ···{digits[-2:]}]"}[kind]


def mask_pii(text: str, kinds: Iterable[str] = KINDS) -> str:
    """``text`` with each card number, ID number, phone number and e-mail address replaced by a
    placeholder (a card keeps its last four digits, a phone its last two, as receipts do)."""
    if not text:
        return text
    found = find_pii(text, kinds)
    if not found:
        return text
    out, pos = [], 0
    for f in found:
        out.append(text[pos:f.start])
        out.append(_placeholder(f.kind, text[f.start:f.end]))
        pos = f.end
    out.append(text[pos:])
    return "".join(out)


def _mask_digits(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"[number ···{digits[-2:]}]" if len(digits) > 8 else "[number]"


def _mask_secret(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2)) + "[secret]"


def mask_text(text: str) -> str:
    """For logs: personal data, any other long digit run, and credentials in URLs masked."""
    text = _SECRET.sub(_mask_secret, text)
    text = mask_pii(text)
    return _DIGIT_RUN.sub(_mask_digits, text)


class MaskingFilter(logging.Filter):
    """A logging filter that masks personal data in every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = mask_text(message)
        if masked != message or record.args:
            record.msg, record.args = masked, ()
        if record.exc_info:  # exception texts can quote customer input too
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_CASE = re.compile(r"\bC-\d{8}-\d{6}\b")
_MSG_ID = re.compile(r"\bmsg_[0-9a-z]{10,40}\b")
_CMP_ID = re.compile(r"\bcmp_[0-9a-z]{10,40}\b")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (masked by ``MaskingFilter``), and the
    case number, message id and complaint id when the record carries them (``extra=``) or the
    message names them."""

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import datetime, timezone

        message = record.getMessage()
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "msg": message,
        }
        for key, pattern in (("case_number", _CASE), ("message_id", _MSG_ID), ("complaint_id", _CMP_ID)):
            value = getattr(record, key, None)
            if value is None:
                found = pattern.search(message)
                value = found.group(0) if found else None
            if value is not None:
                out[key] = value
        for key in ("channel", "job", "worker"):
            if getattr(record, key, None) is not None:
                out[key] = getattr(record, key)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)
