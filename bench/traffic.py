"""Mixed-channel customer traffic as the providers send it, with returning senders.

Each request is built and signed exactly as its provider builds and signs it (the signing
helpers and secrets are bench/webhooks.py's): the app's JSON with its bearer key, Twilio's form
with X-Twilio-Signature, WhatsApp Cloud API JSON with X-Hub-Signature-256, Telegram updates with
the secret-token header, WeChat safe-mode XML (AES + sha1 signatures). Unlike bench/webhooks.py,
senders come back:

- ``new``       a new sender with a problem (amount + transaction id): a new complaint;
- ``repeat``    a known sender sends the same problem again (same transaction id, a new provider
                message): a repeat report, merged into their open case;
- ``another``   a known sender reports a second, different problem (another transaction): a
                second complaint of the same customer;
- ``follow_up`` a known sender adds to their case: the app names the earlier message
                (``complaint_id``), Telegram edits the earlier message (``edited_message``), the
                other channels send a short further text;
- ``retry``     the provider delivers an earlier request again, byte for byte (its retry after a
                lost answer): must change nothing.

``Traffic.run`` sends them open loop at a fixed rate, round-robin over the gateway processes,
and re-sends any request that did not get a 2xx (as providers do) up to ``tries`` times.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intake import APP_KEY  # noqa: E402
from loadgen import Connection, build_request  # noqa: E402
from webhooks import META_SECRET, PUBLIC, TG_SECRET, TW_SID, TW_TOKEN, WX_AES, WX_APP, WX_TOKEN  # noqa: E402

MIX = (("app", 0.4), ("twilio_sms", 0.2), ("whatsapp", 0.2), ("telegram", 0.1), ("wechat", 0.1))
KINDS = (("new", 0.55), ("repeat", 0.2), ("another", 0.12), ("follow_up", 0.1), ("retry", 0.03))

PROBLEMS = [
    "我被重复扣款了 ¥{amt}，交易号 {txn}，请尽快退款",
    "I was charged twice, {amt} CNY, transaction {txn}. Please refund the second charge.",
    "转账 {amt} 元一直没有到账，交易号 {txn}，已经等了两天",
    "My withdrawal of {amt} CNY has been pending for 3 days, reference {txn}",
    "扫码支付 {amt} 元失败但是钱被扣了，交易号 {txn}",
]
FOLLOW_UPS = ["还有，客服电话一直打不通，请尽快联系我（第{k}次补充）",
              "Also: nobody answered the hotline yesterday, please call me back (note {k})",
              "补充一下：商户说没有收到款项，截图我稍后发（{k}）"]


@dataclass
class Sender:
    channel: str
    n: int
    problem: str = ""  # the text of their last problem report
    last_key: str = ""  # Telegram: their last message id; app: their last message's id (once answered)
    msgs: int = 0


@dataclass
class Sent:
    """One logical provider message (a retry of an earlier one shares its ``scope``)."""

    i: int
    channel: str
    kind: str
    sender: int
    scope: str  # the idempotency key the adapter files it under: "<channel>:<scope>"
    raw: bytes = b""
    port: int = 0
    status: int = 0
    body: bytes = b""
    tries: int = 0
    scheduled: float = 0.0
    acked_at: float = 0.0
    latency_ms: float = 0.0
    message_id: str = ""  # filled in afterwards (app: from the answer; webhooks: from the idempotency key)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _pick(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    x, acc = rng.random(), 0.0
    for name, share in table:
        acc += share
        if x < acc:
            return name
    return table[-1][0]


class Traffic:
    def __init__(self, seed: int = 12, kinds: tuple[tuple[str, float], ...] = KINDS) -> None:
        self.rng = random.Random(seed)
        self.kinds = kinds
        self.senders: dict[str, list[Sender]] = {c: [] for c, _ in MIX}
        self.sent: list[Sent] = []
        self.counter = 0
        self.tg_update = 900_000
        self.wx_msg = 7 * 10**15
        from twilio.request_validator import RequestValidator

        from adapters.wechat import Crypto, sha1_signature

        self.tw = RequestValidator(TW_TOKEN)
        self.wx = Crypto(WX_AES, WX_APP)
        self.sha1 = sha1_signature
        self.run_tag = os.urandom(3).hex()

    # -- what to send -----------------------------------------------------------------------

    def _problem(self) -> str:
        self.counter += 1
        amt = f"{self.rng.randint(1, 9999)}.{self.rng.randint(0, 99):02d}"
        txn = f"T2026{self.counter:08d}{self.rng.randint(0, 9999):04d}"
        return self.rng.choice(PROBLEMS).format(amt=amt, txn=txn)

    def plan(self, i: int) -> Sent:
        channel = _pick(self.rng, MIX)
        kind = _pick(self.rng, self.kinds)
        pool = self.senders[channel]
        if kind == "retry":
            earlier = [s for s in self.sent[-400:] if s.channel == channel and s.kind != "retry" and s.raw]
            if earlier:
                first = self.rng.choice(earlier)
                return Sent(i, channel, "retry", first.sender, first.scope, raw=first.raw, port=first.port)
            kind = "new"
        if kind != "new" and not pool:
            kind = "new"
        if kind == "new":
            sender = Sender(channel, len(pool))
            pool.append(sender)
            sender.problem = self._problem()
            text = sender.problem
        else:
            sender = self.rng.choice(pool)
            if kind == "repeat":
                text = sender.problem
            elif kind == "another":
                sender.problem = self._problem()
                text = sender.problem
            else:
                text = self.rng.choice(FOLLOW_UPS).format(k=i)
        sender.msgs += 1
        return getattr(self, f"_{channel}")(i, kind, sender, text)

    # -- as each provider sends it ----------------------------------------------------------

    def _app(self, i: int, kind: str, s: Sender, text: str) -> Sent:
        user = f"soak{self.run_tag}u{s.n}"
        cmid = f"c{i}"
        body: dict = {"user_id": user, "text": text, "client_message_id": cmid}
        if kind == "follow_up" and s.last_key:
            body["complaint_id"] = s.last_key  # the earlier message's id: "this continues that"
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"}
        sent = Sent(i, "app", kind, s.n, f"app:{user}:{cmid}")
        sent.raw = build_request("POST", "/v1/messages", "gateway", headers, data)
        return sent

    def _twilio_sms(self, i: int, kind: str, s: Sender, text: str) -> Sent:
        sid = "SM" + hashlib.md5(f"{self.run_tag}:{i}".encode()).hexdigest()
        params = {"MessageSid": sid, "SmsSid": sid, "AccountSid": TW_SID, "From": f"+86139{s.n:08d}",
                  "To": "+15005550006", "Body": text, "NumMedia": "0", "NumSegments": "1",
                  "SmsStatus": "received", "ApiVersion": "2010-04-01", "FromCountry": "CN"}
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": self.tw.compute_signature(PUBLIC + "/webhooks/twilio/sms", params)}
        sent = Sent(i, "twilio_sms", kind, s.n, f"twilio_sms:sid:{sid}")
        sent.raw = build_request("POST", "/webhooks/twilio/sms", "gateway", headers, urlencode(params).encode())
        return sent

    def _whatsapp(self, i: int, kind: str, s: Sender, text: str) -> Sent:
        wa_id = f"86137{s.n:08d}"
        wamid = "wamid.HBgN" + base64.b64encode(hashlib.sha1(f"{self.run_tag}:{i}".encode()).digest()).decode()
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": f"Kunde {s.n}"}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": wamid, "timestamp": str(int(time.time())), "type": "text",
                              "text": {"body": text}}]}}]}]}, ensure_ascii=False).encode()
        sig = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
        sent = Sent(i, "whatsapp", kind, s.n, f"whatsapp:wamid:{wamid}")
        sent.raw = build_request("POST", "/webhooks/meta", "gateway",
                                 {"Content-Type": "application/json", "X-Hub-Signature-256": sig}, body)
        return sent

    def _telegram(self, i: int, kind: str, s: Sender, text: str) -> Sent:
        user = 6_000_000 + s.n
        self.tg_update += 1
        edit = kind == "follow_up" and bool(s.last_key)
        if edit:
            message_id = int(s.last_key)
            msg = {"message_id": message_id, "date": int(time.time()) - 5, "edit_date": int(time.time()),
                   "text": text, "from": {"id": user, "is_bot": False, "first_name": "客户", "language_code": "zh-hans"},
                   "chat": {"id": user, "type": "private", "first_name": "客户"}}
            update = {"update_id": self.tg_update, "edited_message": msg}
            scope = f"telegram:upd:{self.tg_update}"
        else:
            message_id = 100 + s.msgs
            s.last_key = str(message_id)
            msg = {"message_id": message_id, "date": int(time.time()), "text": text,
                   "from": {"id": user, "is_bot": False, "first_name": "客户", "language_code": "zh-hans"},
                   "chat": {"id": user, "type": "private", "first_name": "客户"}}
            update = {"update_id": self.tg_update, "message": msg}
            scope = f"telegram:chat:{user}:{message_id}"
        body = json.dumps(update, ensure_ascii=False).encode()
        sent = Sent(i, "telegram", kind, s.n, scope)
        sent.raw = build_request("POST", "/webhooks/telegram", "gateway",
                                 {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TG_SECRET},
                                 body)
        return sent

    def _wechat(self, i: int, kind: str, s: Sender, text: str) -> Sent:
        openid = f"oSoak{self.run_tag}{s.n:016d}"
        self.wx_msg += 1
        ts, nonce = str(int(time.time())), os.urandom(5).hex()
        inner = (f"<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
                 f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{ts}</CreateTime>"
                 f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{text}]]></Content>"
                 f"<MsgId>{self.wx_msg}</MsgId></xml>")
        encrypted = self.wx.encrypt(inner)
        query = urlencode({"signature": self.sha1(WX_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                           "openid": openid, "encrypt_type": "aes",
                           "msg_signature": self.sha1(WX_TOKEN, ts, nonce, encrypted)})
        body = (f"<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
                f"<Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>").encode()
        sent = Sent(i, "wechat", kind, s.n, f"wechat:msg:{self.wx_msg}")
        sent.raw = build_request("POST", f"/webhooks/wechat?{query}", "gateway", {"Content-Type": "text/xml"}, body)
        return sent

    # -- sending ----------------------------------------------------------------------------

    async def run(self, ports: list[int], *, rate: float, count: int, tries: int = 5,
                  max_connections: int = 256, on_tick=None) -> list[Sent]:
        """Open loop: request i starts at t0 + i / rate (latency counts from there), on gateway
        i mod len(ports); a request without a 2xx is sent again one second later, up to ``tries``."""
        idle: dict[int, list[Connection]] = {p: [] for p in ports}
        in_flight = 0
        t0 = time.perf_counter() + 0.05
        wall0 = time.time() + 0.05
        tasks: list[asyncio.Task] = []

        async def fire(sent: Sent) -> None:
            nonlocal in_flight
            while sent.tries < tries:
                sent.tries += 1
                pool = idle[sent.port]
                conn = pool.pop() if pool else Connection("127.0.0.1", sent.port)
                in_flight += 1
                try:
                    sent.status, sent.body = await conn.request(sent.raw)
                    pool.append(conn)
                except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                    sent.status = 0
                    conn.close()
                finally:
                    in_flight -= 1
                if sent.ok:
                    sent.acked_at = time.time()
                    sent.latency_ms = (time.perf_counter() - sent.scheduled) * 1000
                    if sent.channel == "app":
                        mid = json.loads(sent.body).get("message_id", "")
                        sent.message_id = mid
                        s = self.senders["app"][sent.sender]
                        if sent.kind in ("new", "another"):
                            s.last_key = mid
                    return
                await asyncio.sleep(1.0)

        start = len(self.sent)  # a second run goes on with the same senders
        for i in range(start, start + count):
            sent = self.plan(i)
            if not sent.port:
                sent.port = ports[i % len(ports)]
            sent.scheduled = t0 + (i - start) / rate
            self.sent.append(sent)
            delay = sent.scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            while in_flight >= max_connections:
                await asyncio.sleep(0.001)
            tasks.append(asyncio.create_task(fire(sent)))
            if on_tick is not None and i % 100 == 0:
                on_tick(i - start)
        await asyncio.gather(*tasks)
        self.started_at = wall0
        return self.sent
