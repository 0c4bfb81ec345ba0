"""Mail that no person wrote: auto-replies, out-of-office notices, bulk mail and bounces.

Such mail never opens a complaint (``classify`` says what it is and why); a bounce also says
which of our mails it returns and how delivery failed (``BounceReport``), read from an RFC 3464
delivery-status report or, failing that, from the text a mailer daemon quoted.

What counts (RFC 3834 and what mailers really send):

- ``Auto-Submitted`` other than ``no``; ``X-Autoreply`` / ``X-Autorespond``; ``Precedence:
  auto_reply / bulk / junk / list``; a subject that starts "Automatic reply", "Auto reply",
  "Out of Office", "自动回复", "自動回覆" (the prefix, then a colon or nothing: "Out of office hours
  I was charged twice" is a person); a ``multipart/report`` that is not about delivery (a read
  receipt); an empty ``Return-Path`` (``<>``, the null sender only robots use): ``auto_reply``.
- A ``multipart/report`` about delivery (``message/delivery-status``), and anything from
  ``MAILER-DAEMON`` or ``postmaster``: ``bounce``.

``List-Id`` / ``List-Unsubscribe`` and ``X-Auto-Response-Suppress`` are not here: a person's mail
relayed by a group address, or sent from some Outlook set-ups, carries them. Such mail is taken
and only not acknowledged (``normalizer.mail``'s ``loop_reason``).
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Literal

import msgspec

AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"

Kind = Literal["auto_reply", "bounce"]

MAX_ORIGINAL_IDS = 20


class BounceReport(msgspec.Struct, frozen=True):
    """What a bounce says: ``action`` ``failed`` (or ``delayed``, ``delivered``, ``relayed``,
    ``expanded``: a report that is not a failure), the enhanced status code (``5.1.1``) when it
    gives one, the remote server's words, and the Message-IDs of the mail it returns (the mail's
    own, then any other it quotes)."""

    action: str
    status: str | None
    diagnostic: str | None
    original_ids: list[str]

    @property
    def failed(self) -> bool:
        return self.action == "failed"


class Automatic(msgspec.Struct, frozen=True):
    """A mail no person wrote: what kind, why we think so (no personal data: header names and
    fixed words only), and for a bounce what it reports."""

    kind: Kind
    why: str
    bounce: BounceReport | None = None


# -- headers --------------------------------------------------------------------------------


def raw_header(msg: Message, name: str) -> str | None:
    """A header's value without letting a parsing defect raise."""
    try:
        value = msg.get(name)
    except Exception:
        try:
            values = [v for k, v in msg._headers if k.lower() == name.lower()]  # type: ignore[attr-defined]
            value = values[0] if values else None
        except Exception:
            return None
    if value is None:
        return None
    try:
        return str(value)
    except Exception:
        return None


def _token(value: str | None) -> str:
    """The first word of a header value (``auto-replied; owner=…`` → ``auto-replied``)."""
    return re.split(r"[;\s(]", (value or "").strip(), maxsplit=1)[0].lower()[:40]


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _parts(msg: Message, depth: int = 0) -> list[Message]:
    """The mail and its parts, through ``multipart/*`` only: a mail a person forwards
    (``message/rfc822``, say a bounce they got) is one part, never looked into here."""
    if depth > 8:
        return []
    found = [msg]
    try:
        payload = msg.get_payload() if msg.is_multipart() else None
    except Exception:
        payload = None
    if isinstance(payload, list) and _content_type(msg).startswith("multipart/"):
        for part in payload:
            if isinstance(part, Message):
                found += _parts(part, depth + 1)
    return found


# -- auto-replies ---------------------------------------------------------------------------

AUTO_SUBJECT = re.compile(
    r"^\s*(?:automatic\s+reply|auto[\s-]?reply|auto[\s-]?response|out\s+of\s+(?:the\s+)?office(?:\s+auto[\s-]?reply)?"
    r"|自动回复|自動回覆|自动答复|自動回復)\s*(?:[:：]|$)",
    re.IGNORECASE,
)
ROBOT_PRECEDENCE = frozenset({"auto_reply", "bulk", "junk", "list"})
DAEMONS = frozenset({"mailer-daemon", "postmaster", "mailerdaemon"})


def classify(msg: Message, *, from_address: str | None, subject: str, text: str = "") -> Automatic | None:
    """What robot wrote ``msg``, or ``None`` when a person did. ``text`` is the mail's text (a
    mailer daemon's plain-text bounce quotes the returned mail's headers there)."""
    local = (from_address or "").partition("@")[0].lower()
    if not local:  # "MAILER DAEMON <>" has no usable address: its display name tells
        display = (raw_header(msg, "From") or "").lower()
        local = "mailer-daemon" if re.search(r"mailer[\s-]?daemon", display) else ""
    parts = _parts(msg)
    types = {_content_type(p) for p in parts}
    report_type = ""
    if _content_type(msg) == "multipart/report":
        try:
            report_type = str(msg.get_param("report-type") or "").lower()
        except Exception:
            report_type = ""
    delivery_report = ("message/delivery-status" in types or report_type == "delivery-status"
                       or _content_type(msg) == "message/delivery-status")
    if delivery_report:
        return Automatic(BOUNCE, "delivery status report", bounce_report(msg, parts, text))
    if local in DAEMONS:
        return Automatic(BOUNCE, f"from {local}", bounce_report(msg, parts, text))
    if _content_type(msg) == "multipart/report":
        return Automatic(AUTO_REPLY, f"report ({report_type or 'unknown type'})")
    auto = _token(raw_header(msg, "Auto-Submitted"))
    if auto and auto != "no":
        return Automatic(AUTO_REPLY, f"Auto-Submitted: {auto}")
    for name in ("X-Autoreply", "X-Autorespond"):
        value = raw_header(msg, name)
        if value is not None and _token(value) not in ("no", "false", "0"):
            return Automatic(AUTO_REPLY, name)
    precedence = _token(raw_header(msg, "Precedence"))
    if precedence in ROBOT_PRECEDENCE:
        return Automatic(AUTO_REPLY, f"Precedence: {precedence}")
    if AUTO_SUBJECT.match(subject or ""):
        return Automatic(AUTO_REPLY, "the subject says it is an automatic reply")
    if (raw_header(msg, "Return-Path") or "").strip() == "<>":
        return Automatic(AUTO_REPLY, "null Return-Path")
    return None


# -- bounces --------------------------------------------------------------------------------

_STATUS = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.\d{1,3})(?![\d.])")
_QUOTED_ID = re.compile(r"^[ \t>]*Message-ID:[ \t]*<([^<>\s]+)>", re.IGNORECASE | re.MULTILINE)
_MSG_ID = re.compile(r"<([^<>\s]+@[^<>\s]+)>")
_DELAYED = re.compile(r"\b(?:delayed|will\s+(?:keep|continue)\s+trying|not\s+yet\s+been\s+delivered|延迟)\b",
                      re.IGNORECASE)
_ACTION_ORDER = ("failed", "delayed", "relayed", "expanded", "delivered")


def _text_of(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if isinstance(payload, bytes):
        return payload.decode("utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """The field blocks of a ``message/delivery-status`` part (per message, then per recipient)."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for block in payload:
            if isinstance(block, Message):
                try:
                    blocks.append({k.lower(): str(v) for k, v in block.items()})
                except Exception:
                    continue
        return blocks
    text = _text_of(part)  # not parsed into blocks (malformed): read the fields from the text
    for chunk in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
        fields = dict((m.group(1).lower(), m.group(2).strip())
                      for m in re.finditer(r"^([A-Za-z-]+):[ \t]*(.*)$", chunk, re.MULTILINE))
        if fields:
            blocks.append(fields)
    return blocks


def bounce_report(msg: Message, parts: list[Message] | None = None, text: str = "") -> BounceReport:
    """Read a bounce: the recipients' action and status from a delivery-status part (the first
    failed recipient wins), else from the text; the returned mail's Message-ID from its attached
    copy (``message/rfc822`` or ``text/rfc822-headers``), else from the quoted headers in the text,
    and the bounce's own In-Reply-To / References (some servers thread their reports)."""
    parts = parts if parts is not None else _parts(msg)
    recipients: list[dict[str, str]] = []
    ids: list[str] = []
    texts = [text] if text else []
    for part in parts:
        ctype = _content_type(part)
        if ctype == "message/delivery-status":
            recipients += [b for b in _status_blocks(part) if "action" in b or "status" in b]
        elif ctype == "message/rfc822":
            inner = part.get_payload()
            for original in inner if isinstance(inner, list) else [inner]:
                if isinstance(original, Message):
                    ids += _MSG_ID.findall(raw_header(original, "Message-ID") or "")
        elif ctype == "text/rfc822-headers" or (ctype == "text/plain" and not text):
            texts.append(_text_of(part))
    if not msg.is_multipart():  # a plain-text bounce, or a report whose parts did not parse
        texts.append(_text_of(msg))
    for chunk in texts:
        ids += _QUOTED_ID.findall(chunk)
    for name in ("In-Reply-To", "References"):
        ids += _MSG_ID.findall(raw_header(msg, name) or "")
    own = _MSG_ID.findall(raw_header(msg, "Message-ID") or "")
    seen: list[str] = []
    for found in ids:
        if found not in seen and found not in own:
            seen.append(found)

    action, status, diagnostic = "", None, None
    ranked = sorted(recipients, key=lambda b: _rank(b.get("action", "")))
    if ranked:
        first = ranked[0]
        action = _token(first.get("action")) or ""
        code = _STATUS.search(first.get("status", ""))
        status = code.group(1) if code else None
        diagnostic = " ".join(first.get("diagnostic-code", "").split()) or None
        if not action and status:
            action = "failed" if status.startswith("5") else "delayed" if status.startswith("4") else "delivered"
    if not status:
        for chunk in texts:
            code = _STATUS.search(chunk)
            if code:
                status = code.group(1)
                break
    if not action:
        subject = raw_header(msg, "Subject") or ""
        if status and status.startswith("4") or _DELAYED.search(subject):
            action = "delayed"
        elif status and status.startswith("2"):
            action = "delivered"
        else:
            action = "failed"
    return BounceReport(action=action, status=status, diagnostic=diagnostic[:300] if diagnostic else None,
                        original_ids=seen[:MAX_ORIGINAL_IDS])


def _rank(action: str) -> int:
    token = _token(action)
    return _ACTION_ORDER.index(token) if token in _ACTION_ORDER else len(_ACTION_ORDER)


__all__ = ["AUTO_REPLY", "BOUNCE", "Automatic", "BounceReport", "classify", "bounce_report"]
