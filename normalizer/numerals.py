"""Numbers as customers say them: digits read out one by one ("幺三八 零零一三", "eight eight two
three one", "double-oh"), Chinese numerals ("两千五", "一百二十八块五") and English number words
("sixty two dollars thirty", "a hundred"). Voice transcripts and chat messages write amounts,
ids and phone numbers this way as often as in digits.

``digit_view`` rewrites the read-out digit runs of a text as digits and keeps, for each character
of the rewritten text, where it came from, so that what is found in the rewritten text can be
located (and masked) in the original.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import NamedTuple, Sequence

from normalizer.text import first_char_guard

# -- digits read out one by one ------------------------------------------------------------------

ZH_DIGIT = {"零": 0, "〇": 0, "一": 1, "幺": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
EN_DIGIT = {"zero": 0, "oh": 0, "o": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9}
_REPEAT = {"double": 2, "triple": 3}

# one read-out digit: a Chinese digit character, an English digit word (with "double"/"triple"
# before it), or a written digit
_TOKEN = (r"(?:[零〇一幺二三四五六七八九](?![十百千万块元毛角])"
          r"|(?<![a-z])(?:(?:double|triple)[- ]?)?(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine)(?![a-z])"
          r"|\d)")
_GAP = r"[ \t\u3000-]{0,2}"
MIN_RUN = 5  # shorter runs are ordinary words ("一直", "one or two")
_RUN = re.compile(first_char_guard(rf"{_TOKEN}(?:{_GAP}{_TOKEN}){{{MIN_RUN - 2},}}", re.IGNORECASE), re.IGNORECASE)  # a "double" counts twice
_DIGIT_TOKEN = re.compile(
    r"(?P<zh>[零〇一幺二三四五六七八九])"
    r"|(?P<rep>(?:double|triple)[- ]?(?:zero|three|seven|eight|four|five|nine|one|two|six|oh|o)(?![a-z]))"
    r"|(?P<en>(?:zero|three|seven|eight|four|five|nine|one|two|six|oh|o)(?![a-z]))"
    r"|(?P<d>\d)",
    re.IGNORECASE,
)


class View(NamedTuple):
    text: str
    starts: list[int] | None  # per character of ``text``: where it starts in the original (None: the same text)
    ends: list[int] | None  # ... and where it ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of ``text[start:end]``."""
        if self.starts is None or self.ends is None:
            return start, end
        return self.starts[start], self.ends[end - 1]


def _digit_runs(text: str) -> list[tuple[int, int, str]]:
    """(start, end, digits) of each run of at least MIN_RUN read-out digits (at least one of
    them spoken: a run of written digits is left as it is)."""
    runs: list[tuple[int, int, str]] = []
    for run in _RUN.finditer(text):
        words = run.group(0)
        if words.isascii() and not any(ch.isalpha() for ch in words):
            continue  # written digits only
        digits: list[str] = []
        for tok in _DIGIT_TOKEN.finditer(words):
            if tok.group("zh"):
                digits.append(str(ZH_DIGIT[tok.group("zh")]))
            elif tok.group("rep"):  # "double-oh", "triple five"
                said = tok.group("rep").lower()
                times = _REPEAT[said[:6]]
                digits.extend(str(EN_DIGIT[said[6:].strip("- ")]) * times)
            elif tok.group("en"):
                digits.append(str(EN_DIGIT[tok.group("en").lower()]))
            else:
                digits.append(tok.group("d"))
        if len(digits) >= MIN_RUN:
            runs.append((run.start(), run.end(), "".join(digits)))
    return runs


def digit_view(text: str) -> View:
    """``text`` with each read-out digit run written as digits ("幺三八 零零一三 七七二一" ->
    "13800137721"); a "plus" right before a run becomes "+"."""
    runs = _digit_runs(text)
    if not runs:
        return View(text, None, None)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for start, end, digits in runs:
        plus = re.search(r"(?i)(?:plus|\+)\s*$", text[pos:start])
        cut = pos + plus.start() if plus else start
        for i in range(pos, cut):
            out.append(text[i])
            starts.append(i)
            ends.append(i + 1)
        if plus:
            out.append("+")
            starts.append(cut)
            ends.append(start)
        # each digit maps to the whole run: a number found in it covers the words it was read from
        for ch in digits:
            out.append(ch)
            starts.append(start)
            ends.append(end)
        pos = end
    for i in range(pos, len(text)):
        out.append(text[i])
        starts.append(i)
        ends.append(i + 1)
    return View("".join(out), starts, ends)


def spoken_digits(text: str) -> str:
    return digit_view(text).text


# -- Chinese numerals -----------------------------------------------------------------------------

_ZH_UNIT = {"十": 10, "拾": 10, "百": 100, "佰": 100, "千": 1000, "仟": 1000}
_ZH_DIGIT_ALL = {**ZH_DIGIT, "两": 2, "壹": 1, "贰": 2, "叁": 3, "肆": 4, "伍": 5, "陆": 6, "柒": 7, "捌": 8, "玖": 9}
ZH_NUMERAL = "零〇一幺二两三四五六七八九十百千万拾佰仟壹贰叁肆伍陆柒捌玖"
_ZH_AMOUNT_CHAR = re.compile("[" + re.escape(ZH_NUMERAL + "毛角块元蚊") + "]")


def chinese_integer(s: str) -> int | None:
    """"两千五" -> 2500 (a digit after the last unit is the next lower unit, as people say it),
    "一百二十八" -> 128, "十二" -> 12, "一千零五十" -> 1050, "一万五" -> 15000, "三五" -> None."""
    if not s or any(ch not in ZH_NUMERAL for ch in s):
        return None
    if not any(ch in _ZH_UNIT or ch == "万" for ch in s):
        return _ZH_DIGIT_ALL[s] if len(s) == 1 else None  # a digit string is a read-out id, not a number
    total, section, digit, last_unit, zero_seen = 0, 0, None, 0, False
    for ch in s:
        if ch in _ZH_DIGIT_ALL:
            if digit is not None and not zero_seen and _ZH_DIGIT_ALL[ch] != 0:
                return None  # two digits in a row ("三五") are not one number
            value = _ZH_DIGIT_ALL[ch]
            if value == 0:
                zero_seen = True
                digit = None
                continue
            digit = value
        elif ch in _ZH_UNIT:
            unit = _ZH_UNIT[ch]
            if last_unit and unit >= last_unit and section:
                return None  # "百千" out of order
            section += (digit if digit is not None else 1) * unit
            digit, last_unit, zero_seen = None, unit, False
        elif ch == "万":
            section += digit or 0
            if section == 0:
                return None
            total += section * 10000
            section, digit, zero_seen = 0, None, False
            last_unit = 10000
    if digit is not None:
        # "两千五": a bare digit right after a unit is the next unit down (not after a zero:
        # "一千零五" is 1005)
        if last_unit >= 100 and not zero_seen:
            section += digit * (last_unit // 10 if last_unit != 10000 else 1000)
        else:
            section += digit
    return total + section


# an amount in Chinese: numerals (or digits) + 块/元/蚊 [+ a digit of 角 (毛)] [+ 分], or 毛/角 alone
_ZH_AMOUNT = re.compile(
    rf"(?P<int>[{ZH_NUMERAL}]+|\d+)(?:(?P<unit>块钱|块|元|圆|蚊|港币|港元|美元|美金|欧元|英镑)(?!多)"
    rf"(?:(?P<jiao>[{ZH_NUMERAL}]|\d)(?:毛|角)?(?:(?P<fen>[{ZH_NUMERAL}]|\d)分?)?)?"
    rf"|(?P<mao>毛|角)(?P<fen2>[{ZH_NUMERAL}]|\d)?)"
)
_ZH_CURRENCY = {"块钱": "CNY", "块": "CNY", "元": "CNY", "圆": "CNY", "蚊": "HKD", "港币": "HKD", "港元": "HKD",
                "美元": "USD", "美金": "USD", "欧元": "EUR", "英镑": "GBP"}
# numerals without a unit: taken as money when they name hundreds or more and nothing but money
# is counted ("转了两千五" is an amount; "三百多" is approximate, "两千次" counts something else)
_ZH_BARE = re.compile(rf"(?<![{ZH_NUMERAL}\d几])(?P<int>[一二两三四五六七八九壹贰叁肆伍陆柒捌玖十拾][{ZH_NUMERAL}]*[百千万佰仟]"
                      rf"[{ZH_NUMERAL}]*)(?![{ZH_NUMERAL}])")
_ZH_NOT_MONEY = re.compile(r"(?:多|来|余|次|天|个|年|月|日|号|岁|人|条|张|遍|周|倍|公里|米|分钟|小时|笔|回|户|页|秒|期|项|家|"
                           r"位|台|部|件|份|克|斤|层|楼|路|亿|%|％|分之|度|积分|块钱?|元|毛|角|蚊|步|字|名|间|支|瓶|杯)")
# voice transcripts put a space between characters ("八 百 块"): spaces between numerals and units go
_ZH_SPACED = re.compile(rf"(?<=[{ZH_NUMERAL}块元毛角分钱])[ \u3000]+(?=[{ZH_NUMERAL}块元毛角分钱])")


def _small(ch: str | None) -> int | None:
    if ch is None:
        return None
    if ch.isdigit():
        return int(ch)
    return _ZH_DIGIT_ALL.get(ch)


class Spoken(NamedTuple):
    start: int
    end: int
    value: Decimal
    currency: str


def _compact(text: str) -> tuple[str, Sequence[int]]:
    """``text`` without the spaces between numerals and units when it is written with a space after
    most Chinese characters (a voice transcript), and where each character came from."""
    if not _ZH_SPACED.search(text):  # (first: most texts have no such space, and it costs least)
        return text, range(len(text) + 1)  # (each character where it was: a range, no list built)
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff")
    spaced = len(re.findall(r"[\u4e00-\u9fff] (?=[\u4e00-\u9fff])", text))
    if not cjk or spaced * 2 < cjk:
        return text, range(len(text) + 1)
    out, where, pos = [], [], 0
    for m in _ZH_SPACED.finditer(text):
        out.append(text[pos:m.start()])
        where.extend(range(pos, m.start()))
        pos = m.end()
    out.append(text[pos:])
    where.extend(range(pos, len(text) + 1))
    return "".join(out), where


def chinese_amounts(text: str) -> list[Spoken]:
    """Amounts written in Chinese numerals: "六十八块八" 68.80, "八百块" 800, "一百二十八块五" 128.50,
    "五毛" 0.50, "两千五" (no unit, hundreds or more) 2500."""
    if not _ZH_AMOUNT_CHAR.search(text):
        return []
    compact, where = _compact(text)
    found: list[Spoken] = []
    taken: list[tuple[int, int]] = []
    for m in _ZH_AMOUNT.finditer(compact):
        raw = m.group("int")
        if raw.isdigit():
            if not (m.group("jiao") or m.group("mao")):
                continue  # "50块" is the written-digit amount extract.py reads already
            integer = int(raw)
        else:
            integer = chinese_integer(raw)
        if integer is None:
            continue
        end = m.end()
        if m.group("mao"):  # "五毛", "八毛五"
            jiao, fen = integer, _small(m.group("fen2")) or 0
            if jiao > 9:
                continue
            value = Decimal(jiao) / 10 + Decimal(fen) / 100
            currency = "CNY"
        else:
            jiao, fen = _small(m.group("jiao")) or 0, _small(m.group("fen")) or 0
            if (m.group("jiao") and compact[m.end("jiao"):m.end("jiao") + 1] not in ("毛", "角")
                    and _ZH_NOT_MONEY.match(compact, m.end("jiao"))):
                jiao, fen, end = 0, 0, m.end("unit")  # "4块 一次4块": the 一 counts times, it is no 角
            value = Decimal(integer) + Decimal(jiao) / 10 + Decimal(fen) / 100
            currency = _ZH_CURRENCY[m.group("unit")]
        if value > 0:
            found.append(Spoken(where[m.start()], where[end - 1] + 1, value, currency))
            taken.append((m.start(), end))
    for m in _ZH_BARE.finditer(compact):
        if any(s <= m.start() < e for s, e in taken) or _ZH_NOT_MONEY.match(compact, m.end()):
            continue
        integer = chinese_integer(m.group("int"))
        if integer and integer >= 100:
            found.append(Spoken(where[m.start()], where[m.end() - 1] + 1, Decimal(integer), "CNY"))
    return sorted(found)


# -- English number words -------------------------------------------------------------------------

_EN_SMALL = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen".split())}
_EN_TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
_EN_WORD = "|".join(sorted([*_EN_SMALL, *_EN_TENS, "hundred", "thousand", "a", "and", "oh"], key=len, reverse=True))
_EN_NUMBER = re.compile(first_char_guard(rf"(?<![a-z])(?:{_EN_WORD})(?:[ -]+(?:{_EN_WORD}))*(?![a-z])", re.IGNORECASE),
                        re.IGNORECASE)
_EN_UNIT = re.compile(
    r"[ -]*(?P<unit>dollars?|bucks?|usd|pounds?|quid|euros?|yuan|kuai|rmb|hong kong dollars?|hk dollars?|"
    r"singapore dollars?|cents?|pence|p)(?![a-z])", re.IGNORECASE)
_EN_CURRENCY = {"dollar": "USD", "buck": "USD", "usd": "USD", "pound": "GBP", "quid": "GBP", "euro": "EUR",
                "yuan": "CNY", "kuai": "CNY", "rmb": "CNY", "hong kong dollar": "HKD", "hk dollar": "HKD",
                "singapore dollar": "SGD"}
_WHOLE_UNITS = ("dollar", "buck", "pound", "quid", "euro")
_EN_CENTS = re.compile(
    rf"(?:\s+and)?\s+((?:{'|'.join(_EN_TENS)})(?:[ -](?:one|two|three|four|five|six|seven|eight|nine))?"
    r"|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen)(?:\s+cents?)?(?![a-z])",
    re.IGNORECASE)
_EN_MONEY_CONTEXT = re.compile(
    r"(?:charged?|paid|pay|paying|cost|costs|refund(?:ed)?|refund of|fee|price|bill|billed|amount|spent|owe|took out|"
    r"taken|withdrew|sent|transferred|topped up|top up|deducted|debited|twice|x2|for|deposit|it was|was like|shows|"
    r"balance|charge|扣|付|收|退)\W*(?:(?:uh|um|like|about|of)\W+)*(?:\w+\W+){0,1}$", re.IGNORECASE)


class _Number(NamedTuple):
    first: int  # index of its first word
    last: int  # index after its last word
    value: int
    shape: str  # "digit" (one to nine), "teen" (10-19), "tens" (20-99), "big" (with hundred / thousand)


def _numbers(words: list[str]) -> list[_Number]:
    """Split a run of number words into the numbers said: "two three four sixty four twenty" ->
    2, 3, 4, 64, 20; "four hundred and thirty" -> 430; "a hundred" -> 100."""
    out: list[_Number] = []
    i, n = 0, len(words)
    while i < n:
        w = words[i]
        if w in ("and", "oh") or (w == "a" and not (i + 1 < n and words[i + 1] in ("hundred", "thousand"))):
            i += 1
            continue
        first, total, current, shape = i, 0, 0, ""
        j = i
        while j < n:
            w = words[j]
            if w == "a" and not current and not total and j + 1 < n and words[j + 1] in ("hundred", "thousand"):
                current, j = 1, j + 1
                continue
            if w in _EN_TENS:
                if current % 100 or (shape and shape not in ("big",)):
                    break
                current += _EN_TENS[w]
                shape = shape or "tens"
            elif w in _EN_SMALL:
                value = _EN_SMALL[w]
                if shape == "tens" and current % 10 == 0 and 0 < value < 10:
                    current += value
                elif shape == "big" and current % 100 == 0 and (value or not current):
                    current += value
                elif not shape:
                    current, shape = value, "digit" if value < 10 else "teen"
                else:
                    break
            elif w == "hundred":
                if not current or current >= 100 or shape == "big":
                    break
                current, shape = current * 100, "big"
            elif w == "thousand":
                if not (current or total) or total:
                    break
                total, current, shape = (current or 1) * 1000, 0, "big"
            elif w == "and":
                if shape != "big" or j + 1 >= n or words[j + 1] not in _EN_SMALL and words[j + 1] not in _EN_TENS:
                    break
            else:
                break
            j += 1
        if j == first:
            i += 1
            continue
        out.append(_Number(first, j, total + current, shape))
        i = j
    return out


def _price(numbers: list[_Number]) -> tuple[int, int, Decimal] | None:
    """A price said the way people say it, at the end of the numbers: "sixty four twenty" 64.20,
    "eight seventy five" 8.75, "three twenty eight sixty" 328.60 (hundreds left out)."""
    if len(numbers) < 2:
        return None
    whole, cents = numbers[-2], numbers[-1]
    if cents.shape not in ("tens", "teen"):
        return None
    value, first = whole.value, whole.first
    before = numbers[-3] if len(numbers) >= 3 else None
    if (before is not None and before.shape == "digit" and whole.shape in ("tens", "teen")
            and (len(numbers) < 4 or numbers[-4].shape != "digit")):
        value, first = before.value * 100 + whole.value, before.first  # "three twenty eight"
    elif before is not None and before.shape == "digit" and whole.shape == "digit":
        return None  # digits read out one by one (an id), not a price
    return first, cents.last, Decimal(value) + Decimal(cents.value) / 100


def english_amounts(text: str) -> list[Spoken]:
    """Amounts in English words: "a hundred dollars" 100, "sixty two dollars thirty" 62.30, "five
    bucks" 5, "four hundred and thirty pounds" 430 GBP, and, after a word about money, prices said
    the way people say them ("charged eight seventy five" 8.75, "sixty four twenty twice" 64.20)."""
    found: list[Spoken] = []
    for m in _EN_NUMBER.finditer(text):
        tokens = [(t.group(0).lower(), m.start() + t.start(), m.start() + t.end())
                  for t in re.finditer(r"[A-Za-z]+", m.group(0))]
        words = [t[0] for t in tokens]
        numbers = _numbers(words)
        if not numbers:
            unit = _EN_UNIT.match(text, m.end())
            if words[-1:] == ["a"] and unit and unit.group("unit").lower().startswith(_WHOLE_UNITS):
                numbers = [_Number(len(words) - 1, len(words), 1, "digit")]  # "a dollar fifty"
            else:
                continue
        last = numbers[-1]
        end = tokens[last.last - 1][2]
        unit = _EN_UNIT.match(text, end)
        if unit is not None:
            name = unit.group("unit").lower()
            start = tokens[last.first][1]
            if name in ("cents", "cent", "pence", "p"):
                if last.value < 100 and (name != "p" or last.value):
                    currency = "USD" if "cent" in name else "GBP"
                    found.append(Spoken(start, unit.end(), Decimal(last.value) / 100, currency))
                continue
            currency = next(c for k, c in _EN_CURRENCY.items() if name.startswith(k))
            value, stop = Decimal(last.value), unit.end()
            cents = _EN_CENTS.match(text, stop)  # "sixty two dollars thirty"
            if cents:
                said = _numbers(re.split(r"[ -]+", cents.group(1).lower()))
                if len(said) == 1 and said[0].value < 100:
                    value += Decimal(said[0].value) / 100
                    stop = cents.end()
            if value > 0:
                found.append(Spoken(start, stop, value, currency))
            continue
        first_word = tokens[numbers[0].first][1]
        if not _EN_MONEY_CONTEXT.search(text[max(0, first_word - 40):first_word]) and not re.match(
                r"\s*(?:twice|each|x\s?2)\b", text[end:], re.IGNORECASE):
            continue
        price = _price(numbers)
        if price is not None:
            found.append(Spoken(tokens[price[0]][1], tokens[price[1] - 1][2], price[2], "USD"))
        elif last.shape == "big" and last.value >= 100:
            found.append(Spoken(tokens[last.first][1], end, Decimal(last.value), "USD"))
    return found
