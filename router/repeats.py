"""Repeat reports: is this new message the same problem as one of the customer's open cases?

Rules, strongest first (shared/domain.md: a customer who is not answered at once writes again,
often on another channel):

1. **same_transaction** — both name the same transaction id (any age, while the case is open);
2. **same_amount** — same category and the same amount and currency, within the window;
3. **similar_text** — near-identical text (character similarity, so it works for Chinese, which
   has no spaces, as well as for English), within the window.

Hard negatives, never merged whatever the text says: two different transaction ids, or two
different amounts. Only the same customer's cases are looked at (the same words from someone
else are someone else's case).

The candidates are a small per-customer hash of fingerprints of open cases (one field per
open case: category, amount, transaction id, created time and the start of the normalised
text), so the lookup costs one HGETALL however many complaints the desk holds.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import msgspec
from rapidfuzz import fuzz

from normalizer.schema import Complaint, InboundMessage

FINGERPRINT_TEXT = 100  # characters of normalised text kept per open case (near-identical shows early)
SIMILAR_TEXT = 85.0  # rapidfuzz ratio (0–100) that counts as near-identical
MIN_TEXT = 8  # shorter texts ("hi", "?") say too little to match on
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)


class Fingerprint(msgspec.Struct, array_like=True, omit_defaults=True):
    """What the lookup needs of one open case (kept small: it is stored per open case)."""

    category: str
    created_ms: int
    amount: str = ""  # "128.50 CNY"
    transaction: str = ""
    text: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Fingerprint)


def normalise_text(text: str) -> str:
    """Case, width and punctuation folded; spaces removed (so "charged  twice!" ~ "Charged twice")."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFKC", text).casefold())


def amount_key(value: str | None, currency: str | None) -> str:
    return f"{value} {currency}" if value and currency else ""


def fingerprint_of(complaint: Complaint, created_ms: int) -> bytes:
    text = normalise_text(" ".join(m.text for m in complaint.messages[:1]))[:FINGERPRINT_TEXT]
    amount = amount_key(complaint.amount.value, complaint.amount.currency) if complaint.amount else ""
    return _encoder.encode(Fingerprint(complaint.category, created_ms, amount, complaint.transaction_id or "", text))


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


_STRENGTH = {"same_transaction": 3, "same_amount": 2, "similar_text": 1}


def find_repeat(candidates: dict[str, Fingerprint], message: InboundMessage, category: str, now_ms: int,
                window_ms: int) -> Match | None:
    """The open case this message repeats, or ``None``."""
    amount = amount_key(message.amount.value, message.amount.currency) if message.amount else ""
    txn = message.transaction_id or ""
    text = normalise_text(message.text)[:FINGERPRINT_TEXT]
    best: Match | None = None
    best_key: tuple[int, float, int] = (0, 0.0, 0)
    for cid, fp in candidates.items():
        if txn and fp.transaction and txn != fp.transaction:
            continue  # two transactions are two problems
        if amount and fp.amount and amount != fp.amount:
            continue  # two amounts are two problems
        recent = now_ms - fp.created_ms <= window_ms
        match = None
        if txn and txn == fp.transaction:
            match = Match(cid, "same_transaction", 100.0, {"transaction_id": txn})
        elif recent and amount and amount == fp.amount and category == fp.category:
            match = Match(cid, "same_amount", 100.0, {"amount": amount, "category": category})
        elif recent and len(text) >= MIN_TEXT and len(fp.text) >= MIN_TEXT:
            score = fuzz.ratio(text, fp.text)
            if score >= SIMILAR_TEXT:
                match = Match(cid, "similar_text", round(score, 1), {"similarity": f"{score:.1f}"})
        if match is not None:
            key = (_STRENGTH[match.reason], match.score, fp.created_ms)
            if key > best_key:
                best, best_key = match, key
    return best
