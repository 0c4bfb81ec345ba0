"""The e-mail channel: IMAP in (one poller per mailbox, exact sync), SMTP out (threaded replies).

One module, one shape: settings, authenticity (the mailbox login; mail itself is not signed),
parse (``normalizer.mail``), send (``aiosmtplib``).

Sync rules: a mailbox is worked by the worker that holds its Redis lease; progress is the pair
UIDVALIDITY + last UID, advanced only after the mail is durably taken; after a UIDVALIDITY
change every mail is looked at again and skipped when it was taken before. Mail is never deleted.

What is "the same mail" (``mail_identity``): the bytes as their sender wrote them, without the
header fields servers add on the way in (``normalizer.mail.mail_digest``). A mail read again is
taken once; two different mails are two, even when a broken mailer gave both one Message-ID (the
collision is logged with both UIDs). Auto-replies and bounces never become complaints
(``adapters.email_automatic``).
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import re
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from functools import partial
from typing import Any, Literal

import msgspec

from adapters.email_automatic import take_automatic
from plugins.kit import (
    Contact,
    DeliveryResult,
    GatewayServices,
    OutboundMessage,
    Poller,
    build_message,
    hookimpl,
    new_id,
    quarantine_once,
)
from plugins.locks import RedisLock
from normalizer.evidence import EvidenceRejected
from normalizer.language import desk_language
from normalizer.mail import MailParseError, ParsedMail, mail_digest, parse_mail
from normalizer.schema import AUTOMATIC_REPLY_KINDS

log = logging.getLogger("gateway.email")

CHANNEL = "email"
CASE_IN_SUBJECT = re.compile(r"\bC-\d{8}-\d{6,7}\b")
IDLE_REISSUE_SECONDS = 25 * 60  # servers may drop IDLE after 30 min (RFC 2177): re-issue before 29
LEASE_MS = 15_000
FETCH_BATCH = 50

Security = Literal["none", "starttls", "tls"]


class MailboxSettings(msgspec.Struct, forbid_unknown_fields=True):
    """One IMAP mailbox. An empty ``host`` switches it off (the example's IMAP_HOST unset)."""

    host: str = ""
    name: str = ""
    port: int = 0
    security: Security = "tls"
    user: str = ""
    password: str = ""
    folder: str = "INBOX"
    #: After intake: leave the mail as it is ("none"), flag it \Seen ("seen"), or move it.
    after_intake: Literal["none", "seen", "move"] = "none"
    move_to: str = "Processed"
    #: Polling interval where the server has no IDLE (and the longest wait with IDLE, at least
    #: 1 s: a connection that died silently under an IDLE is noticed within this + timeout_seconds).
    poll_seconds: float = 30.0
    use_idle: bool = True
    verify_tls: bool = True
    #: Seconds an IMAP command may take before the connection counts as dead.
    timeout_seconds: float = 30.0
    #: After a connection fails, the first wait before connecting again; it doubles with each
    #: failure in a row up to ``reconnect_max_seconds`` and starts over once a sync succeeds.
    reconnect_seconds: float = 1.0
    reconnect_max_seconds: float = 60.0
    #: The mailbox lease: a worker that dies is replaced within this many seconds.
    lease_seconds: float = 15.0

    @property
    def label(self) -> str:
        return self.name or f"{self.user}@{self.host}/{self.folder}"

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)


class SmtpSettings(msgspec.Struct, forbid_unknown_fields=True):
    host: str = ""
    port: int = 0
    security: Security = "starttls"
    user: str = ""
    password: str = ""
    from_address: str = "desk@localhost"
    from_name: str = "Customer Care / 客户服务"
    timeout_seconds: float = 20.0
    verify_tls: bool = True


class EmailChannel:
    """The built-in e-mail plugin."""

    class Settings(msgspec.Struct, forbid_unknown_fields=True):
        mailboxes: list[MailboxSettings] = []
        smtp: SmtpSettings = msgspec.field(default_factory=SmtpSettings)
        max_attachment_bytes: int = 10 * 1024 * 1024
        max_attachments: int = 10
        #: Acknowledgements to one address per hour; more are not sent (mail-loop brake).
        acks_per_address_per_hour: int = 3

    def __init__(self, settings: "EmailChannel.Settings | None" = None) -> None:
        self.settings = settings or EmailChannel.Settings()
        names = [m.label for m in self.settings.mailboxes if m.host]
        if len(set(names)) != len(names):
            raise ValueError("email: two mailboxes share a name; give each a distinct `name`")

    @hookimpl
    def gateway_pollers(self, services: GatewayServices) -> list[Poller]:
        pollers = []
        for mailbox in self.settings.mailboxes:
            if not mailbox.host:
                continue  # switched off
            poller = MailboxPoller(mailbox, self.settings)
            pollers.append(Poller(name=f"imap:{mailbox.label}", run=poller.run))
        return pollers

    @hookimpl
    def channel_sender(self, channel: str, services: GatewayServices) -> "SmtpSender | None":
        if channel != CHANNEL or not self.settings.smtp.host:
            return None
        return SmtpSender(self.settings, services)


# -- intake ---------------------------------------------------------------------------------


@dataclass
class Taken:
    """What happened to one mail."""

    outcome: str  # "accepted", "duplicate", "quarantined", "auto_reply", "bounce"
    message_id: str | None = None


class LeaseLost(Exception):
    pass


class MailboxLease(RedisLock):
    """Exactly one poller per mailbox: a Redis key with a token, renewed while held."""

    def __init__(self, services: GatewayServices, label: str, ttl_ms: int = LEASE_MS) -> None:
        super().__init__(services.require_redis(), services.store.keys.plugin("imap", "lease", label), ttl_ms,
                         token=new_id("lease"))


class MailboxState:
    """Checkpoint (UIDVALIDITY, last UID) and the ids of mails already taken."""

    def __init__(self, services: GatewayServices, label: str) -> None:
        self.redis = services.require_redis()
        keys = services.store.keys
        self.state_key = keys.plugin("imap", "state", label)
        self.seen_key = keys.plugin("imap", "seen", label)
        self.message_ids_key = keys.plugin("imap", "message-ids", label)

    async def checkpoint(self) -> tuple[int | None, int]:
        validity, last = await self.redis.hmget(self.state_key, "uidvalidity", "last_uid")
        return (int(validity) if validity else None), int(last or 0)

    async def advance(self, uidvalidity: int, uid: int) -> None:
        await self.redis.hset(self.state_key, mapping={"uidvalidity": uidvalidity, "last_uid": uid})

    async def seen(self, identity: str) -> bool:
        return bool(await self.redis.sismember(self.seen_key, identity))

    async def remember(self, identity: str) -> None:
        await self.redis.sadd(self.seen_key, identity)

    async def first_with_message_id(self, message_id: str, identity: str, where: str) -> str | None:
        """Note that the mail at ``where`` (UIDVALIDITY/UID) carries ``message_id``; answers where
        the first mail with that Message-ID was when that was a different mail (a collision)."""
        field = hashlib.sha256(message_id.encode()).hexdigest()[:32]
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(self.message_ids_key, field, f"{where}|{identity}")
            pipe.hget(self.message_ids_key, field)
            _, first = await pipe.execute()
        first_where, _, first_identity = (first or b"").decode().partition("|")
        return first_where if first_identity != identity else None


def mail_identity(parsed: ParsedMail | None, raw: bytes) -> str:
    """What makes two deliveries the same mail: the bytes their sender wrote, servers' trace
    fields left out (``mail_digest``). Not the Message-ID alone: broken mailers reuse one."""
    return "mail:" + mail_digest(raw)[:40]


def legacy_identity(parsed: ParsedMail | None, raw: bytes) -> str:
    """The identity mails were remembered by before ``mail_identity`` (Message-ID, else sender +
    content): a re-scan still skips the mails taken then."""
    if parsed is not None and parsed.message_id:
        return f"id:{parsed.message_id}"
    if parsed is not None:
        key = f"{parsed.from_address}|{parsed.subject}|{parsed.date}|{parsed.content_hash}"
        return "hash:" + hashlib.sha256(key.encode()).hexdigest()
    return "raw:" + hashlib.sha256(raw).hexdigest()


def parse_or_none(raw: bytes, settings: "EmailChannel.Settings") -> tuple[ParsedMail | None, str]:
    """The parsed mail (``None`` when unparseable) and why it could not be parsed."""
    try:
        return parse_mail(raw, max_attachment_bytes=settings.max_attachment_bytes,
                          max_attachments=settings.max_attachments), ""
    except MailParseError as exc:
        return None, str(exc)


async def take_mail(services: GatewayServices, settings: EmailChannel.Settings, mailbox: str, raw: bytes,
                    parsed: ParsedMail | None = None, problem: str = "") -> Taken:
    """Turn one raw mail into a durable inbound message (or a quarantine entry). Idempotent:
    the same mail taken twice is one message."""
    if parsed is None and not problem:
        parsed, problem = parse_or_none(raw, settings)
    identity = mail_identity(parsed, raw)
    if parsed is None:
        return await _quarantine_once(services, identity, f"unparseable mail in {mailbox}: {problem}", raw)
    if parsed.automatic is not None:  # an auto-reply or a bounce: kept for a supervisor, no complaint
        return Taken(await take_automatic(services, CHANNEL, mailbox, raw, parsed, identity))
    if not parsed.from_address:
        return await _quarantine_once(services, identity, f"mail without a usable From address in {mailbox}", raw)

    evidence = []
    for attachment in parsed.attachments:
        try:
            evidence.append(await services.blobs.put(attachment.data, attachment.content_type,
                                                     filename=attachment.filename, source="email"))
        except EvidenceRejected as exc:
            log.info("mail attachment not kept (%s): %s", exc.code, attachment.content_type)

    text = parsed.text or parsed.full_text or parsed.subject
    text = text[: services.settings.max_text_chars]
    message = build_message(
        message_id=new_id("msg"),
        channel=CHANNEL,
        sender=Contact(kind="email", value=parsed.from_address, display_name=parsed.from_name),
        text=text,
        provider_message_id=parsed.message_id,
        received_at=datetime.now(timezone.utc),
        attachments=evidence,
        complaint_ref=await _thread_target(services, parsed),
        subject=parsed.subject or None,
        suppress_acknowledgement=parsed.loop_reason,
        metadata={"mailbox": mailbox, "full_text": parsed.full_text[:20_000]},
    )
    outcome = await services.intake.submit(message, idempotency_scope=identity, raw=raw,
                                           limits=False)  # a mailbox never stalls on one sender
    store = services.store
    if outcome.status == "accepted" and parsed.message_id:
        # the first mail with this Message-ID keeps it (another mail may carry the same one)
        await store.r.set(store.keys.plugin("mail", "thread", parsed.message_id), f"msg:{outcome.message_id}",
                          ex=400 * 86400, nx=True)
    return Taken("accepted" if outcome.status == "accepted" else "duplicate", outcome.message_id)


async def _quarantine_once(services: GatewayServices, identity: str, reason: str, raw: bytes) -> Taken:
    """Quarantine a mail, once however often it is read again (restarts, re-scans)."""
    await quarantine_once(services, CHANNEL, reason, raw, identity=identity)
    return Taken("quarantined")


async def _thread_target(services: GatewayServices, parsed: ParsedMail) -> str | None:
    """The complaint a reply belongs to: by In-Reply-To / References, else the case number in
    the subject."""
    store = services.store
    candidates = ([parsed.in_reply_to] if parsed.in_reply_to else []) + list(reversed(parsed.references))
    for mail_id in candidates:
        target = await store.r.get(store.keys.plugin("mail", "thread", mail_id))
        if target is None:
            continue
        kind, _, value = target.decode().partition(":")
        if kind == "cmp":
            return value
        state = await store.message_state(value)
        if state and state.get("complaint_id"):
            return state["complaint_id"]
    found = CASE_IN_SUBJECT.search(parsed.subject or "")
    return found.group(0) if found else None


class MailboxPoller:
    """Works one mailbox while holding its lease: catch up, then IDLE (or poll), repeat."""

    def __init__(self, mailbox: MailboxSettings, settings: EmailChannel.Settings) -> None:
        self.mailbox = mailbox
        self.settings = settings
        self.stop = asyncio.Event()
        self.backoff = mailbox.reconnect_seconds
        self._thread: ThreadPoolExecutor | None = None

    async def _blocking(self, fn: Any, *args: Any) -> Any:
        """Run one blocking IMAP call on this mailbox's own thread: a stalled server holds that
        thread, never the event loop's shared pool (other channels' evidence, senders)."""
        if self._thread is None:
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap")
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args))

    async def run(self, services: GatewayServices) -> None:
        lease = MailboxLease(services, self.mailbox.label, int(self.mailbox.lease_seconds * 1000))
        self.backoff = self.mailbox.reconnect_seconds
        try:
            while not self.stop.is_set():
                if not await lease.acquire():
                    await asyncio.sleep(lease.ttl_ms / 3000)  # another worker has it; ready to take over
                    continue
                log.info("imap %s: lease taken", self.mailbox.label)
                renewer = asyncio.create_task(self._keep_lease(lease))
                try:
                    await self._session(services, renewer)
                    self.backoff = self.mailbox.reconnect_seconds
                except LeaseLost:
                    log.error("imap %s: lease lost; stopping until it can be taken again", self.mailbox.label)
                except Exception as exc:  # connection trouble: reconnect with backoff, lease kept
                    log.warning("imap %s: %s: %s; reconnecting in %.1f s", self.mailbox.label,
                                type(exc).__name__, exc, self.backoff)
                    await asyncio.sleep(self.backoff)
                    self.backoff = min(self.mailbox.reconnect_max_seconds, self.backoff * 2)
                finally:
                    renewer.cancel()
                    await asyncio.gather(renewer, return_exceptions=True)
        finally:
            try:
                await asyncio.shield(lease.release())  # let another worker take over at once
            except Exception:
                pass
            if self._thread is not None:
                self._thread.shutdown(wait=False)
                self._thread = None

    async def _keep_lease(self, lease: MailboxLease) -> None:
        while True:
            await asyncio.sleep(lease.ttl_ms / 3000)
            if not await lease.renew():
                log.error("imap %s: lease lost", self.mailbox.label)
                return

    def _connect(self) -> Any:
        from imapclient import IMAPClient

        box = self.mailbox
        context = ssl.create_default_context()
        if not box.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        client = IMAPClient(box.host, port=box.effective_port, ssl=box.security == "tls",
                            ssl_context=context, timeout=box.timeout_seconds)
        if box.security == "starttls":
            client.starttls(context)
        client.login(box.user, box.password)
        return client

    async def _session(self, services: GatewayServices, renewer: asyncio.Task[None]) -> None:
        state = MailboxState(services, self.mailbox.label)
        client = await self._blocking(self._connect)
        try:
            has_idle = self.mailbox.use_idle and b"IDLE" in await self._blocking(client.capabilities)
            while not self.stop.is_set():
                if renewer.done():
                    raise LeaseLost(self.mailbox.label)
                await self.catch_up(services, client, state, renewer)
                self.backoff = self.mailbox.reconnect_seconds  # in sync: this connection works
                if has_idle:
                    await self._blocking(self._idle_until_news, client, renewer)
                else:
                    await asyncio.sleep(self.mailbox.poll_seconds)
                    await self._blocking(client.noop)
        except BaseException:
            # cancelled, or the connection broke: a thread may be blocked in an IMAP read, and
            # closing the socket frees it now
            _quietly_shutdown(client)
            raise
        else:
            await self._blocking(_quietly_logout, client)

    def _idle_until_news(self, client: Any, renewer: asyncio.Task[None]) -> None:
        """IDLE until the server announces mail, for at most one poll interval: ending the IDLE
        (DONE) needs an answer, so a connection that died silently is noticed then."""
        started = time.monotonic()
        longest = min(IDLE_REISSUE_SECONDS, max(self.mailbox.poll_seconds, 1.0))
        client.idle()
        try:
            while (left := longest - (time.monotonic() - started)) > 0:
                if renewer.done() or self.stop.is_set():
                    return
                wait = min(1.0, left)
                checked = time.monotonic()
                responses = client.idle_check(timeout=wait)
                if any(r[1] in (b"EXISTS", b"RECENT") for r in responses if len(r) > 1):
                    return
                if not responses and time.monotonic() - checked < wait / 2:
                    # woken with nothing to read: imapclient hides a closed or reset connection
                    # this way (asking again would spin); DONE below fails if it is gone
                    return
        finally:
            client.idle_done()

    async def catch_up(self, services: GatewayServices, client: Any, state: MailboxState,
                       renewer: asyncio.Task[None]) -> int:
        """Take every mail after the checkpoint (all of them after a UIDVALIDITY change)."""
        selected = await self._blocking(client.select_folder, self.mailbox.folder)
        uidvalidity = int(selected[b"UIDVALIDITY"])
        known_validity, last_uid = await state.checkpoint()
        rescan = known_validity is not None and known_validity != uidvalidity
        if rescan:
            log.warning("imap %s: UIDVALIDITY changed %s -> %s; re-scanning by Message-ID",
                        self.mailbox.label, known_validity, uidvalidity)
            last_uid = 0
        uids = sorted(u for u in await self._blocking(client.search, ["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        taken = 0
        for i in range(0, len(uids), FETCH_BATCH):
            batch = uids[i : i + FETCH_BATCH]
            fetched = await self._blocking(client.fetch, batch, ["BODY.PEEK[]"])
            for uid in batch:
                if renewer.done():
                    raise LeaseLost(self.mailbox.label)
                raw = fetched.get(uid, {}).get(b"BODY[]")
                if raw is None:
                    continue  # expunged meanwhile
                parsed, problem = parse_or_none(raw, self.settings)
                identity = mail_identity(parsed, raw)
                if rescan and (await state.seen(identity) or await state.seen(legacy_identity(parsed, raw))):
                    await state.advance(uidvalidity, uid)
                    continue
                if parsed is not None and parsed.message_id:
                    first = await state.first_with_message_id(parsed.message_id, identity, f"{uidvalidity}/{uid}")
                    if first is not None:  # a broken mailer reused a Message-ID: both mails are kept
                        first_validity, _, first_uid = first.partition("/")
                        earlier = "" if first_validity == str(uidvalidity) else f" of UIDVALIDITY {first_validity}"
                        log.warning("imap %s: UID %s has the Message-ID of UID %s%s but is a different mail; "
                                    "both are taken", self.mailbox.label, uid, first_uid, earlier)
                result = await take_mail(services, self.settings, self.mailbox.label, raw, parsed, problem)
                await state.remember(identity)
                await state.advance(uidvalidity, uid)  # only now: the mail is durable
                taken += result.outcome == "accepted"
                await self._after_intake(client, uid)
        if rescan or not uids:
            await state.advance(uidvalidity, max([last_uid, *uids]))
        # in sync now: /metrics reports the time since (IMAP sync lag)
        await services.require_redis().set(services.store.keys.imap_synced(self.mailbox.label),
                                           int(time.time() * 1000), ex=86_400)
        return taken

    async def _after_intake(self, client: Any, uid: int) -> None:
        if self.mailbox.after_intake == "seen":
            await self._blocking(client.add_flags, [uid], [b"\\Seen"])
        elif self.mailbox.after_intake == "move":
            await self._blocking(client.move, [uid], self.mailbox.move_to)


def _quietly_shutdown(client: Any) -> None:
    try:
        client.shutdown()
    except Exception:
        pass


def _quietly_logout(client: Any) -> None:
    try:
        client.logout()
    except Exception:
        pass


# -- replies --------------------------------------------------------------------------------

SUBJECTS = {
    "ack": {"zh": "我们已收到您的来信", "en": "We have received your message"},
    "repeat_ack": {"zh": "您的来信已加入原案件", "en": "Your message was added to your case"},
    "agent": {"zh": "关于您的问题", "en": "About your request"},
}


class SmtpSender:
    """Sends replies by SMTP in the customer's thread, with the case number in the subject."""

    def __init__(self, settings: EmailChannel.Settings, services: GatewayServices) -> None:
        self.settings = settings
        self.smtp = settings.smtp
        self.services = services

    def build(self, message: OutboundMessage) -> EmailMessage:
        mail = EmailMessage()
        domain = self.smtp.from_address.rpartition("@")[2] or "localhost"
        mail["Message-ID"] = f"<{message.id}@{domain}>"  # stable: a re-send is the same mail
        mail["From"] = email.utils.formataddr((self.smtp.from_name, self.smtp.from_address))
        mail["To"] = message.to.value
        mail["Date"] = email.utils.formatdate(localtime=False)
        original = message.thread.get("subject")
        tag = f"[{message.case_number}]"
        if original:
            base = original if original.lower().startswith(("re:", "回复:", "回复：")) else f"Re: {original}"
            subject = base if message.case_number in base else f"{base} {tag}"
        else:
            lang = desk_language(message.language)
            subject = f"{SUBJECTS.get(message.kind, SUBJECTS['agent'])[lang]} {tag}"
        mail["Subject"] = subject
        if message.thread.get("in_reply_to"):
            mail["In-Reply-To"] = f"<{message.thread['in_reply_to']}>"
            mail["References"] = " ".join(f"<{r}>" for r in message.thread.get("references", "").split())
        if message.kind in AUTOMATIC_REPLY_KINDS:
            mail["Auto-Submitted"] = "auto-replied"  # RFC 3834: other robots must not answer this
        mail.set_content(message.text)
        return mail

    async def _remember(self, message: OutboundMessage, our_id: str) -> None:
        """Before the mail leaves: a reply to it finds its case, a bounce of it finds the reply."""
        store = self.services.store
        if not message.complaint_id:
            return  # an answer to a stranger (status of an unknown case) belongs to no case
        await self.services.require_redis().set(store.keys.plugin("mail", "thread", our_id),
                                                f"cmp:{message.complaint_id}", ex=400 * 86400)
        await store.remember_outbound(CHANNEL, our_id, message.complaint_id, message.id)

    async def _over_limit(self, address: str) -> bool:
        redis = self.services.require_redis()
        key = self.services.store.keys.plugin("mail", "acks", address, int(time.time() // 3600))
        count = await redis.incr(key)
        if count == 1:
            await redis.expire(key, 3600)
        return count > self.settings.acks_per_address_per_hour

    async def send(self, message: OutboundMessage) -> DeliveryResult:
        import aiosmtplib

        if message.kind in ("ack", "repeat_ack") and await self._over_limit(message.to.value):
            return DeliveryResult(status="suppressed", error="acknowledgement rate limit for this address")
        mail = self.build(message)
        our_id = mail["Message-ID"].strip("<>")
        await self._remember(message, our_id)
        context = ssl.create_default_context()
        if not self.smtp.verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        port = self.smtp.port or {"tls": 465, "starttls": 587, "none": 25}[self.smtp.security]
        try:
            await aiosmtplib.send(
                mail,
                hostname=self.smtp.host,
                port=port,
                username=self.smtp.user or None,
                password=self.smtp.password or None,
                use_tls=self.smtp.security == "tls",
                start_tls=True if self.smtp.security == "starttls" else False,
                tls_context=context,
                timeout=self.smtp.timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            return DeliveryResult(status="failed", error=f"recipient refused: {exc}"[:300], retryable=False)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
            return DeliveryResult(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], retryable=True)
        return DeliveryResult(status="sent", provider_message_id=our_id)


__all__ = ["EmailChannel", "MailboxSettings", "SmtpSettings", "take_mail", "MailboxPoller", "SmtpSender"]
