"""Benchmark: how fast each provider's webhook is answered (the providers' limits: WeChat 5 s,
Twilio 15 s, Meta and Telegram retry slow answers), against a bare endpoint that reads the body
and answers 200 without Redis, same server, same rate, same run.

    .venv/bin/python bench/webhooks.py [--rate 200] [--seconds 10]

Every request is signed as its provider signs it (Twilio, Meta, Telegram, WeChat safe mode) and
carries a new message id, so each one is a real durable intake, not a duplicate.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intake import Stack  # noqa: E402
from loadgen import build_request, open_loop  # noqa: E402

PUBLIC = "https://desk.example.com"
TW_SID, TW_TOKEN = "AC" + "b" * 32, "bench-twilio-token"
META_SECRET, TG_SECRET = "bench-meta-secret", "bench-telegram-secret"
WX_TOKEN, WX_APP = "benchwxtoken", "wxbench00000001"
WX_AES = base64.b64encode(bytes(range(1, 33))).decode().rstrip("=")
ENV = {
    "GATEWAY_PUBLIC_URL": PUBLIC, "TWILIO_ACCOUNT_SID": TW_SID, "TWILIO_AUTH_TOKEN": TW_TOKEN,
    "META_APP_SECRET": META_SECRET, "META_VERIFY_TOKEN": "v", "TELEGRAM_SECRET": TG_SECRET,
    "WECHAT_TOKEN": WX_TOKEN, "WECHAT_APP_ID": WX_APP, "WECHAT_AES_KEY": WX_AES,
    # outbound goes nowhere reachable: the worker's sends fail fast on loopback
    "TWILIO_API_BASE": "http://127.0.0.1:9", "META_GRAPH_BASE": "http://127.0.0.1:9",
    "TELEGRAM_API_BASE": "http://127.0.0.1:9", "WECHAT_API_BASE": "http://127.0.0.1:9",
}
TEXTS = ["我被重复扣款了 ¥128.50，请尽快退款", "I was charged twice for my coffee, $4.50, please refund",
         "app闪退打不开，更新以后无法使用", "Withdrawal pending for 3 days"]


def twilio(host: str):
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(TW_TOKEN)

    def make(i: int) -> bytes:
        params = {"MessageSid": f"SM{os.urandom(16).hex()}", "AccountSid": TW_SID, "From": f"+86138{i % 10**8:08d}",
                  "To": "+15005550006", "Body": TEXTS[i % 4], "NumMedia": "0", "ApiVersion": "2010-04-01"}
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "X-Twilio-Signature": validator.compute_signature(PUBLIC + "/webhooks/twilio/sms", params)}
        return build_request("POST", "/webhooks/twilio/sms", host, headers, urlencode(params).encode())

    return make


def meta(host: str):
    def make(i: int) -> bytes:
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
            "field": "messages", "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "9"},
                                           "contacts": [{"profile": {"name": "x"}, "wa_id": f"86138{i:08d}"}],
                                           "messages": [{"from": f"86138{i:08d}", "id": "wamid." + os.urandom(12).hex(),
                                                         "timestamp": str(int(time.time())), "type": "text",
                                                         "text": {"body": TEXTS[i % 4]}}]}}]}]},
                          ensure_ascii=False).encode()
        sig = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return build_request("POST", "/webhooks/meta", host,
                             {"Content-Type": "application/json", "X-Hub-Signature-256": sig}, body)

    return make


def telegram(host: str):
    def make(i: int) -> bytes:
        user = 10_000 + i
        body = json.dumps({"update_id": i, "message": {
            "message_id": i, "date": int(time.time()), "text": TEXTS[i % 4],
            "from": {"id": user, "is_bot": False, "first_name": "x"}, "chat": {"id": user, "type": "private"}}},
            ensure_ascii=False).encode()
        return build_request("POST", "/webhooks/telegram", host,
                             {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": TG_SECRET}, body)

    return make


def wechat(host: str):
    from adapters.wechat import Crypto, sha1_signature

    crypto = Crypto(WX_AES, WX_APP)

    def make(i: int) -> bytes:
        ts, nonce = str(int(time.time())), os.urandom(4).hex()
        inner = (f"<xml><ToUserName><![CDATA[gh_x]]></ToUserName><FromUserName><![CDATA[o{i:027d}]]></FromUserName>"
                 f"<CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
                 f"<Content><![CDATA[{TEXTS[i % 4]}]]></Content><MsgId>{10**15 + i}</MsgId></xml>")
        encrypted = crypto.encrypt(inner)
        query = urlencode({"signature": sha1_signature(WX_TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce,
                           "openid": f"o{i}", "encrypt_type": "aes",
                           "msg_signature": sha1_signature(WX_TOKEN, ts, nonce, encrypted)})
        body = f"<xml><ToUserName><![CDATA[gh_x]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
        return build_request("POST", f"/webhooks/wechat?{query}", host, {"Content-Type": "text/xml"}, body.encode())

    return make


async def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        stack = Stack("uvicorn", Path(tmp), "always", ENV)
        stack.start()
        try:
            for name, factory in (("twilio_sms", twilio), ("meta/whatsapp", meta), ("telegram", telegram),
                                  ("wechat (safe mode)", wechat)):
                gw_host, bare_host = f"127.0.0.1:{stack.gw_port}", f"127.0.0.1:{stack.bare_port}"
                await open_loop("127.0.0.1", stack.gw_port, factory(gw_host), rate=args.rate, seconds=1)  # warm-up
                bare = await open_loop("127.0.0.1", stack.bare_port, factory(bare_host), rate=args.rate,
                                       seconds=args.seconds)
                stack.wait_drained()
                gw = await open_loop("127.0.0.1", stack.gw_port, factory(gw_host), rate=args.rate,
                                     seconds=args.seconds)
                stack.wait_drained()
                row = {"channel": name, "rate": args.rate, "ok": gw.ok, "sent": gw.sent, "statuses": gw.statuses,
                       "p50_ms": round(gw.pct(50), 1), "p99_ms": round(gw.pct(99), 1), "max_ms": round(gw.pct(100), 1),
                       "bare_p50_ms": round(bare.pct(50), 1), "bare_p99_ms": round(bare.pct(99), 1)}
                print(f"{name:20s} gateway p50 {row['p50_ms']:6.1f} ms p99 {row['p99_ms']:6.1f} ms "
                      f"max {row['max_ms']:6.1f} ms ({gw.ok}/{gw.sent} 2xx) | bare p50 {row['bare_p50_ms']:.1f} "
                      f"p99 {row['bare_p99_ms']:.1f} ms | p99 ratio {gw.pct(99) / max(bare.pct(99), 0.01):.1f}x")
                rows.append(row)
        finally:
            stack.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(json.dumps(asyncio.run(run(args)), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
