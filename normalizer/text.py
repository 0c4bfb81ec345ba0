"""Text helpers: splitting a reply for the senders; first-character guards and literal trees that
make the large alternations of the readers of customers' words (repeat cues, topic terms, amounts,
incident concepts) cheaper."""

from __future__ import annotations

import re
from typing import Any

#: How many texts the readers of a message's words (amounts, PII, repeat terms, the model's input)
#: remember their answers for: a worker runs up to ``worker_max_jobs`` (50) messages at once, and a
#: job reads its text at several steps with other jobs' steps in between, so a memo of 16 texts
#: had forgotten a text by its next step under load.
TEXT_MEMO = 256


def split_text(text: str, limit: int) -> list[str]:
    """Split a long reply into messages of at most ``limit`` characters, at sentence ends where
    possible (Chinese 。！？ or Latin .!? or line breaks), never inside a surrogate pair."""
    text = text.strip()
    if len(text) <= limit:
        return [text] if text else []
    parts, rest = [], text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind(ch) for ch in "。！？!?.\n；;")
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit - 1
        parts.append(rest[: cut + 1].strip())
        rest = rest[cut + 1 :].lstrip()
    if rest:
        parts.append(rest)
    return [p for p in parts if p]


# -- first-character guards for large alternations --------------------------------------------------

_CATEGORY_CLASS = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
                   "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W"}


class _Unknown(Exception):
    """A construct whose first character is not worked out here: no guard."""


def _parse(pattern: str, flags: int) -> Any:
    try:
        from re import _parser  # type: ignore[attr-defined]
    except ImportError:  # Python < 3.11
        import sre_parse as _parser  # type: ignore[no-redef]
    return _parser.parse(pattern, flags)


def _firsts(items: Any, flags: int, chars: set[str], classes: set[str]) -> tuple[bool, bool]:
    """Adds to ``chars`` / ``classes`` what a match of ``items`` can begin with; answers
    (nullable: it can match nothing, anchored: it can match only where the text starts)."""
    for op, av in items:
        name = str(op)
        if name == "AT":
            if str(av) in ("AT_BEGINNING", "AT_BEGINNING_STRING") and not flags & re.MULTILINE:
                return False, True  # only at the very start: the guard lets that position through
            continue  # \b, $ and the like take no character
        if name in ("ASSERT", "ASSERT_NOT"):
            continue  # look-arounds take no character
        if name == "LITERAL":
            chars.add(chr(av))
            return False, False
        if name == "IN":
            for kind, value in av:
                kind = str(kind)
                if kind == "LITERAL":
                    chars.add(chr(value))
                elif kind == "RANGE" and value[1] - value[0] <= 4096:
                    chars.update(chr(c) for c in range(value[0], value[1] + 1))
                elif kind == "CATEGORY" and str(value) in _CATEGORY_CLASS:
                    classes.add(_CATEGORY_CLASS[str(value)])
                else:
                    raise _Unknown(kind)
            return False, False
        if name == "CATEGORY" and str(av) in _CATEGORY_CLASS:
            classes.add(_CATEGORY_CLASS[str(av)])
            return False, False
        if name in ("SUBPATTERN", "ATOMIC_GROUP"):
            if name == "SUBPATTERN":
                if av[1] or av[2]:
                    raise _Unknown("flags inside a group")
                av = av[3]
            nullable, anchored = _firsts(av, flags, chars, classes)
            if not nullable:
                return False, anchored
            continue
        if name == "BRANCH":
            results = [_firsts(alternative, flags, chars, classes) for alternative in av[1]]
            if not any(nullable for nullable, _ in results):
                return False, any(anchored for _, anchored in results)
            continue
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _, inner = av
            nullable, anchored = _firsts(inner, flags, chars, classes)
            if low > 0 and not nullable:
                return False, anchored
            continue
        raise _Unknown(name)
    return True, False


def _class(chars: set[str], classes: set[str]) -> str:
    points = sorted(ord(c) for c in chars)
    parts: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        parts.append(f"\\U{points[i]:08x}" + (f"-\\U{points[j]:08x}" if j > i else ""))
        i = j + 1
    return "[" + "".join(parts) + "".join(sorted(classes)) + "]"


def _guard(pattern: str, flags: int) -> str:
    """The look-ahead (or start-of-text test) every match of ``pattern`` passes, or ""."""
    chars: set[str] = set()
    classes: set[str] = set()
    try:
        nullable, anchored = _firsts(_parse(pattern, flags), flags, chars, classes)
    except (_Unknown, re.error, AttributeError, TypeError, ValueError):
        return ""
    if nullable or r"\S" in classes or r"\W" in classes or r"\D" in classes:
        return ""
    if not chars and not classes:
        return r"\A" if anchored else ""
    ahead = "(?=" + _class(chars, classes) + ")"
    return f"(?:\\A|{ahead})" if anchored else ahead


def first_char_guard(pattern: str, flags: int = 0) -> str:
    """``pattern`` behind a look-ahead for the characters a match of it can begin with, or as it
    is when that is not worked out (or any character can begin one). The same matches, found
    sooner: the regex engine tries every alternative of an alternation at every position of a
    text, and a look-ahead on one character class turns most positions away at once. Compile the
    result with the same ``flags`` (a case-insensitive class takes what a case-insensitive
    literal takes)."""
    guard = _guard(pattern, flags)
    return f"{guard}(?:{pattern})" if guard else pattern


def guarded_alternation(alternatives: list[str], flags: int = 0, chunk: int = 8) -> str:
    """``"|".join(alternatives)`` (the same alternatives in the same order: the same matches) behind
    the union of their first-character guards, and each run of ``chunk`` of them behind its own,
    so that a position where the whole set may begin tries only the runs that may begin there
    (the repeat-report follow-up cues, ~130 alternatives: 0.053 -> 0.038 ms a text)."""
    runs = ["|".join(f"(?:{a})" for a in alternatives[i:i + chunk]) for i in range(0, len(alternatives), chunk)]
    return first_char_guard("|".join(first_char_guard(run, flags) for run in runs), flags)


def literal_trie(words: list[str]) -> str:
    """A pattern matching, at each position, the longest of ``words`` (literal strings) that begins
    there: what ``"|".join`` of them escaped, longest first, matches, written as a tree of their
    shared beginnings ("crash(?:e(?:d|s)|ing)?"), so that a position is decided by one path
    instead of by trying every word (the incident concepts, 77 words: ~9 -> ~6 µs a text). Each
    step takes at most one branch (the branches begin with different characters) and ends a
    word as late as it can, so the match is that longest word. Case-sensitive: compiled with
    ``re.IGNORECASE`` two branches may take the same character ("Ab" and "abc"), and the first
    would win, not the longest."""
    tree: dict[str, Any] = {}
    for word in words:
        if not word:
            raise ValueError("an empty word matches everywhere")
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def pattern(node: dict[str, Any]) -> str:
        branches = [re.escape(char) + pattern(node[char]) for char in sorted(node) if char]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        return "(?:" + "|".join(branches) + ")" + ("?" if "" in node else "")

    return pattern(tree)
