"""Text helpers shared by the senders."""

from __future__ import annotations


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
