"""Table-driven mail parsing: quoting styles (en / zh), signatures, loop headers, charsets, refusals."""

from __future__ import annotations

import base64

import pytest

from normalizer.mail import MailParseError, decode_bytes, html_to_text, parse_mail, strip_quoted

QUOTED = [
    ("Please refund.\n\nOn Mon, 23 Nov 2026 at 10:00, Care <care@pay.example> wrote:\n> old", "Please refund."),
    ("Please refund.\n\nOn Mon, 23 Nov 2026 at 10:00, Care Desk\n<care@pay.example> wrote:\n> old", "Please refund."),
    ("退款还没到\n\n-----原始邮件-----\n发件人: care@pay.example\n主题: 回复", "退款还没到"),
    ("退款还没到\n------------------ 原始邮件 ------------------\n发件人: \"客服\"", "退款还没到"),
    ("still waiting\n\n-----Original Message-----\nFrom: Care\nSent: Monday\nTo: me\nSubject: x", "still waiting"),
    ("see below\n\nFrom: Care Desk <care@pay.example>\nSent: Monday, November 23, 2026 10:00\nTo: Li Wei\n"
     "Subject: RE: refund\n\nold text", "see below"),
    ("请尽快处理\n\n发件人：客服中心\n发送时间：2026年11月23日 10:00\n收件人：李伟\n主题：回复：退款\n\n旧内容", "请尽快处理"),
    ("好的，谢谢\n\n在 2026年11月23日 星期一 10:00，客服 <care@pay.example> 写道：\n> 旧内容", "好的，谢谢"),
    ("thanks\n> quoted line\n> another", "thanks"),
    ("my answer\n\n-- \nLi Wei\nACME Ltd", "my answer"),
    ("my answer\n\nSent from my iPhone", "my answer"),
    ("我的回复\n\n发自我的iPhone", "我的回复"),
    ("> only a quote\n> nothing new", "> only a quote\n> nothing new"),  # nothing left: keep it all
    ("a > b is not a quote", "a > b is not a quote"),
]


@pytest.mark.parametrize("text, expected", QUOTED)
def test_strip_quoted(text, expected):
    assert strip_quoted(text) == expected


def mail(headers: str, body: bytes = b"hello\r\n") -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


LOOPS = [
    ("Auto-Submitted: auto-replied\n", "auto-submitted"),
    ("Auto-Submitted: no\n", None),
    ("Precedence: bulk\n", "precedence"),
    ("Precedence: junk\n", "precedence"),
    ("List-Id: <x.example.com>\n", "list"),
    ("List-Unsubscribe: <mailto:u@x>\n", "list"),
    ("Return-Path: <>\n", "mailer-daemon"),
    ("X-Autoreply: yes\n", "auto-reply"),
    ("X-Auto-Response-Suppress: OOF\n", "auto-reply"),
    ("", None),
]


@pytest.mark.parametrize("extra, reason", LOOPS)
def test_loop_reason(extra, reason):
    raw = mail(f"From: someone@example.com\nSubject: x\n{extra}")
    assert parse_mail(raw).loop_reason == reason


def test_mailer_daemon_and_bounce():
    assert parse_mail(mail("From: MAILER-DAEMON@mx.example\nSubject: x\n")).loop_reason == "mailer-daemon"
    report = mail("From: a@example.com\nSubject: x\nContent-Type: multipart/report; report-type=delivery-status; "
                  "boundary=b\n", b"--b\r\nContent-Type: text/plain\r\n\r\nfailed\r\n--b--\r\n")
    assert parse_mail(report).loop_reason == "bounce"


HEADERS = [
    ("=?GB2312?B?" + base64.b64encode("退款".encode("gb2312")).decode() + "?=", "退款"),
    ("=?utf-8?Q?=E9=80=80=E6=AC=BE?= please", "退款 please"),
    ("=?unknown-charset?B?" + base64.b64encode("退款".encode("utf-8")).decode() + "?=", "退款"),
    ("=?utf-8?B?not base64!?=", None),  # malformed: anything but an exception
    ("plain subject", "plain subject"),
]


@pytest.mark.parametrize("subject, expected", HEADERS)
def test_subject_decoding(subject, expected):
    parsed = parse_mail(mail(f"From: a@example.com\nSubject: {subject}\n"))
    if expected is not None:
        assert parsed.subject == expected


@pytest.mark.parametrize(
    "data, declared, expected",
    [
        ("退款".encode("gb2312"), "gb2312", "退款"),
        ("𠀀退款".encode("gb18030"), "GBK", "𠀀退款"),  # GBK declared, GB18030 bytes: the superset decodes
        ("帳號".encode("big5"), "big5", "帳號"),
        ("退款".encode("utf-8"), "x-unknown", "退款"),
        ("退款".encode("gbk"), None, "退款"),
        (b"caf\xe9", None, "café"),
    ],
)
def test_decode_bytes(data, declared, expected):
    assert decode_bytes(data, declared) == expected


def test_html_to_text():
    html = "<html><head><title>t</title><script>x()</script></head><body><p>Hello&nbsp;<b>there</b></p><br>line<ul><li>a</li><li>b</li></ul></body></html>"
    text = html_to_text(html)
    assert "x()" not in text and "Hello there" in text and "line" in text


@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"\x00\x01binary garbage\x00", b"just some words without headers"])
def test_not_a_mail(raw):
    with pytest.raises(MailParseError):
        parse_mail(raw)


def test_fields():
    raw = mail("From: \"Li Wei\" <LiWei@Example.COM>\nTo: care@pay.example, other@pay.example\n"
               "Subject: hi\nDate: Mon, 23 Nov 2026 10:00:00 +0800\nMessage-ID: <abc@x>\n"
               "In-Reply-To: <prev@x>\nReferences: <first@x> <prev@x>\n")
    p = parse_mail(raw)
    assert (p.from_address, p.from_name, p.message_id, p.in_reply_to, p.references) == (
        "liwei@example.com", "Li Wei", "abc@x", "prev@x", ["first@x", "prev@x"])
    assert p.to == ["care@pay.example", "other@pay.example"]
    assert p.date.isoformat() == "2026-11-23T02:00:00+00:00"


def test_attachment_limits():
    from email.mime.application import MIMEApplication
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    m = MIMEMultipart()
    m["From"] = "a@example.com"
    m.attach(MIMEText("body"))
    for n in range(3):
        part = MIMEApplication(b"%PDF-1.4" + bytes([n]) * (100 * (n + 1)), "pdf")
        part.add_header("Content-Disposition", "attachment", filename=f"r{n}.pdf")
        m.attach(part)
    p = parse_mail(m.as_bytes(), max_attachment_bytes=250, max_attachments=5)
    assert [a.filename for a in p.attachments] == ["r0.pdf", "r1.pdf"]  # the 308-byte one is over the limit
    p = parse_mail(m.as_bytes(), max_attachments=1)
    assert len(p.attachments) == 1
