"""Benchmark: a realistic mix of channels at rising rates — signed Twilio SMS, WhatsApp, Telegram,
WeChat (safe mode) and app messages — against the bare endpoint in the same run. Reports, per
rate: acknowledgement p50 / p99, ingress → in-skill-queue p99, and where the gateway stops
keeping up (errors, refusals, or a growing backlog).

    .venv/bin/python bench/load.py [--rates 100,200,400,800] [--seconds 10]

Same stack as bench/webhooks.py: uvicorn (1 process), one worker, Redis with AOF always.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from intake import APP_KEY, Stack, ingress_to_queue, message_request, pct  # noqa: E402
from loadgen import open_loop  # noqa: E402
from webhooks import ENV, meta, telegram, twilio, wechat  # noqa: E402

MIX = [("app", 0.4), ("twilio_sms", 0.2), ("whatsapp", 0.2), ("telegram", 0.1), ("wechat", 0.1)]


def mixed(host: str, port: int):
    makers = {"app": message_request(port), "twilio_sms": twilio(host), "whatsapp": meta(host),
              "telegram": telegram(host), "wechat": wechat(host)}
    weights = [(name, int(share * 100)) for name, share in MIX]
    table = [name for name, w in weights for _ in range(w)]

    def make(i: int) -> bytes:
        return makers[table[i % len(table)]](i)

    return make


async def run(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        stack = Stack("uvicorn", Path(tmp), "always", {**ENV, "GATEWAY_CONTACT_RATE_PER_MINUTE": "0",
                                                       "GATEWAY_CHANNEL_RATE_PER_SECOND": "0"})
        stack.start()
        try:
            r = redis.Redis.from_url(stack.redis_url)
            gw_host, bare_host = f"127.0.0.1:{stack.gw_port}", f"127.0.0.1:{stack.bare_port}"
            await open_loop("127.0.0.1", stack.gw_port, mixed(gw_host, stack.gw_port), rate=50, seconds=1)
            stack.wait_drained()
            for rate in (float(x) for x in args.rates.split(",")):
                bare = await open_loop("127.0.0.1", stack.bare_port, mixed(bare_host, stack.bare_port), rate=rate,
                                       seconds=args.seconds)
                before = r.zcard(stack.prefix + "idx:all")
                started = time.monotonic()
                gw = await open_loop("127.0.0.1", stack.gw_port, mixed(gw_host, stack.gw_port), rate=rate,
                                     seconds=args.seconds, keep_bodies=True)
                backlog_at_end = r.zcard(stack.prefix + "pending")
                stack.wait_drained()
                drained_after = time.monotonic() - started - args.seconds
                app_bodies = [b for b in gw.bodies if b.startswith(b'{"message_id"')]
                queue_lat = ingress_to_queue(stack, app_bodies)
                opened = r.zcard(stack.prefix + "idx:all") - before
                row = {"rate": rate, "sent": gw.sent, "ok": gw.ok, "errors": gw.errors, "statuses": gw.statuses,
                       "ack_p50_ms": round(gw.pct(50), 1), "ack_p99_ms": round(gw.pct(99), 1),
                       "bare_ack_p99_ms": round(bare.pct(99), 1), "queue_p99_ms": round(pct(queue_lat, 99), 1),
                       "backlog_at_end": backlog_at_end, "drained_after_s": round(max(0.0, drained_after), 1),
                       "complaints_opened": opened}
                row["keeps_up"] = gw.ok == gw.sent and backlog_at_end < rate and row["ack_p99_ms"] < 1000
                print(f"{rate:6.0f}/s: {gw.ok}/{gw.sent} 2xx, ack p50 {row['ack_p50_ms']} p99 {row['ack_p99_ms']} ms "
                      f"(bare p99 {row['bare_ack_p99_ms']}) | ingress->queue p99 {row['queue_p99_ms']} ms (app) | "
                      f"backlog at end {backlog_at_end}, drained {row['drained_after_s']} s later | "
                      f"{'keeps up' if row['keeps_up'] else 'FALLS BEHIND'}")
                rows.append(row)
        finally:
            stack.stop()
    print(json.dumps(rows, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="100,200,400,800")
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"mix: {', '.join(f'{n} {int(s * 100)}%' for n, s in MIX)}; app key {APP_KEY[:5]}…")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
