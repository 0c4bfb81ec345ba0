"""A fake of the providers' REST APIs for benchmarks: Twilio Messages, the WhatsApp Cloud API,
the Telegram Bot API and the WeChat customer-service API on one loopback port. It answers as each
provider answers (so the senders record "sent") and writes one JSON line per request to a file,
so a benchmark can count what reached "the provider" per complaint after the run.

    python bench/provider_sink.py --port P --record FILE

Runs as its own process (asyncio streams, keep-alive), so the recording costs the benchmark's
load generator nothing. Point the adapters at it with ``sink_env(base)``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import signal
import sys
import time
from urllib.parse import parse_qs, urlsplit

TWILIO_FROM = "+15005550006"
META_PHONE_ID = "109000000000001"
TELEGRAM_BOT = "7000001:bench-bot-token"


def sink_env(base: str) -> dict[str, str]:
    """The environment that sends every adapter's outbound calls to the sink at ``base``."""
    return {
        "TWILIO_API_BASE": base, "TWILIO_FROM": TWILIO_FROM,
        "META_GRAPH_BASE": base, "META_WHATSAPP_TOKEN": "bench-wa-token",
        "META_WHATSAPP_PHONE_NUMBER_ID": META_PHONE_ID,
        "TELEGRAM_API_BASE": base, "TELEGRAM_BOT_TOKEN": TELEGRAM_BOT,
        "WECHAT_API_BASE": base, "WECHAT_APP_SECRET": "bench-wechat-secret",
    }


_TWILIO = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")
_META = re.compile(r"^/v[0-9.]+/([^/]+)/messages$")
_TELEGRAM = re.compile(r"^/bot([^/]+)/sendMessage$")
_counter = itertools.count(1)


def answer(method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict | None]:
    """(status, response body, record or None for requests that are not messages)."""
    split = urlsplit(target)
    path, now = split.path, time.time()
    n = next(_counter)
    if method == "POST" and (m := _TWILIO.match(path)):
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        sid = f"SM{os.getpid():08x}{n:024x}"
        rec = {"channel": "twilio_sms", "to": form.get("To", ""), "text": form.get("Body", ""), "pid": sid}
        resp = {"sid": sid, "account_sid": m.group(1), "to": form.get("To", ""), "from": form.get("From", ""),
                "body": form.get("Body", ""), "status": "queued", "num_segments": "1", "direction": "outbound-api",
                "api_version": "2010-04-01", "date_created": "Mon, 23 Nov 2026 10:00:00 +0000",
                "uri": f"/2010-04-01/Accounts/{m.group(1)}/Messages/{sid}.json"}
        return 201, json.dumps(resp).encode(), {**rec, "t": now}
    if method == "POST" and _META.match(path):
        data = json.loads(body)
        wamid = f"wamid.sink{n:016d}"
        text = (data.get("text") or {}).get("body") or json.dumps(data.get("template"), ensure_ascii=False)
        rec = {"channel": "whatsapp", "to": str(data.get("to", "")), "text": text, "pid": wamid}
        resp = {"messaging_product": "whatsapp", "contacts": [{"input": data.get("to"), "wa_id": data.get("to")}],
                "messages": [{"id": wamid}]}
        return 200, json.dumps(resp).encode(), {**rec, "t": now}
    if method == "POST" and _TELEGRAM.match(path):
        data = json.loads(body)
        rec = {"channel": "telegram", "to": str(data.get("chat_id", "")), "text": data.get("text", ""), "pid": str(n)}
        resp = {"ok": True, "result": {"message_id": n, "date": int(now), "chat": {"id": data.get("chat_id"),
                                                                                   "type": "private"},
                                       "text": data.get("text", "")}}
        return 200, json.dumps(resp).encode(), {**rec, "t": now}
    if path == "/cgi-bin/token":
        return 200, json.dumps({"access_token": "sink-access-token", "expires_in": 7200}).encode(), None
    if method == "POST" and path == "/cgi-bin/message/custom/send":
        data = json.loads(body)
        rec = {"channel": "wechat", "to": data.get("touser", ""), "text": (data.get("text") or {}).get("content", ""),
               "pid": ""}
        return 200, b'{"errcode":0,"errmsg":"ok"}', {**rec, "t": now}
    return 404, b'{"error":"no such route"}', {"channel": "?", "path": path, "method": method, "t": now}


async def serve(port: int, record_path: str) -> None:
    out = open(record_path, "a", buffering=1, encoding="utf-8")  # line-buffered: a killed sink keeps its lines

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    h = await reader.readline()
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, payload, rec = answer(method, target, headers, body)
                if rec is not None:
                    out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("sink ready", flush=True)
    async with server:
        await stop.wait()
    out.close()


def read_records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(args.port, args.record))
    sys.exit(0)


if __name__ == "__main__":
    main()
