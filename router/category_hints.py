"""A client's ``category_hint``: taken when it names a known category, otherwise ignored.

The customer's words are never refused over a hint: a message with a hint we do not know is
accepted, categorised from its text as if it had no hint, and the answer says so in a
``warnings`` list, so the client can fix its hint without losing the message.
"""

from __future__ import annotations

from router.categorise import CATEGORIES

HINT_IGNORED = "category_hint_ignored"


def accept_category_hint(hint: str | None) -> tuple[str | None, list[dict[str, str]]]:
    """``(the hint to keep, warnings)``: the hint itself when it is a known category (or absent),
    else ``None`` and one warning naming the field and the allowed values."""
    if hint is None or hint in CATEGORIES:
        return hint, []
    return None, [{
        "code": HINT_IGNORED,
        "field": "category_hint",
        "detail": f"category_hint is not one of {', '.join(CATEGORIES)}; it was ignored and the message "
                  "is categorised from its text.",
    }]


__all__ = ["HINT_IGNORED", "accept_category_hint"]
