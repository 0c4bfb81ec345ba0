"""Benchmark: how late deadline timers fire with 10^3 … 10^6 timers pending, and that none is
missed or fired twice; what an idle worker's timer loop costs; what an outage costs.

    .venv/bin/python bench/timers.py [--pending 1000,10000,100000,1000000] [--probes 1000]
                                     [--outage 1000] [--leads 0,100,250]

Per size, on a fresh redis-server (AOF, appendfsync always, as the embedded one):
1. the timer set is filled with ``pending`` timers due tomorrow (they wait, as real ones do);
2. ``probes`` real complaints are written, each with a first-response deadline due at an
   instant spread over the next few seconds, and their timers added;
3. one ``python -m gateway worker`` fires them; lateness is what the fire step records
   (its clock minus the due time), read back from each complaint's history; a probe without
   a breach is missed, one with two is fired twice;
4. baseline, same run, same Redis, same pending set: a bare loop that claims due members of
   a sorted set the same way and does nothing else.

Also per size: the Redis commands per second the worker sends while idle (``INFO commandstats``
over 3 s, the pending timers waiting), and, for each of ``--leads``, timers another process adds
due that many ms after it writes them (one at a time: how late a timer is that falls due before
the loop looks again).

Then ``--outage`` complaints on a Redis of their own, nobody answering: each a first-response
deadline whose warning and due time pass within seconds, with the supervisor webhook
(adapters/notify_webhook.py) pointed at a receiver here; three rounds: the receiver answering,
the receiver away (503) for the first 5 s, and no webhook set. Per complaint: Redis commands and
the CPU of the worker and of redis-server from the first write until every event is in (warning +
breach: two timer fires and their events), and the events received: each at least once, a case's
warning before its breach.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import redis.asyncio as aioredis  # noqa: E402

from router.store import ComplaintStore, encode_complaint  # noqa: E402
from normalizer.schema import Complaint, ComplaintStatus, Contact, Deadline  # noqa: E402
from router.deadlines import timer_members  # noqa: E402
from cost import cpu_seconds  # noqa: E402

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


async def write_complaints(r: aioredis.Redis, store: ComplaintStore, n: int, start_in: float, spread: float, *,
                           tag: str, day: str, deadline: Callable[[datetime], Deadline]) -> list[str]:
    """``n`` complaints ``cmp_<tag>NNNNNN`` of customer ``cus_<tag>``, each with one first-response
    deadline ``deadline(at)`` for an ``at`` spread over ``spread`` s from ``start_in`` s from now,
    and its timers: one pipeline."""
    now = datetime.now(timezone.utc)
    ids = []
    async with r.pipeline(transaction=False) as pipe:
        for i in range(n):
            cid = f"cmp_{tag}{i:06d}"
            c = Complaint(id=cid, case_number=f"C-{day}-{i:06d}", status=ComplaintStatus.accepted, category="other",
                          formal_complaint=False, channel="app", customer_id=f"cus_{tag}",
                          contact=Contact(kind="app_user", value=f"{tag[0]}{i}"), language="en", created_at=now,
                          updated_at=now, skill="general",
                          deadlines=[deadline(now + timedelta(seconds=start_in + spread * i / n))])
            pipe.set(store.keys.complaint(cid), encode_complaint(c))
            pipe.zadd(store.keys.timers, timer_members(cid, c.deadlines[0]))
            ids.append(cid)
        await pipe.execute()
    return ids


async def write_probes(r: aioredis.Redis, store: ComplaintStore, probes: int, start_in: float, spread: float) -> list[str]:
    return await write_complaints(r, store, probes, start_in, spread, tag="probe", day="20261123",
                                  deadline=lambda due: Deadline(kind="first_response", due=due))


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


def command_count(info: dict) -> int:
    return sum(int(v["calls"]) for v in info.values())


async def idle_rate(r: aioredis.Redis, seconds: float) -> float:
    """Commands per second Redis runs meanwhile, less this function's own two INFOs."""
    before = command_count(await r.info("commandstats"))
    await asyncio.sleep(seconds)
    return (command_count(await r.info("commandstats")) - before - 1) / seconds


async def short_leads(r: aioredis.Redis, store: ComplaintStore, lead_ms: int, probes: int) -> list[float]:
    """Timers written one at a time, each due ``lead_ms`` after it is written (at a random point of
    the loop's sleep): how late each fires."""
    import random

    ids = []
    for n in range(probes):
        await asyncio.sleep(random.uniform(0.05, 0.4))
        due = datetime.now(timezone.utc) + timedelta(milliseconds=lead_ms)
        cid = f"cmp_lead{lead_ms}x{n:04d}"
        c = Complaint(id=cid, case_number=f"C-20261124-{n:06d}", status=ComplaintStatus.accepted, category="other",
                      formal_complaint=False, channel="app", customer_id="cus_probe",
                      contact=Contact(kind="app_user", value=f"l{n}"), language="en", created_at=due,
                      updated_at=due, skill="general", deadlines=[Deadline(kind="first_response", due=due)])
        async with r.pipeline(transaction=False) as pipe:
            pipe.set(store.keys.complaint(cid), encode_complaint(c))
            pipe.zadd(store.keys.timers, timer_members(cid, c.deadlines[0]))
            await pipe.execute()
        ids.append(cid)
    await asyncio.sleep(1.0)
    late = []
    for cid in ids:
        c = await store.get(cid)
        breach = next((h for h in c.history if h.action == "sla_breached"), None)
        late.append(float(breach.detail["late_ms"]) if breach else float("inf"))
    return late


class Receiver:
    """The supervisors' webhook: records each POST (kind, case, delivery id); answers 503 while
    ``away``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str]] = []
        self.refused = 0
        self.away = False
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if self.away:
                    self.refused += 1
                    writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                else:
                    event = json.loads(body)
                    self.received.append((event["complaint_id"], event["kind"], headers.get("x-gateway-delivery", "")))
                    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def write_outage(r: aioredis.Redis, store: ComplaintStore, n: int, start_in: float, spread: float) -> list[str]:
    """``n`` complaints nobody answers: warnings due over ``spread`` s from ``start_in``, each
    deadline due 2 s after its warning."""
    return await write_complaints(r, store, n, start_in, spread, tag="out", day="20261125",
                                  deadline=lambda warn: Deadline(kind="first_response", due=warn + timedelta(seconds=2),
                                                                 warn_at=warn))


async def own_redis(rdir: Path) -> tuple[subprocess.Popen, str, aioredis.Redis]:
    """A redis-server of the benchmark's own (AOF, appendfsync always) in ``rdir``, up: the process,
    its URL and a client."""
    port = free_port()
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
    return server, url, r


async def outage_round(args: argparse.Namespace, tmp: Path, mode: str) -> dict:
    """One outage round (``mode``: listening, away, none) on a Redis of its own."""
    server, url, r = await own_redis(tmp / f"redis-outage-{mode}")
    store = ComplaintStore(PREFIX)
    store.bind(r)
    receiver = Receiver()
    hook_port = await receiver.start()
    toml = "[plugins.app]\nenabled = true\n"
    if mode != "none":
        toml += ('[plugins.notify_webhook]\nuse = "adapters.notify_webhook:NotifyWebhook"\n'
                 f'[plugins.notify_webhook.settings]\nurl = "http://127.0.0.1:{hook_port}/hook"\n')
    (tmp / f"plugins-{mode}.toml").write_text(toml)
    env = {**os.environ, "REDIS_URL": url, "GATEWAY_REDIS_PREFIX": PREFIX, "GATEWAY_PLUGINS_AUTOLOAD": "0",
           "GATEWAY_PLUGINS": str(tmp / f"plugins-{mode}.toml"), "GATEWAY_VAR_DIR": str(tmp / "var"),
           "GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_CATEGORISER": "keywords"}
    worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    own = 0  # commands this function sends while counting
    try:
        await asyncio.sleep(3.0)
        n = args.outage
        before_by = {k: int(v["calls"]) for k, v in (await r.info("commandstats")).items()}
        before = sum(before_by.values())
        cpu_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)
        started = time.monotonic()
        ids = await write_outage(r, store, n, 1.0, args.spread)
        own += 2 * n + 1
        receiver.away = mode == "away"
        if mode == "away":
            await asyncio.sleep(5.0)
            receiver.away = False
        await asyncio.sleep(max(0.0, 1.0 + args.spread + 2.5 - (time.monotonic() - started)))  # all are due
        while time.monotonic() - started < 300:
            own += 4
            waiting = (await r.zcard(store.keys.arq_queue) + await r.llen(store.keys.escalations)
                       + await r.zcard(store.keys.timers_inflight)
                       + await r.zcount(store.keys.timers, "-inf", int(time.time() * 1000)))
            heard = len({(c, k) for c, k, _ in receiver.received})
            if not waiting and (mode == "none" or heard >= 2 * n):
                break
            await asyncio.sleep(0.25)
        took = time.monotonic() - started
        cpu_worker, cpu_redis = (cpu_seconds(p) - b for p, b in zip((worker.pid, server.pid), cpu_before))
        after_by = {k: int(v["calls"]) for k, v in (await r.info("commandstats")).items()}
        total = sum(after_by.values()) - before - own
        by_command = sorted(((k.removeprefix("cmdstat_"), (v - before_by.get(k, 0)) / n) for k, v in after_by.items()),
                            key=lambda kv: -kv[1])
        by_case: dict[str, list[str]] = {}
        for cid, kind, _ in receiver.received:
            by_case.setdefault(cid, []).append(kind)
        in_order = sum(1 for kinds in by_case.values()
                       if "sla_warning" in kinds and "sla_breached" in kinds
                       and kinds.index("sla_warning") < kinds.index("sla_breached"))
        distinct = len({(c, k) for c, k, _ in receiver.received})
        row = {"mode": mode, "complaints": n, "commands_per_complaint": round(total / n, 1), "took_s": round(took, 1),
               "events_received": len(receiver.received), "distinct_events": distinct,
               "duplicates": len(receiver.received) - distinct, "refused_while_away": receiver.refused,
               "cases_in_order": in_order,
               "cpu_ms_per_complaint": {"worker": round(cpu_worker * 1000 / n, 3), "redis": round(cpu_redis * 1000 / n, 3)}}
        print(f"outage, webhook {mode}: {n} complaints, {row['commands_per_complaint']} Redis commands per complaint "
              f"(warning + breach + their events), {took:.1f} s; events received {len(receiver.received)} "
              f"({distinct} distinct of {2 * n if mode != 'none' else 0}, {row['duplicates']} repeated), "
              f"503s answered {receiver.refused}, cases with warning before breach {in_order}")
        print(f"{'':>9}  CPU per complaint (the worker's idle loop over {took:.1f} s included): worker "
              f"{cpu_worker * 1000 / n:.3f} ms, redis-server {cpu_redis * 1000 / n:.3f} ms")
        breaches = sum(1 for c in await store.get_many(ids) if any(h.action == "sla_breached" for h in c.history))
        row["breached"] = breaches
        print(f"{'':>9}  complaints breached {breaches} of {n}; per complaint by command (this bench's own "
              "polling included): " + ", ".join(f"{k} {v:.2f}" for k, v in by_command if v >= 0.05))
        return row
    finally:
        worker.terminate()
        worker.wait(10)
        if receiver.server is not None:
            receiver.server.close()
        await r.aclose()
        server.terminate()
        server.wait(10)


async def one_size(pending: int, args: argparse.Namespace, tmp: Path) -> dict:
    server, url, r = await own_redis(tmp / f"redis-{pending}")
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
               "GATEWAY_LOG_LEVEL": "WARNING", "GATEWAY_CATEGORISER": "keywords"}
        worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(2.0)  # the worker is up and idling
        idle = await idle_rate(r, 3.0)
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
        leads = {lead: await short_leads(r, store, lead, args.lead_probes) for lead in args.lead_list}
        row = {"pending": pending, "probes": args.probes, "p50_ms": round(statistics.median(late), 1) if late else None,
               "p99_ms": round(pct(late, 99), 1), "max_ms": round(max(late), 1) if late else None,
               "missed": missed, "fired_twice": twice, "bare_p50_ms": round(statistics.median(bare), 1),
               "bare_p99_ms": round(pct(bare, 99), 1), "timers_left": left, "idle_commands_per_s": round(idle, 1),
               "added_meanwhile": {lead: {"p50_ms": round(statistics.median(v), 1), "p99_ms": round(pct(v, 99), 1),
                                          "max_ms": round(max(v), 1)} for lead, v in leads.items()}}
        row["p99_ratio"] = round(row["p99_ms"] / max(row["bare_p99_ms"], 0.1), 2)
        print(f"{pending:>9,} pending: lateness p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms max {row['max_ms']} ms "
              f"| missed {missed} | fired twice {twice} | bare poller p50 {row['bare_p50_ms']} p99 "
              f"{row['bare_p99_ms']} ms | p99 ratio {row['p99_ratio']} (goal p99 <= 100 ms, flat)")
        print(f"{'':>9}  idle worker: {row['idle_commands_per_s']} Redis commands/s | added meanwhile, due "
              + "; ".join(f"{lead} ms after written: p50 {v['p50_ms']} p99 {v['p99_ms']} max {v['max_ms']} ms"
                          for lead, v in row["added_meanwhile"].items()))
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
        for pending in (int(p) for p in args.pending.split(",") if p):
            sub = Path(tmp) / str(pending)
            sub.mkdir()
            await one_size(pending, args, sub)
        if args.outage:
            for mode in args.outage_modes.split(","):
                sub = Path(tmp) / f"outage-{mode}"
                sub.mkdir()
                await outage_round(args, sub, mode)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pending", default="1000,10000,100000,1000000")
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=5.0, help="seconds over which the probes fall due")
    parser.add_argument("--leads", default="0,100,250", help="ms: timers added due this long after they are written")
    parser.add_argument("--lead-probes", type=int, default=40)
    parser.add_argument("--outage", type=int, default=1000, help="complaints in the outage rounds (0: none)")
    parser.add_argument("--outage-modes", default="listening,away,none")
    args = parser.parse_args()
    args.lead_list = [int(x) for x in args.leads.split(",") if x]
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
