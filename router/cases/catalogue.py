"""How the desk words appeal materials to a customer (交易记录、截图、身份证明、沟通记录), and the
words in a caption, a file name or a message that say which material a piece of evidence is.

Shared by the materials request and its reminders (``router.cases.materials``) and the periodic
progress update that says what a case still waits for (``router.cases.progress``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from normalizer.language import desk_language
from normalizer.schema import MaterialRequest

#: Each kind of the catalogue (normalizer.schema.MATERIAL_KINDS) as the customer reads it.
NAMES: dict[str, dict[str, str]] = {
    "transaction_record": {"zh": "交易记录（订单或交易详情）", "en": "the transaction record (order or payment details)"},
    "charge_screenshot": {"zh": "扣款截图", "en": "a screenshot of the charge"},
    "bank_statement": {"zh": "银行流水或对账单", "en": "your bank or card statement"},
    "id_proof": {"zh": "身份证明", "en": "proof of identity"},
    "communication_records": {"zh": "与商户的沟通记录", "en": "records of your communication with the merchant"},
    "other": {"zh": "其他材料", "en": "other material"},
}

#: Words (lower case) that name a kind in a caption, a file name or the message's text (Latin
#: words as whole words: "id" is not in "paid").
WORDS: dict[str, tuple[str, ...]] = {
    "charge_screenshot": ("截图", "截屏", "screenshot", "screen shot", "screen_shot", "screen-shot"),
    "bank_statement": ("流水", "对账单", "statement", "bank"),
    "transaction_record": ("交易记录", "交易详情", "订单", "账单", "receipt", "transaction", "order", "invoice"),
    "id_proof": ("身份证", "证件", "护照", "passport", "identity", "id"),
    "communication_records": ("聊天", "沟通", "通话", "chat", "conversation", "correspondence", "email"),
}

SEPARATOR = {"zh": "、", "en": "; "}
#: What happens once every material is in (``materials_received``'s ``{next}``).
CARRY_ON = {"zh": "我们会继续处理您的案件。", "en": "We are carrying on with your case."}

def name_of(item: MaterialRequest, language: str | None) -> str:
    """One item as the customer reads it: the catalogue's name, with the agent's note
    (for ``other`` the note is the name)."""
    lang = desk_language(language)
    if item.note and item.kind == "other":
        return item.note
    if item.note:
        return f"{NAMES[item.kind][lang]}（{item.note}）" if lang == "zh" else f"{NAMES[item.kind][lang]} ({item.note})"
    return NAMES[item.kind][lang]


def describe(items: Iterable[MaterialRequest], language: str | None) -> str:
    """The items as one list in the customer's language."""
    lang = desk_language(language)
    return SEPARATOR[lang].join(name_of(item, lang) for item in items)


_PATTERNS = {kind: re.compile("|".join(rf"(?<![a-z]){re.escape(w)}(?![a-z])" if w.isascii() else re.escape(w)
                                       for w in words)) for kind, words in WORDS.items()}


def kinds_named(text: str) -> list[str]:
    """The kinds ``text`` (a caption, a file name, a message) names, in catalogue order."""
    lowered = text.lower()
    return [kind for kind, pattern in _PATTERNS.items() if pattern.search(lowered)]


__all__ = ["CARRY_ON", "NAMES", "WORDS", "describe", "kinds_named", "name_of"]
