"""Benchmark: how late deadline timers fire with 10^3 … 10^6 timers pending, and that none is
missed or fired twice.

    .venv/bin/python bench/timers.py [--pending 1000,10000,100000,1000000] [--probes 1000]

Per size, on a fresh redis-server (AOF, appendfsync always, as the embedded one):
1. the timer set is filled with ``pending`` timers due tomorrow (they wait, as real ones do);
2. ``probes`` real complaints are written, each with a first-response deadline due at an
   instant spread over the next few seconds, and their timers added;
3. one ``python -m gateway worker`` fires them; lateness is what the fire step records
   (its clock minus the due time), read back from each complaint's history; a probe without
   a breach is missed, one with two is fired twice;
4. baseline, same run, same Redis, same pending set: a bare loop that claims due members of
   a sorted set the same way and does nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402

from router.store import ComplaintStore, encode_complaint  # noqa: E402
from normalizer.schema import Complaint, ComplaintStatus, Contact, Deadline  # noqa: E402
from router.deadlines import timer_members  # noqa: E402

PREFIX = "tb:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")


async def fill_pending(r: aioredis.Redis, key: str, count: int) -> None:
    tomorrow = int(time.time() * 1000) + 86_400_000
    for lo in range(0, count, 10_000):
        async with r.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {f"cmp_wait{n:08d}|first_response|due|1": tomorrow + n for n in range(lo, min(count, lo + 10_000))})
            await pipe.execute()


async def write_probes(r: aioredis.Redis, store: ComplaintStore, probes: int, start_in: float, spread: float) -> list[str]:
    now = datetime.now(timezone.utc)
    ids = []
    async with r.pipeline(transaction=False) as pipe:
        for n in range(probes):
            cid = f"cmp_probe{n:06d}"
            due = now + timedelta(seconds=start_in + spread * n / probes)
            c = Complaint(id=cid, case_number=f"C-20261123-{n:06d}", status=ComplaintStatus.accepted, category="other",
                          formal_complaint=False, channel="app", customer_id="cus_probe",
                          contact=Contact(kind="app_user", value=f"p{n}"), language="en", created_at=now,
                          updated_at=now, skill="general",
                          deadlines=[Deadline(kind="first_response", due=due)])
            pipe.set(store.keys.complaint(cid), encode_complaint(c))
            pipe.zadd(store.keys.timers, timer_members(cid, c.deadlines[0]))
            ids.append(cid)
        await pipe.execute()
    return ids


async def bare_baseline(r: aioredis.Redis, key: str, probes: int, start_in: float, spread: float) -> list[float]:
    """Claim due members of a sorted set (ZRANGEBYSCORE + ZREM), sleeping until the next due
    (at most 25 ms), and nothing else: the floor any Redis-polled timer has."""
    now_ms = time.time() * 1000
    await r.zadd(key, {f"probe{n}": now_ms + (start_in + spread * n / probes) * 1000 for n in range(probes)})
    late: list[float] = []
    while len(late) < probes:
        t = time.time() * 1000
        due = await r.zrangebyscore(key, "-inf", t, withscores=True, start=0, num=200)
        for member, score in due:
            if await r.zrem(key, member):
                late.append(time.time() * 1000 - score)
        nxt = await r.zrange(key, 0, 0, withscores=True)
        wait = 25 if not nxt else max(1, min(25, nxt[0][1] - time.time() * 1000))
        await asyncio.sleep(wait / 1000)
    return late


async def one_size(pending: int, args: argparse.Namespace, tmp: Path) -> dict:
    port = free_port()
    rdir = tmp / f"redis-{pending}"
    rdir.mkdir()
    server = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "yes", "--appendfsync", "always", "--dir", str(rdir)],
                              stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    r = aioredis.from_url(url)
    for _ in range(100):
        try:
            await r.ping()
            break
        except Exception:
            await asyncio.sleep(0.05)
    store = ComplaintStore(PREFIX)
    store.bind(r)
    worker = None
    try:
        await fill_pending(r, store.keys.timers, pending)
        await fill_pending(r, "bare:timers", pending)
        bare = await bare_baseline(r, "bare:timers", args.probes, 1.0, args.spread)
        (tmp / "plugins.toml").write_text("[plugins.app]\nenabled = true\n")
        env = {**os.environ, "REDIS_URL": url, "GATEWAY_REDIS_PREFIX": PREFIX, "GATEWAY_PLUGINS_AUTOLOAD": "0",
               "GATEWAY_PLUGINS": str(tmp / "plugins.toml"), "GATEWAY_VAR_DIR": str(tmp / "var"),
               "GATEWAY_LOG_LEVEL": "WARNING"}
        worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(2.0)  # the worker is up and idling
        ids = await write_probes(r, store, args.probes, 1.0, args.spread)
        await asyncio.sleep(1.0 + args.spread + 3.0)
        late, missed, twice = [], 0, 0
        for cid in ids:
            c = await store.get(cid)
            breaches = [h for h in c.history if h.action == "sla_breached" and h.detail.get("deadline") == "first_response"]
            if not breaches:
                missed += 1
            elif len(breaches) > 1:
                twice += 1
            if breaches:
                late.append(float(breaches[0].detail["late_ms"]))
        left = await r.zcard(store.keys.timers)
        row = {"pending": pending, "probes": args.probes, "p50_ms": round(statistics.median(late), 1) if late else None,
               "p99_ms": round(pct(late, 99), 1), "max_ms": round(max(late), 1) if late else None,
               "missed": missed, "fired_twice": twice, "bare_p50_ms": round(statistics.median(bare), 1),
               "bare_p99_ms": round(pct(bare, 99), 1), "timers_left": left}
        row["p99_ratio"] = round(row["p99_ms"] / max(row["bare_p99_ms"], 0.1), 2)
        print(f"{pending:>9,} pending: lateness p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms max {row['max_ms']} ms "
              f"| missed {missed} | fired twice {twice} | bare poller p50 {row['bare_p50_ms']} p99 "
              f"{row['bare_p99_ms']} ms | p99 ratio {row['p99_ratio']} (goal p99 <= 100 ms, flat)")
        return row
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        await r.aclose()
        server.terminate()
        server.wait(10)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-timers-") as tmp:
        for pending in (int(p) for p in args.pending.split(",")):
            sub = Path(tmp) / str(pending)
            sub.mkdir()
            await one_size(pending, args, sub)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", default="1000,10000,100000,1000000")
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which the probes fall due")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
