"""Folding a customer's words into the form the categoriser and the formal-flag rules read.

One function per concern so each can be measured on its own (bench/understanding.py): width and
case folding, the spaces ASR puts between Chinese characters, speaker labels of call transcripts,
quoted e-mail replies, a few traditional characters, and numbers / amounts / ids as tokens.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from normalizer.mail import strip_quoted
from normalizer.text import TEXT_MEMO

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_GAP = re.compile(rf"(?<=[{_CJK}])[ \t\u3000]+(?=[{_CJK}])")
# "坐席：您好 客户：..." / "Agent: ... Caller: ..." - who speaks is not what the call is about.
_SPEAKER = re.compile(r"(?:(?<=\s)|^)(?:坐\s*席|客\s*服|客\s*户|来电人|agent|caller|customer|rep|operator)\s*:\s*",
                      re.IGNORECASE)

# Traditional forms of characters this domain's messages use (Hong Kong / Taiwan customers), so one
# n-gram covers both scripts; a full converter would be a dependency for a few dozen characters.
_TRADITIONAL = str.maketrans(
    "張訴們個這說帳賬戶餘額費錢轉碼號綁當後開閃還沒頁顯買賣單讓話請問題時間為麼與機應無務銀盜詐騙護驗證凍結鎖數據紀錄記復"
    "扣款退換匯續餘項線連網絡畫視圖啟動設選擇種類點擊確認對錯誤變動區關閉刪除們檢查處理時級領導經審費額戶餘帳碼罰詢餘",
    "张诉们个这说账账户余额费钱转码号绑当后开闪还没页显买卖单让话请问题时间为么与机应无务银盗诈骗护验证冻结锁数据纪录记复"
    "扣款退换汇续余项线连网络画视图启动设选择种类点击确认对错误变动区关闭删除们检查处理时级领导经审费额户余账码罚询余",
)

# Cantonese words with a one-character Mandarin counterpart ("俾人碌咗" -> "给人刷了").
_CANTONESE = str.maketrans("咗喺冇嘅哋佢畀俾唔係啲睇攞碌", "了在没的们他给给不是些看拿刷")
# Both as one table (a character the first maps, mapped on by the second), and the characters it
# changes: most texts have none of them, and ``str.translate`` looks every character up (~7 µs a
# text each table) where a search for them skips the text in C.
_TO_MANDARIN = {c: m for c in _TRADITIONAL.keys() | _CANTONESE.keys()
                if (m := _CANTONESE.get(_TRADITIONAL.get(c, c), _TRADITIONAL.get(c, c))) != c}
_CHANGED_BY_MANDARIN = re.compile("[" + "".join(map(chr, sorted(_TO_MANDARIN))) + "]")

_EMAIL = re.compile(r"[\w.%+-]+@[\w.-]+\.[a-z]{2,}", re.IGNORECASE)
_URL = re.compile(r"https?://\S+", re.IGNORECASE)
# Ids with letters and digits ("T2026111809452213", "SG-PAY-7710293", "#TZ-44821") become one token.
_ALNUM_ID = re.compile(r"(?<![a-z0-9])#?(?=[a-z0-9-]*\d)(?=[a-z0-9-]*[a-z])[a-z0-9]+(?:-[a-z0-9]+)+(?![a-z0-9])"
                       r"|(?<![a-z0-9])t\d{8,}(?![a-z0-9])", re.IGNORECASE)
# what every match of ``_ALNUM_ID`` holds: a dash (its first form) or a "t" and eight digits (its second)
_T_DIGITS = re.compile(r"[tT]\d{8}")
_NUMBER = re.compile(r"\d+(?:[.,:/]\d+)*")
_DIGIT = re.compile(r"\d")
# Spoken Chinese numbers in transcripts ("两百九十九", "六二二五 八四六五"): two or more numerals in a row.
_ZH_NUMBER = re.compile(r"[零〇一二两三四五六七八九十百千万亿幺]{2,}")
_ZH_NUMBER_KEEP = {"一下", "一直", "一个", "一样", "一点", "一起", "一定", "一般", "一笔", "一次", "万一", "千万", "一些",
                   "十分", "一天", "一周", "一月", "一张", "一家", "三天", "两天", "两次", "三次", "两个", "两笔",
                   "二维", "一万"}
_SPACES = re.compile(r"\s+")
# An app form's "问题类型：余额查询" / "Category: refund" is the category the customer picked from a
# list, often the wrong one (our corpus labels by what they wrote): the categoriser must not read it.
_PICKED_CATEGORY = re.compile(r"^\s*(?:问题类型|问题分类|问题类别|類型|类型|issue type|category|type)\s*[:：][^\n]*$",
                              re.IGNORECASE | re.MULTILINE)
_FORM_LABEL = re.compile(r"^\s*(?:问题描述|描述|description|issue|subject|主题)\s*[:：]\s*", re.IGNORECASE | re.MULTILINE)


def without_form_fields(text: str) -> str:
    """The customer's words without the picked category line and without field labels."""
    return _FORM_LABEL.sub("", _PICKED_CATEGORY.sub("", text))


def fold(text: str) -> str:
    """Width (NFKC: full-width letters, digits and punctuation to half-width), case, traditional
    characters and Cantonese words to their Mandarin forms, no speaker labels, and no spaces between Chinese characters ("我 要 投 诉" -> "我要投诉")."""
    text = unicodedata.normalize("NFKC", text).lower()
    if _CHANGED_BY_MANDARIN.search(text):
        text = text.translate(_TO_MANDARIN)
    return _CJK_GAP.sub("", without_speakers(text))


def without_speakers(text: str) -> str:
    return _SPEAKER.sub(" ", text) if ":" in text else text  # (every label ends in a colon)


def _zh_number(match: re.Match[str]) -> str:
    word = match.group(0)
    return word if word in _ZH_NUMBER_KEEP else "0"


def tokens_for_numbers(text: str) -> str:
    """E-mail addresses, links, ids, digit runs and spoken Chinese numbers to placeholder tokens, so
    "$35.99" and "$12" read alike and no id becomes a feature of its own."""
    if "@" in text:  # (each pattern below runs only where it can match: half the texts have no digit)
        text = _EMAIL.sub(" zmail ", text)
    if "://" in text:
        text = _URL.sub(" zurl ", text)
    if _DIGIT.search(text):
        if "-" in text or _T_DIGITS.search(text):
            text = _ALNUM_ID.sub(" zid ", text)
        text = _NUMBER.sub("0", text)
    return _ZH_NUMBER.sub(_zh_number, text)


def prepare(text: str) -> str:
    """What the categoriser reads: the new part of a mail, folded, without speaker labels, numbers
    as tokens, whitespace collapsed."""
    text = tokens_for_numbers(_folded(text))
    return _SPACES.sub(" ", text).strip()


def prepare_for_rules(text: str) -> str:
    """What the formal-flag rules read: like :func:`prepare` but numbers kept (regulator hotlines
    such as 12315 are cues) and line breaks kept as sentence ends."""
    return _folded(text)


@lru_cache(maxsize=TEXT_MEMO)  # a prediction reads each text twice: the model's input and the formal rules'
def _folded(text: str) -> str:
    return without_form_fields(fold(strip_quoted(text)))


__all__ = ["without_form_fields", "fold", "prepare", "prepare_for_rules", "tokens_for_numbers", "without_speakers"]
