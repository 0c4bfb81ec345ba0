"""Table-driven mail parsing: quoting styles (en / zh), signatures, loop headers, robots (auto-replies,
bounces), what makes two copies one mail, charsets, refusals."""

from __future__ import annotations

import base64

import pytest

from normalizer.mail import MailParseError, decode_bytes, html_to_text, mail_digest, parse_mail, strip_quoted

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
    # mail a person may have written, but no acknowledgement may answer: taken, not answered
    ("List-Id: <x.example.com>\n", "list"),
    ("List-Unsubscribe: <mailto:u@x>\n", "list"),
    ("X-Auto-Response-Suppress: OOF\n", "auto-reply-suppressed"),
    ("Auto-Submitted: no\n", None),
    ("", None),
    # a robot's mail: never a complaint, and never answered
    ("Auto-Submitted: auto-replied\n", "auto_reply"),
    ("Return-Path: <>\n", "auto_reply"),
]


@pytest.mark.parametrize("extra, reason", LOOPS)
def test_loop_reason(extra, reason):
    raw = mail(f"From: someone@example.com\nSubject: x\n{extra}")
    assert parse_mail(raw).loop_reason == reason


def b64(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


ROBOTS = [
    # (headers, expected kind; None: a person's mail)
    ("Subject: x\nAuto-Submitted: auto-replied\n", "auto_reply"),
    ("Subject: x\nAuto-Submitted: auto-generated; owner-email=a@example.com\n", "auto_reply"),
    ("Subject: x\nAuto-Submitted: no\n", None),
    ("Subject: x\nX-Autoreply: yes\n", "auto_reply"),
    ("Subject: x\nX-Autorespond: Vacation\n", "auto_reply"),
    ("Subject: x\nPrecedence: auto_reply\n", "auto_reply"),
    ("Subject: x\nPrecedence: bulk\n", "auto_reply"),
    ("Subject: x\nPrecedence: junk\n", "auto_reply"),
    ("Subject: x\nPrecedence: list\n", "auto_reply"),
    ("Subject: x\nPrecedence: first-class\n", None),
    ("Subject: x\nReturn-Path: <>\n", "auto_reply"),
    ("Subject: Automatic reply: Refund\n", "auto_reply"),
    (f"Subject: {b64('自动回复：退款')}\n", "auto_reply"),
    (f"Subject: {b64('自動回覆: 退款')}\n", "auto_reply"),
    ("Subject: Out of Office: Refund\n", "auto_reply"),
    ("Subject: Out of Office\n", "auto_reply"),
    ("Subject: Out of office hours my card was charged twice\n", None),
    ("Subject: Re: Automatic reply: refund\n", None),  # a person answering one
    ("Subject: x\nList-Id: <group.example.com>\n", None),  # a person's mail relayed by a group address
    ("Subject: x\nX-Auto-Response-Suppress: All\n", None),
]


@pytest.mark.parametrize("headers, kind", ROBOTS)
def test_robots(headers, kind):
    parsed = parse_mail(mail("From: a@example.com\n" + headers))
    assert (parsed.automatic.kind if parsed.automatic else None) == kind
    if kind:
        assert parsed.loop_reason == kind  # and never acknowledged, should anything take it


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@mx.example", "Mail Delivery System <Postmaster@mx.example>",
                                    "MAILER DAEMON <>"])
def test_mailer_daemons_bounce(sender):
    assert parse_mail(mail(f"From: {sender}\nSubject: Undeliverable\n")).automatic.kind == "bounce"


RETURNED = ("Message-ID: <rep_01abc@pay.example>\r\nFrom: care@pay.example\r\nTo: liwei@example.com\r\n"
            "Subject: Re: Refund [C-20261123-000001]\r\n")


def dsn(status_fields: str, original: str = "text/rfc822-headers", report_type: str = "delivery-status",
        sender: str = "MAILER-DAEMON@mx.example") -> bytes:
    returned = RETURNED + "\r\nhello\r\n" if original == "message/rfc822" else RETURNED
    body = ("--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
            + status_fields.replace("\n", "\r\n") + f"\r\n--b\r\nContent-Type: {original}\r\n\r\n" + returned + "--b--\r\n")
    return mail(f"From: {sender}\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <bounce1@mx.example>\n"
                f"MIME-Version: 1.0\nContent-Type: multipart/report; report-type={report_type}; boundary=b\n",
                body.encode())


FAILED = ("Final-Recipient: rfc822; liwei@example.com\nAction: failed\nStatus: 5.1.1\n"
          "Diagnostic-Code: smtp; 550 5.1.1 <liwei@example.com>: Recipient address rejected\n")


@pytest.mark.parametrize("original", ["text/rfc822-headers", "message/rfc822"])
def test_bounce_report_from_a_delivery_status_notification(original):
    parsed = parse_mail(dsn(FAILED, original))
    assert parsed.automatic.kind == "bounce"
    report = parsed.automatic.bounce
    assert (report.action, report.status, report.original_ids) == ("failed", "5.1.1", ["rep_01abc@pay.example"])
    assert report.diagnostic.startswith("smtp; 550 5.1.1")


def test_a_delivery_report_is_a_bounce_whoever_sends_it():
    parsed = parse_mail(dsn(FAILED, sender="notices@mx.example", report_type="x"))
    assert parsed.automatic.kind == "bounce" and parsed.automatic.bounce.failed


def test_bounce_report_delayed_and_mixed_recipients():
    delayed = "Final-Recipient: rfc822; a@example.com\nAction: delayed\nStatus: 4.4.7\n"
    report = parse_mail(dsn(delayed)).automatic.bounce
    assert (report.action, report.status, report.failed) == ("delayed", "4.4.7", False)
    mixed = delayed + "\nFinal-Recipient: rfc822; b@example.com\nAction: failed\nStatus: 5.2.2\n"
    report = parse_mail(dsn(mixed)).automatic.bounce
    assert (report.action, report.status, report.failed) == ("failed", "5.2.2", True)


def test_plain_text_bounces():
    exim = mail("From: Mail Delivery System <Mailer-Daemon@mx.example>\nSubject: Mail delivery failed\n"
                "Auto-Submitted: auto-replied\n",
                b"This message was created automatically by mail delivery software.\r\n\r\n"
                b"  liwei@example.com\r\n    SMTP error from remote mail server after RCPT TO:<liwei@example.com>:\r\n"
                b"    550 5.1.1 User unknown\r\n\r\n------ This is a copy of the message, including all the headers."
                b"\r\n\r\nMessage-ID: <rep_02xyz@pay.example>\r\nSubject: About your request\r\n\r\nhello\r\n")
    report = parse_mail(exim).automatic.bounce
    assert (report.action, report.status, report.original_ids) == ("failed", "5.1.1", ["rep_02xyz@pay.example"])
    bare = mail("From: MAILER-DAEMON@mx.example\nSubject: Returned mail\nIn-Reply-To: <rep_03@pay.example>\n",
                b"The mail could not be delivered.\r\n")
    report = parse_mail(bare).automatic.bounce
    assert (report.action, report.status, report.original_ids) == ("failed", None, ["rep_03@pay.example"])


def test_a_forwarded_bounce_is_a_person_and_a_read_receipt_a_robot():
    import email
    from email.mime.message import MIMEMessage
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    forward = MIMEMultipart()
    forward["From"] = "liwei@example.com"
    forward["Subject"] = "Fwd: my payment notice bounced"
    forward.attach(MIMEText("what does this mean?"))
    forward.attach(MIMEMessage(email.message_from_bytes(dsn(FAILED, sender="x@example.com"))))
    assert parse_mail(forward.as_bytes()).automatic is None
    receipt = mail("From: a@example.com\nSubject: Read: refund\nContent-Type: multipart/report; "
                   "report-type=disposition-notification; boundary=b\n",
                   b"--b\r\nContent-Type: text/plain\r\n\r\nread\r\n--b--\r\n")
    assert parse_mail(receipt).automatic.kind == "auto_reply"


SAME = mail("From: li@example.com\nTo: care@pay.example\nSubject: refund\nDate: Mon, 23 Nov 2026 10:00:00 +0800\n"
            "Message-ID: <one@example.com>\n", b"I was charged twice\r\n")


@pytest.mark.parametrize("other, same", [
    (SAME, True),
    (SAME.replace(b"\r\n", b"\n"), True),  # line endings
    (b"Return-Path: <li@example.com>\r\nReceived: from mx by mx2;\r\n\tMon, 23 Nov 2026 10:00:02 +0800\r\n"
     b"Delivered-To: care@pay.example\r\nX-Spam-Status: No, score=0.1\r\n" + SAME, True),  # delivered again
    (SAME.replace(b"charged twice", b"charged three times"), False),  # one Message-ID, another body
    (SAME.replace(b"10:00:00", b"10:00:01"), False),  # a header the sender set
    (SAME.replace(b"Subject: refund", b"Subject: refund\r\nX-Mailer: other"), False),
])
def test_mail_digest(other, same):
    assert (mail_digest(other) == mail_digest(SAME)) is same


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
