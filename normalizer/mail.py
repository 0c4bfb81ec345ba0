"""Mail as people really send it: MIME, charsets (GB2312 / GBK / GB18030 / Big5 / UTF-8,
undeclared 8-bit), RFC 2047 headers, HTML-only bodies, quoted replies and signatures,
attachments, the headers that say a robot wrote it (RFC 3834; ``normalizer.mail_robots``), and
what makes two copies the same mail (``mail_digest``)."""

from __future__ import annotations

import email
import email.policy
import hashlib
import html
import re
from datetime import datetime, timezone
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime

import msgspec

from normalizer.mail_robots import Automatic, classify, raw_header

MAX_MAIL_BYTES = 50 * 1024 * 1024
MAX_DEPTH = 20


class MailParseError(ValueError):
    """The bytes cannot be understood as a mail at all (they go to quarantine)."""


class MailAttachment(msgspec.Struct, frozen=True):
    filename: str | None
    content_type: str
    data: bytes


class ParsedMail(msgspec.Struct):
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    from_address: str | None
    from_name: str | None
    to: list[str]
    date: datetime | None
    text: str
    full_text: str
    attachments: list[MailAttachment]
    loop_reason: str | None
    content_hash: str
    #: A robot wrote it (auto-reply, bulk mail, bounce): never a complaint.
    automatic: Automatic | None = None


# -- charsets -------------------------------------------------------------------------------

_CHARSET_ALIASES = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cp936": "gb18030", "euc-cn": "gb18030",
    "gb_2312-80": "gb18030", "big5-hkscs": "big5hkscs", "x-big5": "big5", "cn-big5": "big5",
    "utf8": "utf-8", "unicode-1-1-utf-7": "utf-7", "ks_c_5601-1987": "cp949", "iso-8859-8-i": "iso-8859-8",
}
_FALLBACKS = ("utf-8", "gb18030", "big5", "latin-1")


def decode_bytes(data: bytes, declared: str | None) -> str:
    """Decode with the declared charset if it works, else the likely ones; never raises."""
    tried = []
    if declared:
        name = declared.strip().strip('"').lower()
        name = _CHARSET_ALIASES.get(name, name)
        tried.append(name)
        try:
            return data.decode(name)
        except (LookupError, UnicodeDecodeError):
            pass
    for name in _FALLBACKS:
        if name in tried:
            continue
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")  # unreachable: latin-1 decodes anything


def decode_header_value(value: object) -> str:
    """RFC 2047 words (even malformed or in an unknown charset) to text; never raises."""
    if value is None:
        return ""
    text = str(value)
    if "=?" not in text:
        return " ".join(text.split())
    try:
        parts = decode_header(text)
    except Exception:
        return " ".join(text.split())
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, bytes):
            out.append(decode_bytes(chunk, charset))
        else:
            out.append(chunk)
    joined = "".join(out) if any(isinstance(c, bytes) for c, _ in parts) else " ".join(out)
    return " ".join(joined.split())


_MSG_ID = re.compile(r"<([^<>\s]+)>")


def _msg_ids(value: str | None) -> list[str]:
    if not value:
        return []
    found = _MSG_ID.findall(value)
    if not found and value.strip():
        found = [value.strip().strip("<>")]
    return [f for f in found if f]


# -- HTML and quoting -----------------------------------------------------------------------

_DROP_BLOCKS = re.compile(r"<(script|style|head|title)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_BREAKS = re.compile(r"<\s*(br|/p|p|/div|div|/li|li|/tr|tr|/h[1-6]|hr|/blockquote|blockquote)\b[^>]*>",
                     re.IGNORECASE)
_TAGS = re.compile(r"<[^>]+>")
_COMMENTS = re.compile(r"<!--.*?-->", re.DOTALL)


def html_to_text(markup: str) -> str:
    markup = _COMMENTS.sub("", markup)
    markup = _DROP_BLOCKS.sub("", markup)
    markup = _BREAKS.sub("\n", markup)
    text = html.unescape(_TAGS.sub("", markup)).replace("\xa0", " ")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    collapsed = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", collapsed).strip()


_QUOTE_STARTS = [
    re.compile(r"^\s*On\b.{0,200}\bwrote:\s*$", re.IGNORECASE),
    re.compile(r"^\s*-{2,}\s*(Original Message|Forwarded message)\s*-{2,}\s*$", re.IGNORECASE),
    re.compile(r"^\s*-{2,}\s*原始邮件\s*-{2,}\s*$"),
    re.compile(r"^\s*-{2,}\s*转发的邮件\s*-{2,}\s*$"),
    re.compile(r"^\s*在\s*.{0,80}写道\s*[:：]\s*$"),
    re.compile(r"^\s*_{10,}\s*$"),  # Outlook's rule above the quoted header block
]
_OUTLOOK_FIELD = re.compile(r"^\s*(From|Sent|To|Cc|Subject|Date|发件人|发送时间|收件人|抄送|主题|日期)\s*[:：]", re.IGNORECASE)
_SIGNATURE_LINES = re.compile(
    r"^\s*(Sent from my \w+|Sent from Mail for Windows|Get Outlook for \w+|发自我的\s*\w+|从我的\s*\w+\s*发送|"
    r"来自\s*\w+\s*客户端|Sent from (?:Yahoo|Gmail) Mail.*)\s*$",
    re.IGNORECASE,
)


def strip_quoted(text: str) -> str:
    """The new part of a reply: cut at the quoted original, then drop the signature."""
    if "\n" not in text:  # one line (an SMS, an app message, a chat): whatever is cut, that line is what is left
        return text.strip()
    return _cut_quoted(text)


def _cut_quoted(text: str) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    cut = len(lines)
    for i, line in enumerate(lines):
        if any(p.match(line) for p in _QUOTE_STARTS):
            cut = i
            break
        # "On Mon, 22 Nov 2026 at 10:00, Li Wei <li@example.com>" + "wrote:" on the next line
        if line.strip().lower().startswith("on ") and i + 1 < len(lines) and lines[i + 1].strip().lower().endswith("wrote:"):
            cut = i
            break
        if _OUTLOOK_FIELD.match(line):
            block = lines[i : i + 5]
            if sum(1 for b in block if _OUTLOOK_FIELD.match(b)) >= 3:
                cut = i
                break
        if line.startswith(">"):
            rest = [x for x in lines[i:] if x.strip()]
            if rest and sum(1 for x in rest if x.startswith(">")) >= len(rest) * 0.8:
                cut = i
                break
    kept = lines[:cut]
    for i, line in enumerate(kept):
        if line.rstrip() == "--" or line == "-- ":
            kept = kept[:i]
            break
    while kept and (not kept[-1].strip() or _SIGNATURE_LINES.match(kept[-1])):
        kept.pop()
    result = "\n".join(kept).strip()
    return result or text.strip()


# -- structure ------------------------------------------------------------------------------


def _part_text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        payload = None
    if payload is None:
        raw = part.get_payload()
        if isinstance(raw, str):
            return raw
        return ""
    charset = None
    try:
        charset = part.get_content_charset()
    except Exception:
        pass
    return decode_bytes(payload, charset)


def _content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if not name:
        try:
            name = part.get_param("name")
            if isinstance(name, tuple):
                name = email.utils.collapse_rfc2231_value(name)
        except Exception:
            name = None
    return decode_header_value(name) or None if name else None


def _disposition(part: Message) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _walk(msg: Message, plains: list[str], htmls: list[str], attachments: list[Message], depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        return
    ctype = _content_type(msg)
    if msg.is_multipart():
        try:
            parts = msg.get_payload()
        except Exception:
            parts = []
        if ctype == "multipart/alternative":
            # the best alternative of this group only: text/plain if present, else HTML
            sub_plain: list[str] = []
            sub_html: list[str] = []
            for part in parts if isinstance(parts, list) else []:
                _walk(part, sub_plain, sub_html, attachments, depth + 1)
            plains.extend(sub_plain)
            if not sub_plain:
                htmls.extend(sub_html)
            return
        for part in parts if isinstance(parts, list) else []:
            if isinstance(part, Message):
                _walk(part, plains, htmls, attachments, depth + 1)
        return
    if ctype == "message/rfc822":
        inner = msg.get_payload()
        inner_msgs = inner if isinstance(inner, list) else [inner]
        for inner_msg in inner_msgs:
            if isinstance(inner_msg, Message):
                _walk(inner_msg, plains, htmls, attachments, depth + 1)
        return
    disposition = _disposition(msg)
    filename = _filename(msg)
    if disposition == "attachment" or (filename and ctype not in ("text/plain", "text/html")):
        attachments.append(msg)
        return
    if ctype == "text/plain" and disposition != "attachment":
        plains.append(_part_text(msg))
    elif ctype == "text/html" and disposition != "attachment":
        htmls.append(_part_text(msg))
    elif ctype.startswith("image/") or ctype == "application/pdf":
        attachments.append(msg)


def _loop_reason(msg: Message, automatic: Automatic | None) -> str | None:
    """Why no acknowledgement may answer this mail: a robot wrote it, or it came through a list
    (a group address relaying a person's mail: taken, not answered), or its sender asked for no
    automatic answers."""
    if automatic is not None:
        return automatic.kind
    if raw_header(msg, "List-Id") or raw_header(msg, "List-Unsubscribe"):
        return "list"
    suppress = (raw_header(msg, "X-Auto-Response-Suppress") or "").lower()
    if "oof" in suppress or "all" in suppress or "autoreply" in suppress:
        return "auto-reply-suppressed"
    return None


def _looks_like_mail(raw: bytes) -> bool:
    head = raw[:8192].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    if b"\x00" in head:
        return False
    return bool(re.search(rb"^[!-9;-~]+:", head, re.MULTILINE))


def parse_mail(raw: bytes, *, max_attachment_bytes: int = 10 * 1024 * 1024, max_attachments: int = 10) -> ParsedMail:
    """Parse one mail. Raises only ``MailParseError``."""
    if not raw or not raw.strip():
        raise MailParseError("empty input")
    if len(raw) > MAX_MAIL_BYTES:
        raise MailParseError(f"mail larger than {MAX_MAIL_BYTES} bytes")
    if not _looks_like_mail(raw):
        raise MailParseError("no header section")
    try:
        return _parse(raw, max_attachment_bytes, max_attachments)
    except MailParseError:
        raise
    except Exception as exc:  # the email package has many corners; none may crash the poller
        raise MailParseError(f"{type(exc).__name__}: {exc}"[:200]) from None


def _parse(raw: bytes, max_attachment_bytes: int, max_attachments: int) -> ParsedMail:
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        _ = msg.get("Subject")  # force header parsing under the default policy
    except Exception:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)

    from_name, from_address = None, None
    from_value = raw_header(msg, "From")
    if from_value:
        name, addr = parseaddr(decode_header_value(from_value) if "=?" in from_value else from_value)
        if "@" in addr and " " not in addr.strip():
            from_address = addr.strip().casefold()
        from_name = decode_header_value(name) or None
    to = []
    for value in filter(None, [raw_header(msg, "To"), raw_header(msg, "Cc")]):
        to += [a.strip().casefold() for _, a in getaddresses([value]) if "@" in a]
    date = None
    date_value = raw_header(msg, "Date")
    if date_value:
        try:
            parsed_date = parsedate_to_datetime(date_value)
            if parsed_date.tzinfo is None:
                parsed_date = parsed_date.replace(tzinfo=timezone.utc)
            date = parsed_date.astimezone(timezone.utc)
        except (TypeError, ValueError, IndexError):
            date = None

    plains: list[str] = []
    htmls: list[str] = []
    parts: list[Message] = []
    _walk(msg, plains, htmls, parts)
    if plains:
        full = "\n\n".join(p.strip() for p in plains if p.strip())
    else:
        full = "\n\n".join(html_to_text(h) for h in htmls if h.strip())
    full = full.replace("\r\n", "\n").replace("\x00", "")

    attachments: list[MailAttachment] = []
    for part in parts:
        if len(attachments) >= max_attachments:
            break
        try:
            data = part.get_payload(decode=True)
        except Exception:
            data = None
        if not data or len(data) > max_attachment_bytes:
            continue
        attachments.append(MailAttachment(filename=_filename(part), content_type=_content_type(part), data=data))

    digest = hashlib.sha256(full.encode("utf-8", "replace"))
    for h in sorted(hashlib.sha256(a.data).hexdigest() for a in attachments):
        digest.update(h.encode())
    message_ids = _msg_ids(raw_header(msg, "Message-ID"))
    in_reply = _msg_ids(raw_header(msg, "In-Reply-To"))
    subject = decode_header_value(raw_header(msg, "Subject"))
    automatic = classify(msg, from_address=from_address, subject=subject, text=full)
    return ParsedMail(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply[0] if in_reply else None,
        references=_msg_ids(raw_header(msg, "References")),
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        to=to,
        date=date,
        text=strip_quoted(full) if full else "",
        full_text=full,
        attachments=attachments,
        loop_reason=_loop_reason(msg, automatic),
        content_hash=digest.hexdigest(),
        automatic=automatic,
    )


# -- identity -------------------------------------------------------------------------------

#: Header fields servers add on the way in (trace, filtering, local delivery, mbox bookkeeping):
#: two deliveries of one mail differ only in these.
TRACE_FIELDS = frozenset({
    b"received", b"x-received", b"return-path", b"delivered-to", b"x-original-to", b"x-delivered-to",
    b"envelope-to", b"x-envelope-to", b"x-envelope-from", b"received-spf", b"authentication-results",
    b"arc-authentication-results", b"arc-message-signature", b"arc-seal", b"x-uid", b"x-keywords",
    b"x-status", b"status", b"x-imap", b"x-imapbase", b"x-mozilla-status", b"x-mozilla-status2",
})
TRACE_PREFIXES = (b"x-spam-", b"x-virus-", b"x-amavis-", b"x-ms-exchange-organization-",
                  b"x-forefront-antispam-", b"x-microsoft-antispam")


def mail_digest(raw: bytes) -> str:
    """What makes two copies one mail: a hash of the bytes as the sender wrote them, with the
    header fields servers add on the way in left out (``TRACE_FIELDS``). The same stored mail
    fetched again (a restart, a second look, a re-scan after UIDVALIDITY changed: IMAP serves a
    stored message's bytes unchanged) and a mail the sending server delivered twice (new
    Received lines) hash the same; two mails that differ anywhere else — body, attachments, any
    header their sender set — never do, even when they carry one Message-ID. Never raises."""
    data = raw.replace(b"\r\n", b"\n")
    head, sep, body = data.partition(b"\n\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t"):  # a folded continuation of the field above
            if not skipping:
                kept.append(line)
            continue
        name, colon, _ = line.partition(b":")
        name = name.strip().lower()
        skipping = bool(colon) and (name in TRACE_FIELDS or name.startswith(TRACE_PREFIXES))
        if not skipping:
            kept.append(line)
    digest = hashlib.sha256(b"\n".join(kept))
    digest.update(sep + body)
    return digest.hexdigest()


__all__ = ["MailParseError", "MailAttachment", "ParsedMail", "parse_mail", "html_to_text", "strip_quoted",
           "decode_bytes", "decode_header_value", "mail_digest"]
