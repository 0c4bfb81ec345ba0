"""Reading a satisfaction score out of a customer's reply (1–5), in Chinese or English."""

from __future__ import annotations

import re
import unicodedata

MAX_LEN = 24  # a longer reply is a message, not a score ("I paid 5 yuan twice...")
_WORDS = [  # longest first: "非常不满意" before "不满意" before "满意"
    ("非常不满意", 1), ("很不满意", 1), ("very dissatisfied", 1), ("very unsatisfied", 1), ("terrible", 1),
    ("很差", 1), ("极差", 1), ("awful", 1), ("不满意", 2), ("dissatisfied", 2), ("unsatisfied", 2), ("差", 2),
    ("bad", 2), ("poor", 2), ("一般", 3), ("还行", 3), ("ok", 3), ("okay", 3), ("neutral", 3), ("average", 3),
    ("非常满意", 5), ("很满意", 5), ("very satisfied", 5), ("excellent", 5), ("great", 5), ("满意", 4),
    ("satisfied", 4), ("good", 4),
]
_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_NUMBER = re.compile(r"^\s*([1-5]|[一二两三四五])\s*(分|星|stars?|/\s*5|out of 5)?\s*[.!。！]*\s*$", re.IGNORECASE)


def parse_score(text: str) -> int | None:
    text = unicodedata.normalize("NFKC", text or "").strip().lower()
    if not text or len(text) > MAX_LEN:
        return None
    match = _NUMBER.match(text)
    if match:
        value = match.group(1)
        return int(value) if value.isdigit() else _CN_DIGITS[value]
    bare = re.sub(r"[\s.!。！,，~]+", " ", text).strip()
    for word, score in _WORDS:
        if bare == word or bare in (f"{word} 谢谢", f"{word} thanks", f"{word} thank you"):
            return score
    return None
