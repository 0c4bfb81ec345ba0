"""Masking personal data (card, ID and phone numbers, e-mail addresses) before text is logged."""

from __future__ import annotations

import logging
import re

# Runs of 7+ digits (optionally split by spaces/dashes) cover phone, card and ID numbers;
# an ID number may end in X.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z_-])\+?\d(?:[ -]?\d){6,}[Xx]?(?![0-9A-Za-z])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Credentials that providers put in URLs: Telegram's /bot<token>/, access_token=... query values.
_SECRET = re.compile(r"(/bot)\d+:[A-Za-z0-9_-]+|((?:access_token|secret|appsecret_proof)=)[^&\s\"']+")


def _mask_secret(match: re.Match[str]) -> str:
    return (match.group(1) or match.group(2)) + "[secret]"


def _mask_digits(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return f"[number ···{digits[-2:]}]" if len(digits) > 8 else "[number]"


def mask_text(text: str) -> str:
    """Replace anything that looks like a personal number or address, or a credential in a URL,
    with a placeholder."""
    text = _SECRET.sub(_mask_secret, text)
    text = _EMAIL.sub("[email]", text)
    return _DIGIT_RUN.sub(_mask_digits, text)


class MaskingFilter(logging.Filter):
    """A logging filter that masks personal data in every record's final message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        masked = mask_text(message)
        if masked != message or record.args:
            record.msg, record.args = masked, ()
        if record.exc_info:  # exception texts can quote customer input too
            record.exc_text = mask_text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
