"""The e-mail channel against a real IMAP server (Dovecot) and a real SMTP sink (aiosmtpd)."""

from __future__ import annotations

import asyncio
import base64
import pathlib
import shutil
import tempfile
from email.message import EmailMessage
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest
import redis.asyncio as aioredis

from adapters.app import AppChannel
from adapters.email import EmailChannel, MailboxPoller, MailboxSettings, SmtpSettings
from router.intake import Intake
from router.store import ComplaintStore
from normalizer.evidence import DirectoryBlobStore
from plugins.contract import GatewayServices
from plugins.manager import GatewayPlugins
from router.worker import create_worker
from tests.conftest import SUPERVISOR
from tests.mailservers import Dovecot, dovecot_available, start_smtp_sink

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not dovecot_available(), reason="needs Debian's dovecot-imapd")]

USER = "desk@example.com"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


@pytest.fixture(scope="module")
def dovecot():
    # Dovecot's own processes (user dovecot) must reach the files: pytest's temp dirs are 0700
    root = pathlib.Path(tempfile.mkdtemp(prefix="cg-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(root, {USER: "secret", "other@example.com": "secret2"}).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


class Box:
    """One folder of the desk's mailbox per test, so tests do not see each other's mail."""

    def __init__(self, dovecot, folder):
        self.dovecot, self.folder = dovecot, folder
        imap = dovecot.client(USER)
        imap.create(folder)
        imap.logout()

    def append(self, raw: bytes) -> None:
        self.dovecot.append(USER, raw, self.folder)

    def set_uidvalidity(self, value: int) -> None:
        self.dovecot.set_uidvalidity(USER, value, self.folder)


@pytest.fixture
def box(dovecot, prefix):
    return Box(dovecot, "t" + prefix.strip(":"))


@pytest.fixture
def smtp():
    controller, sink = start_smtp_sink()
    yield controller, sink
    controller.stop()


@pytest.fixture
async def services(settings):
    r = aioredis.Redis.from_url(settings.redis_url)
    store = ComplaintStore(settings.redis_prefix)
    store.bind(r)
    yield GatewayServices(settings=settings, intake=Intake(store), store=store,
                          blobs=DirectoryBlobStore(settings.evidence_dir), redis=r)
    await r.aclose()


def channel_settings(box, smtp_port, **mailbox):
    return EmailChannel.Settings(
        mailboxes=[MailboxSettings(host="127.0.0.1", port=box.dovecot.port, security="none", user=USER,
                                   password=box.dovecot.users[USER], folder=box.folder, name=box.folder,
                                   poll_seconds=0.2, timeout_seconds=5, **mailbox)],
        smtp=SmtpSettings(host="127.0.0.1", port=smtp_port, security="none", from_address="care@pay.example"),
    )


async def drain(settings, channel):
    plugins = GatewayPlugins()
    plugins.register("app", AppChannel())
    plugins.register("email", channel)
    plugins.check()
    worker = create_worker(settings, burst=True, handle_signals=False, plugins=plugins)
    try:
        await worker.main()
    finally:
        await worker.close()


async def catch_up(services, channel_settings_):
    """One pass of the poller's sync, as the running poller does it between IDLEs."""
    from adapters.email import MailboxState

    poller = MailboxPoller(channel_settings_.mailboxes[0], channel_settings_)
    client = await asyncio.to_thread(poller._connect)
    try:
        done = asyncio.get_running_loop().create_future()  # a lease renewer that never fails
        return await poller.catch_up(services, client, MailboxState(services, poller.mailbox.label), done)
    finally:
        await asyncio.to_thread(client.logout)


def mail(subject="Refund", body="I was charged twice, please refund $35.99", sender="Li Wei <liwei@example.com>",
         message_id=None, **headers) -> bytes:
    m = EmailMessage()
    if sender:
        m["From"] = sender
    m["To"] = USER
    m["Subject"] = subject
    if message_id:
        m["Message-ID"] = f"<{message_id}>"
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content(body)
    return bytes(m)


def lf(raw: bytes) -> bytes:
    """Line ends as the tests write them (the server keeps mail with CRLF)."""
    return raw.replace(b"\r\n", b"\n")


def raw_mail(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode() + b"\r\n" + body


CHARSET_CASES = [
    # (raw mail, expected text fragment, expected subject)
    (raw_mail("From: a@example.com\nSubject: =?GB2312?B?1ti4tL/bv+4=?=\nMessage-ID: <gb1@x>\n"
              "Content-Type: text/plain; charset=GB2312\nContent-Transfer-Encoding: base64\n",
              base64.b64encode("我被重复扣款了 ￥128.50".encode("gb2312")) + b"\r\n"), "重复扣款", "重复扣款"),
    (raw_mail("From: b@example.com\nSubject: =?GBK?Q?=CD=CB=BF=EE?=\nMessage-ID: <gbk1@x>\n"
              "Content-Type: text/plain; charset=GBK\nContent-Transfer-Encoding: 8bit\n",
              "退款没有收到，交易号 T2026112212345678".encode("gbk")), "退款没有收到", "退款"),
    (raw_mail("From: c@example.com\nSubject: gb18030\nMessage-ID: <gb18@x>\n"
              "Content-Type: text/plain; charset=GB18030\nContent-Transfer-Encoding: 8bit\n",
              "手续费太高 𠀀".encode("gb18030")), "手续费太高", "gb18030"),
    (raw_mail("From: d@example.com\nSubject: =?big5?B?sWK4ubNRreG1sg==?=\nMessage-ID: <big5@x>\n"
              "Content-Type: text/plain; charset=big5\nContent-Transfer-Encoding: 8bit\n",
              "帳號被凍結了".encode("big5")), "帳號被凍結了", "帳號被凍結"),
    (raw_mail("From: e@example.com\nSubject: undeclared\nMessage-ID: <u8@x>\n", "余额查询 请帮忙".encode("gbk")),
     "余额查询", "undeclared"),
    (raw_mail("From: f@example.com\nSubject: =?utf-8?Q?App_=E9=97=AA=E9=80=80?=\nMessage-ID: <html@x>\n"
              "Content-Type: text/html; charset=utf-8\n",
              "<html><head><style>p{}</style></head><body><p>应用<b>闪退</b>&amp;打不开</p></body></html>".encode()),
     "应用闪退&打不开", "App 闪退"),
]


async def test_charsets_and_structures_become_complaints(box, dovecot, smtp, services, settings):
    controller, sink = smtp
    for raw, _, _ in CHARSET_CASES:
        box.append(raw)
    cs = channel_settings(box, controller.port)
    assert await catch_up(services, cs) == len(CHARSET_CASES)
    await drain(settings, EmailChannel(cs))
    complaints, _ = await services.store.list(limit=50)
    by_subject = {c.messages[0].subject: c for c in complaints}
    for _, fragment, subject in CHARSET_CASES:
        match = [c for s, c in by_subject.items() if subject in (s or "")]
        assert match, f"no complaint with subject {subject!r}: {list(by_subject)}"
        assert fragment in match[0].messages[0].text
    assert len(sink.messages) == len(CHARSET_CASES)  # one acknowledgement each


async def test_acknowledgement_threads_and_a_reply_joins_the_case(box, dovecot, smtp, services, settings):
    controller, sink = smtp
    box.append(mail(message_id="first@customer.example", subject="Charged twice"))
    cs = channel_settings(box, controller.port)
    channel = EmailChannel(cs)
    await catch_up(services, cs)
    await drain(settings, channel)
    (complaint,), _ = await services.store.list(limit=5)
    ack = sink.messages[0]
    assert ack["In-Reply-To"] == "<first@customer.example>"
    assert complaint.case_number in ack["Subject"] and ack["Subject"].startswith("Re: Charged twice")
    assert ack["Auto-Submitted"] == "auto-replied"
    assert sink.envelopes[0][1] == ["liwei@example.com"]
    assert complaint.case_number in ack.get_content()

    # the customer answers the acknowledgement: a follow-up, not a new case, no second ack
    box.append(mail(message_id="second@customer.example", subject=f"Re: {ack['Subject']}",
                                      body="Here is the screenshot\n\nOn Mon, Nov 23 2026, Care wrote:\n> old text",
                                      In_Reply_To=ack["Message-ID"], References=f"<first@customer.example> {ack['Message-ID']}"))
    # and a mail quoting only the case number in its subject joins too
    box.append(mail(message_id="third@customer.example", subject=f"about {complaint.case_number}",
                                      body="any news?"))
    await catch_up(services, cs)
    await drain(settings, channel)
    complaints, _ = await services.store.list(limit=5)
    assert len(complaints) == 1
    texts = [m.text for m in complaints[0].messages]
    assert texts[1:] == ["Here is the screenshot", "any news?"]
    assert len(sink.messages) == 1

    # an agent's reply goes out in the same thread
    from router.context import WorkerContext
    from router.delivery import send_reply
    from tests.conftest import AGENT_TOKENS  # noqa: F401 - documents who answers

    from router.store import TxEffects
    from normalizer.schema import Reply
    from datetime import datetime, timezone

    def add_reply(c, effects: TxEffects):
        c.replies.append(Reply(id="rep_agent1", kind="agent", text="已为您退款", author="agent:alice",
                               channel="email", created_at=datetime.now(timezone.utc)))

    await services.store.update(complaint.id, add_reply)
    plugins = GatewayPlugins()
    plugins.register("email", channel)
    await send_reply(WorkerContext.of(settings, services.store, plugins, services).job_ctx(), complaint.id, "rep_agent1")
    answer = sink.messages[-1]
    assert answer["In-Reply-To"] == "<third@customer.example>"
    assert "first@customer.example" in answer["References"]
    assert answer["Auto-Submitted"] is None
    assert (await services.store.get(complaint.id)).replies[-1].delivery == "sent"


ROBOTS = [
    # (headers of a robot's mail, the kind it is kept as)
    ({"Auto_Submitted": "auto-replied"}, "auto_reply"),
    ({"Auto_Submitted": "auto-generated"}, "auto_reply"),
    ({"X_Autoreply": "yes"}, "auto_reply"),
    ({"X_Autorespond": "yes"}, "auto_reply"),
    ({"Precedence": "auto_reply"}, "auto_reply"),
    ({"Precedence": "bulk"}, "auto_reply"),
    ({"Precedence": "junk"}, "auto_reply"),
    ({"Precedence": "list"}, "auto_reply"),
    ({"subject": "Automatic reply: Charged twice"}, "auto_reply"),
    ({"subject": "自动回复: 退款"}, "auto_reply"),
    ({"subject": "Out of Office: Charged twice"}, "auto_reply"),
    ({"sender": "MAILER-DAEMON@mx.example.com", "subject": "Undelivered Mail Returned to Sender"}, "bounce"),
]


async def test_auto_replies_and_bounces_never_open_a_case_and_stay_visible(box, smtp, services, settings, client):
    controller, sink = smtp
    robots = []
    for n, (headers, _) in enumerate(ROBOTS):
        headers = {"sender": f"robot{n}@example.com", **headers}
        robots.append(mail(message_id=f"robot{n}@x", body=f"I am away until Monday ({n})", **headers))
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "postmaster@mx.example.com"
    report["Subject"] = "Delivery Status Notification (Failure)"
    report["Message-ID"] = "<bounce@x>"
    report.attach(MIMEText("Delivery to liwei@example.com failed"))
    robots.append(report.as_bytes())
    kinds = [kind for _, kind in ROBOTS] + ["bounce"]
    for raw in robots:
        box.append(raw)
    # people: a mail relayed by a group address (taken, not acknowledged), a mail that says it
    # is no robot's, and one whose subject only starts like an out-of-office notice
    box.append(mail(message_id="group@x", sender="group-member@example.com", subject="via the group",
                    List_Id="<support.pay.example>"))
    box.append(mail(message_id="human@x", sender="human@example.com", subject="not a robot", Auto_Submitted="no"))
    box.append(mail(message_id="hours@x", sender="hours@example.com",
                    subject="Out of office hours I was charged twice"))
    # the acknowledgement brake for people: the same address writing 5 times gets at most 3
    for n in range(5):
        box.append(mail(message_id=f"human{n}@x", sender="busy@example.com", subject=f"issue {n}"))
    cs = channel_settings(box, controller.port)
    assert await catch_up(services, cs) == 3 + 5
    await drain(settings, EmailChannel(cs))

    complaints, _ = await services.store.list(limit=50)
    assert sorted(m.subject for c in complaints for m in c.messages) == sorted(
        ["via the group", "not a robot", "Out of office hours I was charged twice", *(f"issue {n}" for n in range(5))])
    recipients = [to for _, tos in sink.envelopes for to in tos]
    assert sorted(set(recipients)) == ["busy@example.com", "hours@example.com", "human@example.com"]
    assert recipients.count("busy@example.com") == 3
    (group,) = [c for c in complaints if c.messages[0].subject == "via the group"]
    assert any(h.action == "acknowledgement_suppressed" for h in group.history)

    # each robot's mail is kept once, raw, with what it is, where a supervisor sees it
    quarantined = await services.store.quarantined(50)
    expected = sorted((lf(raw), kind) for raw, kind in zip(robots, kinds))
    assert sorted((lf(q["raw"]), q["reason"].decode().split(":", 1)[0]) for q in quarantined) == expected
    r = await client.get("/v1/quarantine", headers=SUPERVISOR)
    assert r.status_code == 200
    shown = {lf(base64.b64decode(i["raw_base64"])): i["reason"] for i in r.json()["items"]}
    assert sorted((raw, reason.split(":", 1)[0]) for raw, reason in shown.items()) == expected
    assert all("not a complaint" in reason for reason in shown.values())

    # read again after the mailbox was rebuilt: nothing is kept twice, nothing taken
    box.set_uidvalidity(5151)
    assert await catch_up(services, cs) == 0
    assert len(await services.store.quarantined(50)) == len(robots)


def dsn(returned: EmailMessage, action: str, status: str) -> bytes:
    """A delivery status notification (RFC 3464) returning ``returned``, as Postfix sends it."""
    original = "".join(f"{k}: {v}\r\n" for k, v in returned.items())
    subject = "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail (still being retried)"
    return raw_mail(
        f"From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\nTo: care@pay.example\nSubject: {subject}\n"
        f"Message-ID: <dsn-{action}@mx.example.com>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n",
        ("--B\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you that your message could not "
         "be delivered.\r\n\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
         "Reporting-MTA: dns; mx.example.com\r\n\r\n"
         f"Final-Recipient: rfc822; {returned['To']}\r\nAction: {action}\r\nStatus: {status}\r\n"
         f"Diagnostic-Code: smtp; 550 {status} <{returned['To']}>: Recipient address rejected: User unknown\r\n"
         "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n" + original + "\r\n--B--\r\n").encode())


async def test_a_bounce_marks_our_reply_failed_with_its_status_code(box, smtp, services, settings):
    controller, sink = smtp
    box.append(mail(message_id="gone@customer.example", sender="Li Wei <gone@customer.example>",
                    subject="Charged twice"))
    cs = channel_settings(box, controller.port)
    channel = EmailChannel(cs)
    await catch_up(services, cs)
    await drain(settings, channel)
    (complaint,), _ = await services.store.list(limit=5)
    assert complaint.replies[0].kind == "ack" and complaint.replies[0].delivery == "sent"
    ack = sink.messages[0]

    # first the mailer only says it keeps trying: nothing changes
    box.append(dsn(ack, "delayed", "4.4.7"))
    await catch_up(services, cs)
    assert (await services.store.get(complaint.id)).replies[0].delivery == "sent"
    # then it gives up: our acknowledgement did not arrive, with the status code why
    box.append(dsn(ack, "failed", "5.1.1"))
    await catch_up(services, cs)
    await drain(settings, channel)
    complaint = await services.store.get(complaint.id)
    (reply,) = complaint.replies
    assert reply.delivery == "failed"
    assert reply.error.startswith("bounced 5.1.1") and "gone@customer.example" not in reply.error
    assert len(complaint.messages) == 1  # the bounces joined no case and opened none
    assert len((await services.store.list(limit=5))[0]) == 1 and len(sink.messages) == 1
    reasons = sorted(q["reason"].decode() for q in await services.store.quarantined(10))
    assert len(reasons) == 2 and all(r.startswith("bounce: ") for r in reasons)
    assert any(f"{reply.id} of {complaint.id}" in r and "5.1.1" in r for r in reasons)


async def test_attachments_kept_as_evidence_and_unparseable_mail_quarantined(box, dovecot, smtp, services, settings):
    controller, sink = smtp
    m = MIMEMultipart()
    m["From"] = "payer@example.com"
    m["Subject"] = "receipt"
    m["Message-ID"] = "<att@x>"
    m.attach(MIMEText("see the receipt and screenshot", "plain", "utf-8"))
    pdf = MIMEApplication(b"%PDF-1.4 receipt", "pdf")
    pdf.add_header("Content-Disposition", "attachment", filename=("utf-8", "", "收据.pdf"))
    m.attach(pdf)
    png = MIMEApplication(PNG, "octet-stream")
    png.add_header("Content-Disposition", "attachment", filename="shot.png")
    m.attach(png)
    exe = MIMEApplication(b"MZ\x90\x00 evil", "octet-stream")
    exe.add_header("Content-Disposition", "attachment", filename="run.exe")
    m.attach(exe)
    box.append(m.as_bytes())
    box.append(b"this is not a mail at all, just words\r\n")
    cs = channel_settings(box, controller.port)
    await catch_up(services, cs)
    await drain(settings, EmailChannel(cs))
    (complaint,), _ = await services.store.list(limit=5)
    kinds = sorted((e.content_type, e.filename) for e in complaint.evidence)
    assert kinds == [("application/pdf", "收据.pdf"), ("image/png", "shot.png")]
    quarantined = await services.store.quarantined(10)
    assert len(quarantined) == 1 and quarantined[0]["raw"].startswith(b"this is not a mail")


async def test_restart_uidvalidity_change_and_racing_pollers_take_each_mail_once(box, dovecot, smtp, services, settings):
    controller, sink = smtp
    cs = channel_settings(box, controller.port)
    for n in range(6):
        box.append(mail(message_id=f"m{n}@x", sender=f"c{n}@example.com", subject=f"case {n}"))
    # two pollers (as on two workers) race for the mailbox: one lease, one taker
    pollers = [MailboxPoller(cs.mailboxes[0], cs) for _ in range(2)]
    tasks = [asyncio.create_task(p.run(services)) for p in pollers]
    await _wait_for(lambda: _pending_count(services), 6)
    # a poller killed mid-flight (cancelled), and the server restarted under the other
    tasks[0].cancel()
    dovecot.restart()
    for n in range(6, 9):
        box.append(mail(message_id=f"m{n}@x", sender=f"c{n}@example.com", subject=f"case {n}"))
    await _wait_for(lambda: _pending_count(services), 9, timeout=30)
    for p in pollers:
        p.stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    # UIDVALIDITY changes (mailbox rebuilt): a re-scan finds nothing new
    box.set_uidvalidity(4242)
    assert await catch_up(services, cs) == 0
    box.append(mail(message_id="m9@x", sender="c9@example.com", subject="case 9"))
    assert await catch_up(services, cs) == 1
    await drain(settings, EmailChannel(cs))
    complaints, _ = await services.store.list(limit=50)
    assert sorted(c.messages[0].subject for c in complaints) == sorted(f"case {n}" for n in range(10))
    assert len(sink.messages) == 10


async def test_two_mails_with_one_message_id_are_two_a_mail_read_again_is_one(box, dovecot, smtp, services, settings,
                                                                               caplog):
    controller, sink = smtp
    first = mail(message_id="reused@broken.example", sender="Li Wei <liwei@example.com>", subject="Charged twice",
                 body="I was charged twice for order 1001")
    second = mail(message_id="reused@broken.example", sender="Wang Fang <wangfang@example.com>",
                  subject="Account frozen", body="My account is frozen since yesterday")
    box.append(first)
    box.append(second)
    cs = channel_settings(box, controller.port)
    caplog.set_level("WARNING", logger="gateway.email")
    assert await catch_up(services, cs) == 2
    collisions = [r.getMessage() for r in caplog.records if "Message-ID" in r.getMessage()]
    assert len(collisions) == 1 and "UID 2 has the Message-ID of UID 1" in collisions[0]
    assert not any("reused@broken.example" in r.getMessage() for r in caplog.records)

    # the same mail again: a second copy in the mailbox, and one the sending server delivered
    # twice (its own Received and Return-Path lines in front), after a restart of the server
    box.append(first)
    box.append(b"Return-Path: <liwei@example.com>\r\nReceived: from mx2.example.com by mx.pay.example;\r\n"
               b"\tMon, 23 Nov 2026 10:00:07 +0800\r\n" + first)
    dovecot.restart()
    assert await catch_up(services, cs) == 0
    box.set_uidvalidity(7171)  # the mailbox rebuilt: everything is looked at again, nothing taken
    assert await catch_up(services, cs) == 0
    await drain(settings, EmailChannel(cs))
    complaints, _ = await services.store.list(limit=10)
    assert sorted((c.messages[0].subject, c.messages[0].text) for c in complaints) == [
        ("Account frozen", "My account is frozen since yesterday"),
        ("Charged twice", "I was charged twice for order 1001")]
    assert sorted(to for _, tos in sink.envelopes for to in tos) == ["liwei@example.com", "wangfang@example.com"]


def attachment_only(data: bytes, filename: str, sender: str | None = "Li Wei <liwei@example.com>",
                    body: bytes | None = None, message_id: str | None = None) -> bytes:
    m = EmailMessage()
    if sender:
        m["From"] = sender
    m["To"] = USER
    m["Subject"] = "receipt"
    m["Date"] = "Mon, 23 Nov 2026 10:00:00 +0800"
    if message_id:
        m["Message-ID"] = f"<{message_id}>"
    if body is not None:
        m.set_content(body, maintype="application", subtype="octet-stream", disposition="inline")
    else:
        m.add_attachment(data, maintype="image", subtype="jpeg", filename=filename)
    return bytes(m)


async def test_attachment_only_mails_with_different_attachments_are_different_mails(box, smtp, services, settings):
    controller, _ = smtp
    # two photos sent one after the other (same From, Subject and Date), each too large to keep
    # as evidence (the limit is lowered here; 10 MB by default): nothing of the text tells them apart
    photos = [b"\xff\xd8\xff\xe0" + bytes([n]) * 3000 for n in range(2)]
    for n, photo in enumerate(photos):
        box.append(attachment_only(photo, f"IMG_{n}.jpg"))
    cs = channel_settings(box, controller.port)
    cs.max_attachment_bytes = 1000
    assert await catch_up(services, cs) == 2
    await drain(settings, EmailChannel(cs))
    complaints, _ = await services.store.list(limit=10)
    assert sum(len(c.messages) for c in complaints) == 2


async def test_mails_without_from_each_get_their_own_quarantine_entry(box, smtp, services):
    controller, _ = smtp
    raws = [
        # a device that sends without From and with a fixed Message-ID
        mail(sender=None, message_id="fixed@device.example", body="Alarm: terminal 7 offline"),
        mail(sender=None, message_id="fixed@device.example", body="Alarm: terminal 9 offline"),
        # no Message-ID, same Subject and Date, bodies that are not text
        attachment_only(b"", "", sender=None, body=b"\x01\x02 log A"),
        attachment_only(b"", "", sender=None, body=b"\x01\x02 log B"),
    ]
    for raw in raws:
        box.append(raw)
    cs = channel_settings(box, controller.port)
    assert await catch_up(services, cs) == 0
    quarantined = await services.store.quarantined(10)
    assert sorted(lf(q["raw"]) for q in quarantined) == sorted(lf(raw) for raw in raws)
    assert all(q["reason"].decode().startswith("mail without a usable From") for q in quarantined)
    # read again (the checkpoint lost): no second entry
    from adapters.email import MailboxState

    state = MailboxState(services, cs.mailboxes[0].label)
    validity, _ = await state.checkpoint()
    await state.advance(validity, 0)
    assert await catch_up(services, cs) == 0
    assert len(await services.store.quarantined(10)) == 4


async def _pending_count(services):
    return await services.store.r.zcard(services.store.keys.pending)


async def _wait_for(probe, expected, timeout=20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = await probe()
        if value >= expected:
            assert value == expected
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {expected}, saw {value}")


async def test_stdlib_email_test_messages_are_taken_or_quarantined(box, dovecot, smtp, services, settings):
    test_email = pytest.importorskip("test.test_email", reason="this Python has no test package")
    data = pathlib.Path(test_email.__file__).parent / "data"
    files = sorted(data.glob("msg_*.txt"))
    assert files
    for f in files:
        box.append(f.read_bytes())
    controller, _ = smtp
    cs = channel_settings(box, controller.port)
    accepted = await catch_up(services, cs)  # no sample may crash the poller
    quarantined = await services.store.quarantined(200)
    pending = await services.store.r.zcard(services.store.keys.pending)
    # no two samples are one mail: seven share a Message-ID (msg_01/03/14/20/29, msg_04/44) but
    # differ in their headers or body. Each is taken, or kept in quarantine: unparseable, no From,
    # or a robot's (the delivery reports msg_05/16/25/43, the bulk mails msg_32/33)
    assert accepted == pending
    assert accepted + len(quarantined) == len(files)
    reasons = sorted(q["reason"].decode().split(":", 1)[0].split(" in ")[0] for q in quarantined)
    assert reasons == sorted(["auto_reply"] * 2 + ["bounce"] * 4 + ["mail without a usable From address"] * 6
                             + ["unparseable mail"])
    await drain(settings, EmailChannel(cs))
    assert await services.store.r.zcard(services.store.keys.pending) == 0


async def test_a_crash_between_intake_and_checkpoint_takes_nothing_twice(box, smtp, services, settings):
    controller, sink = smtp
    for n in range(3):
        box.append(mail(message_id=f"k{n}@x", sender=f"k{n}@example.com", subject=f"crash {n}"))
    box.append(mail(sender="noid@example.com", subject="no message id"))  # deduplicated by content
    cs = channel_settings(box, controller.port)
    assert await catch_up(services, cs) == 4
    # the poller died after taking the mails but before its checkpoint reached Redis
    from adapters.email import MailboxState

    state = MailboxState(services, cs.mailboxes[0].label)
    validity, _ = await state.checkpoint()
    await state.advance(validity, 0)
    assert await catch_up(services, cs) == 0
    await drain(settings, EmailChannel(cs))
    complaints, _ = await services.store.list(limit=10)
    assert len(complaints) == 4 and len(sink.messages) == 4


@pytest.mark.parametrize("after, flag_expected", [("seen", True), ("move", False)])
async def test_after_intake_mark_seen_or_move(box, smtp, services, after, flag_expected):
    controller, _ = smtp
    box.append(mail(message_id=f"after-{after}@x"))
    cs = channel_settings(box, controller.port, after_intake=after, move_to=box.folder + "-done")
    imap = box.dovecot.client(USER)
    imap.create(box.folder + "-done")
    imap.logout()
    assert await catch_up(services, cs) == 1
    imap = box.dovecot.client(USER)
    imap.select(box.folder)
    _, data = imap.uid("fetch", "1:*", "(FLAGS)")
    if flag_expected:
        assert b"\\Seen" in data[0]
    else:
        assert data == [None]  # moved away, never deleted:
        imap.select(box.folder + "-done")
        _, moved = imap.uid("search", None, "ALL")
        assert moved[0]
    imap.logout()


async def test_running_poller_picks_up_new_mail_by_idle(box, smtp, services):
    controller, _ = smtp
    cs = channel_settings(box, controller.port)
    cs.mailboxes[0].poll_seconds = 30  # only IDLE can make this fast
    poller = MailboxPoller(cs.mailboxes[0], cs)
    task = asyncio.create_task(poller.run(services))
    await asyncio.sleep(1.0)  # connected and idling
    started = asyncio.get_running_loop().time()
    box.append(mail(message_id="pushed@x"))
    await _wait_for(lambda: _pending_count(services), 1, timeout=10)
    elapsed = asyncio.get_running_loop().time() - started
    poller.stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert elapsed < 3, f"IDLE push took {elapsed:.2f} s"


async def test_a_dead_workers_lease_is_taken_over_within_seconds(box, smtp, services):
    controller, _ = smtp
    cs = channel_settings(box, controller.port)
    cs.mailboxes[0].lease_seconds = 2
    # a worker took the lease and died (SIGKILL: it never released it)
    key = f"{services.store.keys.p}imap:lease:{cs.mailboxes[0].label}"
    await services.store.r.set(key, "dead-worker", px=2000)
    box.append(mail(message_id="after-death@x"))
    poller = MailboxPoller(cs.mailboxes[0], cs)
    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(poller.run(services))
    await _wait_for(lambda: _pending_count(services), 1, timeout=10)
    took = asyncio.get_running_loop().time() - started
    poller.stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert 1.0 < took < 5.0, took  # not before the dead lease expired, soon after
    assert await services.store.r.get(key) is None  # released on a clean stop
