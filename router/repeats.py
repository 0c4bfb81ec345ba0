"""Repeat reports: is this new message the same problem as one of the customer's open cases?

A customer who is not answered at once writes again, often on another channel and in other
words (shared/domain.md). Evidence, strongest first:

1. **same_transaction** — both name the same transaction id (compared without spaces, dashes or
   case, digits read out as digits; any age, while the case is open);
2. **same_amount** — both name the same amount, in digits or in words ("六十八块八" = 68.80), and
   the category agrees, or the message follows up on something, or the topics meet;
3. **follow_up** — the message says it follows up ("any update?", "还没处理", "third time asking",
   "上次说的") and its topic terms meet the case's (any age, while the case is open);
4. **similar_text** — near-identical text (character similarity, so it works for Chinese, which
   has no spaces, as well as for English), within the window;
5. **same_topic** — much the same topic terms and the same category, within the window.

What keeps two problems apart, whatever the rest says: two different transaction ids; amounts
on both sides with none in common; the message saying it is about another problem ("different
order this time", "跟上次那笔不是同一笔"). Only the same customer's cases are looked at (the same
words from someone else are someone else's case).

Confident matches are merged by the worker. Weaker ones ("possible repeats": a follow-up whose
topic is unclear, a shared amount in another category, a shared topic without a cue) come back
only when asked for (``possible=True``) with ``confident=False``, for the agent to merge with
one call.

The candidates are a small per-customer hash of fingerprints of open cases (one field per open
case: category, amount, transaction id, created time, the start of the normalised text, and the
amounts and topic terms of the case's first messages), so the lookup costs one HGETALL however
many complaints the desk holds. Fingerprints written before the amounts and terms were added
still decode (the new fields are optional, at the end). A new case is committed with a pending
fingerprint (its fields alone); what its text gives is read from the message it was opened with
when the customer writes again (``completed``: the same fingerprint, worked out only when it is
needed).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import msgspec
from rapidfuzz import fuzz

from normalizer.extract import extract_amounts, format_amount, transaction_key
from normalizer.numerals import digit_view
from normalizer.pii import CARD, ID_NUMBER, PHONE, find_pii, mask_pii
from normalizer.schema import Complaint, InboundMessage
from normalizer.text import TEXT_MEMO
from router.repeat_signals import GENERIC, follow_up_cue, new_problem_cue, overlap, terms

FINGERPRINT_TEXT = 100  # characters of normalised text kept per open case (near-identical shows early)
SIMILAR_TEXT = 85.0  # rapidfuzz ratio (0–100) that counts as near-identical
MIN_TEXT = 8  # shorter texts ("hi", "?") say too little to match on
MAX_TERMS = 24  # topic terms kept per open case (concepts first)
MAX_AMOUNTS = 6
CASE_TEXT = 600  # characters of the case's messages the amounts and terms are read from
# topic overlap (router.repeat_signals.overlap, 0-1) that counts
FOLLOW_UP_TOPIC = 0.30  # a follow-up cue and this much topic: the same problem
FOLLOW_UP_POSSIBLE = 0.15  # a follow-up cue and some topic: possibly
FOLLOW_UP_STRONG = 0.50  # a follow-up cue and this much topic: the same problem, whatever the categories say
FOLLOW_UP_BARE = 3  # a follow-up with no concept and at most this many terms names nothing to compare
SAME_TOPIC = 0.60  # no cue, same category, this much topic: the same problem
TOPIC_POSSIBLE = 0.40  # no cue, same category: possibly
AMOUNT_TOPIC = 0.15  # a shared amount in another category needs this much topic
SMALL_AMOUNT = Decimal(10)  # a shared amount below this needs a follow-up cue or a shared topic too
NEUTRAL_CATEGORY = "other"  # what the categoriser answers for "any update??": says nothing either way
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_CODE = re.compile(r"(?<![A-Z0-9])(?=[A-Z]*\d)[A-Z0-9]{6,40}(?![A-Z0-9])")


class Fingerprint(msgspec.Struct, array_like=True, omit_defaults=True):
    """What the lookup needs of one open case (kept small: it is stored per open case)."""

    category: str
    created_ms: int
    amount: str = ""  # "128.50 CNY"
    transaction: str = ""
    text: str = ""
    amounts: list[str] = []  # every amount the case's text names ("68.80")
    terms: list[str] = []  # topic terms of the case's text (router.repeat_signals.terms)
    #: What its text gives (``text``, ``amounts`` but the case's own amount, ``terms``) is still to
    #: be read from the message the case opened with (``completed``): a new case is committed with
    #: this much, as most customers never write again while it is open (``pending_fingerprint_of``)
    pending: bool = False


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Fingerprint)


def normalise_text(text: str) -> str:
    """Case, width and punctuation folded; spaces removed (so "charged  twice!" ~ "Charged twice")."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def amount_key(value: str | None, currency: str | None) -> str:
    return f"{value} {currency}" if value and currency else ""


def _value(amount: str) -> str:
    """"128.5 CNY" / "128.50" -> "128.50" (amounts are compared by value: the currency a customer
    names for one problem varies - "$" alone, "HK$", none)."""
    try:
        return format_amount(Decimal(amount.split(" ", 1)[0]))
    except (InvalidOperation, ValueError):
        return ""


_TIMES = re.compile(r"(?<![\d.])([2-9])\s*[x×*]\s*$|^\s*[x×*]\s*([2-9])(?![\d.])", re.IGNORECASE)


def amounts_in(text: str) -> list[str]:
    """The amounts ``text`` names, as decimal strings ("68.80"); "2 x $100" names 200 too."""
    return list(_amounts_in(text))


@lru_cache(maxsize=TEXT_MEMO)  # the repeat check and the new case's fingerprint read the same text
def _amounts_in(text: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for found in extract_amounts(text):
        if found.value > 0:
            seen[format_amount(found.value)] = None
            before, after = text[max(0, found.start - 6):found.start], text[found.end:found.end + 6]
            times = _TIMES.search(before) or _TIMES.search(after)
            if times:
                seen[format_amount(found.value * int(times.group(1) or times.group(2)))] = None
    return tuple(seen)


# numbers a follow-up repeats without saying they are money ("239退款还是没到", "还是1050")
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?![\d]|\.\d|,\d|\s?(?:%|天|日|号|月|年|次|点|"
                     r"期|个|位|岁|楼|层|秒|条|张|笔|分钟|小时|days?\b|hours?\b|weeks?\b|months?\b|years?\b|times\b|"
                     r"am\b|pm\b|th\b|st\b|nd\b|rd\b))")


# a run of 27+ digits (an order number) is no amount, and has no two-place form in 28 significant
# digits (format_amount raised InvalidOperation: the whole repeat check failed on such a message)
_NO_AMOUNT = Decimal(10) ** 26


def numbers_in(text: str) -> set[str]:
    found = set()
    for m in _NUMBER.finditer(unicodedata.normalize("NFKC", text)):
        value = Decimal(m.group(1).replace(",", "") + ("." + m.group(2) if m.group(2) else ""))
        if (value >= 10 or m.group(2)) and value < _NO_AMOUNT:
            found.add(format_amount(value))
    return found


def same_amount(a: str, b: str) -> bool:
    """Equal, or one is the other said without its cents ("三百二十七" for 327.40)."""
    if a == b:
        return True
    da, db = Decimal(a), Decimal(b)
    return (da == da.to_integral_value() and da == db.to_integral_value(rounding="ROUND_FLOOR") and da >= 10) or (
        db == db.to_integral_value() and db == da.to_integral_value(rounding="ROUND_FLOOR") and db >= 10)


def _identifiers(text: str) -> list[str]:
    """The card, phone and ID numbers ``text`` names, as short one-way tokens ("#3f9a0c1b"): the
    same number said twice shows without the fingerprint keeping the number."""
    out = []
    for found in find_pii(text, (CARD, PHONE, ID_NUMBER)):
        digits = re.sub(r"\D", "", digit_view(text[found.start:found.end]).text)[-11:]
        if len(digits) >= 7:
            out.append("#" + hashlib.blake2b(digits.encode(), digest_size=4, key=b"repeat-report").hexdigest())
    return out


def _topic_terms(text: str, limit: int | None = MAX_TERMS) -> list[str]:
    ordered = _ordered_terms(text)
    return list(ordered[:limit] if limit else ordered)


@lru_cache(maxsize=TEXT_MEMO)  # the repeat check and the new case's fingerprint read the same text
def _ordered_terms(text: str) -> tuple[str, ...]:
    found = terms(text)
    concepts = [t for t in found if t.startswith("<")] + _identifiers(text)
    return tuple(concepts + [t for t in found if not t.startswith("<")])


def fingerprint_of(complaint: Complaint, created_ms: int) -> bytes:
    return _encoder.encode(_with_text(_head(complaint, created_ms), " ".join(m.text for m in complaint.messages[:1]),
                                      "\n".join(m.text for m in complaint.messages[:3])))


def pending_fingerprint_of(complaint: Complaint, created_ms: int) -> bytes:
    """``fingerprint_of`` a new case (one message) without what its text gives, read on first need
    instead (``completed``, from that message): the masked text, the amounts and the topic terms
    cost ~8 % of a worker's time per message, and only a customer who writes again while the case
    is open is compared with it."""
    if len(complaint.messages) != 1:
        return fingerprint_of(complaint, created_ms)
    return _encoder.encode(msgspec.structs.replace(_head(complaint, created_ms), pending=True))


def completed(fingerprint: Fingerprint, first_text: str) -> Fingerprint:
    """A pending fingerprint with what the message its case opened with gives (``first_text``;
    ``router.jobs.opening_message``): what ``fingerprint_of`` gave when the case opened with it."""
    return _with_text(fingerprint, first_text, first_text) if fingerprint.pending else fingerprint


def _head(complaint: Complaint, created_ms: int) -> Fingerprint:
    """What a fingerprint takes from the case's fields; ``amounts`` holds the case's own amount."""
    amount = amount_key(complaint.amount.value, complaint.amount.currency) if complaint.amount else ""
    own = _value(complaint.amount.value) if complaint.amount else ""
    return Fingerprint(complaint.category, created_ms, amount, complaint.transaction_id or "",
                       amounts=[own] if own else [])


def _with_text(head: Fingerprint, first: str, body: str) -> Fingerprint:
    """``head`` with what the case's first message (``first``) and its first messages (``body``)
    give: the masked text, every amount named (the case's own first, when the text does not name
    it) and the topic terms."""
    text = normalise_text(mask_pii(first))[:FINGERPRINT_TEXT]
    body = body[:CASE_TEXT]
    amounts = amounts_in(body)
    if head.amounts and head.amounts[0] not in amounts:
        amounts.insert(0, head.amounts[0])
    return Fingerprint(head.category, head.created_ms, head.amount, head.transaction, text, amounts[:MAX_AMOUNTS],
                       _topic_terms(body))


def decode(data: bytes) -> Fingerprint | None:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


@dataclass(frozen=True)
class Match:
    complaint_id: str
    reason: str
    score: float
    detail: dict[str, str]
    #: False for a "possible repeat": link it for the agent, do not merge it
    confident: bool = field(default=True)


_STRENGTH = {"same_transaction": 5, "same_amount": 4, "follow_up": 3, "similar_text": 2, "same_topic": 1}


@dataclass
class _Message:
    """What is compared of the new message, worked out once for all candidates."""

    txn: str
    codes: set[str]  # every id-like run of 6+ letters and digits the text names (a bare id: "88123004 still pending")
    amounts: set[str]
    first_amount: str
    numbers: set[str]
    text: str
    terms: set[str]
    follow_up: str
    new_problem: str


def _read(message: InboundMessage) -> _Message:
    said = amounts_in(message.text[:CASE_TEXT])
    amounts = set(said)
    if message.amount and _value(message.amount.value):
        amounts.add(_value(message.amount.value))
    first = _value(message.amount.value) if message.amount else (said[0] if said else "")
    return _Message(
        txn=transaction_key(message.transaction_id) if message.transaction_id else "",
        codes=set(_CODE.findall(digit_view(message.text[:CASE_TEXT]).text.upper().replace("-", ""))),
        amounts=amounts, first_amount=first or "", numbers=numbers_in(message.text[:CASE_TEXT]),
        text=normalise_text(mask_pii(message.text))[:FINGERPRINT_TEXT],
        terms=set(_topic_terms(message.text[:CASE_TEXT], limit=None)), follow_up=follow_up_cue(message.text),
        new_problem=new_problem_cue(message.text),
    )


def _judge(cid: str, fp: Fingerprint, m: _Message, category: str, recent: bool) -> Match | None:
    """The evidence that the message repeats this one case (None: none, or a conflict)."""
    fp_txn = transaction_key(fp.transaction) if fp.transaction else ""
    same_txn = bool(fp_txn) and (m.txn == fp_txn or (not m.txn and len(fp_txn) >= 6 and fp_txn in m.codes))
    if m.txn and fp_txn and not same_txn:
        return None  # two transactions are two problems
    if same_txn:
        return Match(cid, "same_transaction", 100.0, {"transaction_id": fp.transaction})
    if m.new_problem:
        return None  # the customer says it is another problem
    fp_amounts = {_value(a) for a in fp.amounts} | ({_value(fp.amount)} if fp.amount else set())
    fp_amounts.discard("")  # (a value that does not read as a decimal is ignored)
    shared = {a for a in m.amounts for b in fp_amounts if same_amount(a, b)}
    if m.amounts and fp_amounts and not shared:
        return None  # two amounts are two problems
    shared |= m.numbers & fp_amounts
    # the amount the message is about (its first) must be the case's: "上次那5毛就算了 ... 3200" is not about 0.50
    primary = not m.first_amount or any(same_amount(m.first_amount, b) for b in fp_amounts)
    category_agrees = category == fp.category
    category_neutral = NEUTRAL_CATEGORY in (category, fp.category)
    topic = overlap(m.terms, set(fp.terms)) if fp.terms else 0.0
    detail = {"category": fp.category}
    if m.follow_up:
        detail["cue"] = m.follow_up
    shared_terms = m.terms.intersection(fp.terms)
    shared_concept = any(t.startswith("<") and t not in GENERIC for t in shared_terms)
    shared_identifier = any(t.startswith("#") for t in shared_terms)  # the same card, phone or ID number
    if shared:
        amount = sorted(shared, key=Decimal)[-1]
        detail = {**detail, "amount": amount, "similarity": f"{topic:.2f}"}
        # a small sum (a fee of 2, a fare of 4) is named by many problems: it needs more than a category
        small = Decimal(amount) < SMALL_AMOUNT and not m.follow_up and topic < FOLLOW_UP_TOPIC
        if (recent or m.follow_up) and primary and not small:
            if category_agrees or category_neutral or m.follow_up or topic >= AMOUNT_TOPIC:
                return Match(cid, "same_amount", 100.0, detail)
        return Match(cid, "same_amount", 50.0 + 50 * topic, detail, confident=False)
    detail["similarity"] = f"{topic:.2f}"
    if m.follow_up and fp.terms:
        if (topic >= FOLLOW_UP_STRONG or shared_identifier
                or ((topic >= FOLLOW_UP_TOPIC or shared_concept) and (category_agrees or category_neutral))):
            return Match(cid, "follow_up", round(100 * topic, 1), detail)
        bare = len(m.terms) <= FOLLOW_UP_BARE and not any(t.startswith("<") for t in m.terms)
        if topic >= FOLLOW_UP_POSSIBLE or (category_agrees and topic > 0) or bare:
            # ... or a bare follow-up ("any update??", "上次问的事 有结果了吗") that names nothing to compare
            return Match(cid, "follow_up", round(100 * topic, 1), detail, confident=False)
    if recent and len(m.text) >= MIN_TEXT and len(fp.text) >= MIN_TEXT:
        score = fuzz.ratio(m.text, fp.text)
        if score >= SIMILAR_TEXT:
            return Match(cid, "similar_text", round(score, 1), {"similarity": f"{score:.1f}"})
    if recent and category_agrees and fp.terms:
        specific = [t for t in shared_terms if t not in GENERIC]
        if topic >= SAME_TOPIC and len(specific) >= 2:
            return Match(cid, "same_topic", round(100 * topic, 1), detail)
        if topic >= TOPIC_POSSIBLE:
            return Match(cid, "same_topic", round(100 * topic, 1), detail, confident=False)
    return None


def find_repeat(candidates: dict[str, Fingerprint], message: InboundMessage, category: str, now_ms: int,
                window_ms: int, *, possible: bool = False) -> Match | None:
    """The open case this message repeats, or ``None``. Confident matches only, unless
    ``possible``: then the best match, which may be a possible repeat (``confident=False``)."""
    m = _read(message)
    best: Match | None = None
    best_key: tuple[bool, int, float, int] | None = None
    for cid, fp in candidates.items():
        match = _judge(cid, fp, m, category, now_ms - fp.created_ms <= window_ms)
        if match is None or not (match.confident or possible):
            continue
        key = (match.confident, _STRENGTH[match.reason], match.score, fp.created_ms)
        if best_key is None or key > best_key:
            best, best_key = match, key
    return best
