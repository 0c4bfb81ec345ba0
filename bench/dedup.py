"""Benchmark: the repeat-report lookup at 10^4, 10^5 and 10^6 open complaints, and Redis memory
per open complaint.

    .venv/bin/python bench/dedup.py [--sizes 10000,100000,1000000] [--lookups 3000]

A fresh redis-server (no persistence, so the figures are Redis's own) is started here.

1. **Real path, 10^4 complaints**: each message goes through the gateway's own intake script and
   the worker's ``process_message`` (categorise, repeat lookup, route, commit, incident check;
   no sender configured); memory per open complaint is measured on what that leaves behind.
2. **Scale**: the store is grown to each size by writing, per complaint, the same keys a
   committed complaint has (its record encoded from a real one with the ids changed, the
   indexes, the message record, the customer's contact and open-case fingerprint), pipelined; then the
   lookup is timed: the prepare script (load the message, resolve the customer, read that
   customer's open-case fingerprints: one round trip) plus the match in Python, for messages of
   random existing customers. Baseline in the same run: a Redis PING round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis  # noqa: E402
from msgspec.structs import replace  # noqa: E402

from gateway.settings import load_settings  # noqa: E402
from router.store import ComplaintStore, encode_complaint, new_id  # noqa: E402
from normalizer.ids import dt_to_ms
from normalizer.inbound import build_message  # noqa: E402
from normalizer.schema import Complaint, Contact  # noqa: E402
from plugins.manager import GatewayPlugins  # noqa: E402
from router import repeats  # noqa: E402
from router.categorise import categorise  # noqa: E402
from router.context import WorkerContext  # noqa: E402
from router.pipeline import process_message  # noqa: E402
from router.services import build_services  # noqa: E402

TEXTS = ["我被重复扣款了 ¥{a}，交易号 T{t}，请尽快退款", "I was charged twice for my coffee, ${a}, please refund",
         "app闪退打不开，更新以后无法使用，订单 {t}", "提现手续费太高了，要求减免 {a} 元", "Withdrawal of ${a} pending since Monday",
         "账户被冻结了，无法转账 {t}", "my balance shows {a} less than it should"]
CUSTOMERS_PER_COMPLAINT = 0.4  # ~2.5 open cases per customer


def text(n: int) -> str:
    return TEXTS[n % len(TEXTS)].format(a=f"{(n % 997) + 1}.{n % 100:02d}", t=f"2026{n:012d}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))]


async def used(r: aioredis.Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


async def real_path(url: str, count: int) -> tuple[float, int]:
    """Messages through intake + process_message; memory per open complaint afterwards."""
    settings = load_settings({"REDIS_URL": url, "GATEWAY_REDIS_PREFIX": "real:", "GATEWAY_WORKER_WAKE": "0"})
    r = aioredis.from_url(url)
    store = ComplaintStore("real:", worker_wake=False)
    store.bind(r)
    services = build_services(settings, store)
    services.redis = r
    ctx = WorkerContext.of(settings, store, GatewayPlugins(), services).job_ctx()
    base = await used(r)
    sem = asyncio.Semaphore(64)

    async def one(n: int) -> None:
        async with sem:
            message = build_message(message_id=new_id("msg"), channel="app",
                                    sender=Contact(kind="app_user", value=f"u{int(n * CUSTOMERS_PER_COMPLAINT)}"),
                                    text=text(n))
            await store.intake(message, idempotency_scope=f"c{n}")
            await process_message(ctx, message.id)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    elapsed = time.perf_counter() - started
    # what the worker's job bookkeeping leaves is arq's (results expire); count only our keys
    await r.delete(store.keys.arq_queue)
    async for key in r.scan_iter(match="arq:*", count=1000):
        await r.delete(key)
    open_now = await r.zcard(store.keys.idx("status", "accepted"))
    per = (await used(r) - base) / max(open_now, 1)
    await r.aclose()
    return per, int(count / elapsed)


async def grow(r: aioredis.Redis, store: ComplaintStore, template: Complaint, start: int, stop: int) -> None:
    """Write complaints start..stop-1 as the commit writes them (pipelined, no Lua)."""
    k = store.keys
    now = datetime.now(timezone.utc)
    created = dt_to_ms(now)
    batch = 2000
    for lo in range(start, stop, batch):
        async with r.pipeline(transaction=False) as pipe:
            for n in range(lo, min(stop, lo + batch)):
                cid, mid, cus = f"cmp_b{n:010d}", f"msg_b{n:010d}", f"cus_b{int(n * CUSTOMERS_PER_COMPLAINT):09d}"
                t = text(n)
                cat = categorise(t).category
                body = encode_complaint(template, {"cmp_TEMPLATE": cid, "cus_TEMPLATE": cus})
                pipe.set(k.complaint(cid), body)
                pipe.set(k.case(f"C-20261123-B{n:09d}"), cid)
                for idx in (k.idx_all, k.idx("status", "accepted"), k.idx("category", cat), k.idx("customer", cus),
                            k.idx("channel", "app"), k.idx("skill", "payments")):
                    pipe.zadd(idx, {cid: created + n})
                pipe.zadd(k.queue("payments"), {cid: created + n})
                pipe.zadd(k.queue_age("payments"), {cid: created + n})
                pipe.hset(k.msg(mid), mapping={"status": "processed", "complaint_id": cid, "channel": "app",
                                               "received_ms": created, "contact": f"app_user:u{n}",
                                               "case_number": f"C-20261123-B{n:09d}"})
                pipe.set(k.idem("app", f"b{n}"), f"{mid}|", ex=7 * 86400)
                pipe.set(k.contact(Contact(kind="app_user", value=cus)), cus)
                pipe.sadd(k.customer_contacts(cus), f"app_user:{cus}")
                fp = repeats._encoder.encode(repeats.Fingerprint(cat, created + n, f"{(n % 997) + 1}.00 CNY",
                                                                 f"T2026{n:012d}", repeats.normalise_text(t)[:repeats.FINGERPRINT_TEXT]))
                pipe.hset(k.open_cases(cus), cid, fp)
            await pipe.execute()


async def lookups(r: aioredis.Redis, store: ComplaintStore, size: int, count: int) -> tuple[list[float], list[float]]:
    customers = int(size * CUSTOMERS_PER_COMPLAINT)
    times, pings = [], []
    for i in range(count):
        cus = f"cus_b{random.randrange(customers):09d}"
        message = build_message(message_id=new_id("msg"), channel="app", sender=Contact(kind="app_user", value=cus),
                                text=text(random.randrange(size)))
        await store.intake(message, idempotency_scope=None)
        t0 = time.perf_counter()
        await r.ping()
        pings.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        status, msg, fields = await store.prepare(message.id)
        candidates = {cid: fp for cid, raw in fields["open_cases"].items() if (fp := repeats.decode(raw))}
        repeats.find_repeat(candidates, msg, categorise(msg.text).category, dt_to_ms(msg.received_at), 72 * 3_600_000)
        times.append((time.perf_counter() - t0) * 1000)
        async with r.pipeline(transaction=False) as pipe:  # leave no trace of the probe
            pipe.delete(store.keys.msg(message.id), f"arq:job:ingest:{message.id}")
            pipe.zrem(store.keys.pending, message.id)
            pipe.zrem(store.keys.arq_queue, f"ingest:{message.id}")
            await pipe.execute()
    return times, pings


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        port = free_port()
        proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
                                 "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            r = aioredis.from_url(url)
            for _ in range(100):
                try:
                    await r.ping()
                    break
                except Exception:
                    await asyncio.sleep(0.05)
            per_real, rate = await real_path(url, args.real)
            print(f"real path: {args.real} messages through intake + process_message at {rate}/s; "
                  f"Redis memory per open complaint {per_real / 1024:.2f} KB (goal <= 4 KB)")
            # a real complaint's JSON as the template for the scale phase
            real = ComplaintStore("real:")
            real.bind(r)
            cid = (await r.zrange(real.keys.idx_all, 0, 0))[0].decode()
            complaint = await real.get(cid)
            template = replace(complaint, id="cmp_TEMPLATE", customer_id="cus_TEMPLATE")
            await r.flushdb()
            store = ComplaintStore("bench:", worker_wake=False)
            store.bind(r)
            grown = 0
            for size in (int(s) for s in args.sizes.split(",")):
                before = await used(r)
                started = time.perf_counter()
                await grow(r, store, template, grown, size)
                fill = time.perf_counter() - started
                per = (await used(r) - before) / (size - grown)
                grown = size
                times, pings = await lookups(r, store, size, args.lookups)
                print(f"{size:>9,} open complaints: lookup p50 {statistics.median(times):.3f} ms "
                      f"p99 {pct(times, 99):.3f} ms max {max(times):.3f} ms | PING p50 {statistics.median(pings):.3f} "
                      f"p99 {pct(pings, 99):.3f} ms | p99 ratio {pct(times, 99) / pct(pings, 99):.1f}x | "
                      f"memory {per / 1024:.2f} KB per complaint (filled in {fill:.0f} s) | "
                      f"used {(await used(r)) / 2**20:.0f} MB")
            await r.aclose()
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--lookups", type=int, default=3000)
    parser.add_argument("--real", type=int, default=10000, help="messages through the real path")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
