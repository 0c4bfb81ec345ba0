"""Which language a customer wrote in: Chinese or English (what templates exist for)."""

from __future__ import annotations

import re

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    cjk = len(_CJK.findall(text))
    if cjk == 0:
        return "en"
    latin = len(_LATIN.findall(text))
    return "zh" if cjk >= 3 or cjk >= 0.2 * (cjk + latin) else "en"


def desk_language(language: str | None) -> str:
    """The language the desk answers in: ``zh`` for Chinese, English for anything else (the two
    languages every template and wording has)."""
    return "zh" if language == "zh" else "en"
