"""Benchmark: what an AOF rewrite does to `appendfsync always` writes, by Redis option (issue 21).

    .venv/bin/python bench/aof_options.py [--fill-mb 150] [--rate 400] [--seconds 12]

For each option set a fresh redis-server (AOF, appendfsync always, as gateway/embedded_redis.py)
is filled with --fill-mb of complaint-sized values, then a client writes at --rate per second
what one message writes (a transaction of a ~2.7 KB value, a sorted-set entry and a hash field,
like the intake and the commit) while a rewrite (BGREWRITEAOF) is started every 4 s. Printed:
write latency p50 / p99 / max over all writes and over the writes made while a rewrite ran, the
rewrites completed, and the fsyncs Redis delayed. The baseline is the same load with no rewrite.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.embedded_redis import server_options  # noqa: E402
from intake import free_port  # noqa: E402

OPTION_SETS = {
    "embedded (as shipped)": [],
    "no rewrites (baseline)": ["--auto-aof-rewrite-percentage", "0"],
    "aof-rewrite-incremental-fsync no": ["--aof-rewrite-incremental-fsync", "no"],
    "no-appendfsync-on-rewrite yes (not durable)": ["--no-appendfsync-on-rewrite", "yes"],
    "aof-use-rdb-preamble no": ["--aof-use-rdb-preamble", "no"],
}


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")


def start_redis_server(directory: str, options: list[str]) -> tuple[subprocess.Popen, redis.Redis]:
    """A redis-server on a free port with ``options``, its data in ``directory``, once it answers."""
    port = free_port()
    proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                             "127.0.0.1", "--dir", directory, *options], stdout=subprocess.DEVNULL)
    r = redis.Redis(port=port)
    for _ in range(200):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, r


def run(name: str, extra: list[str], args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-aof-") as tmp:
        proc, r = start_redis_server(tmp, [*server_options("always"), *extra])
        try:
            value = os.urandom(1350).hex().encode()[:2700]
            fill = int(args.fill_mb * 1e6 / 2800)
            pipe = r.pipeline(transaction=False)
            for i in range(fill):
                pipe.set(f"fill:{i}", value)
                if i % 1000 == 999:
                    pipe.execute()
            pipe.execute()
            while r.info("persistence")["aof_rewrite_in_progress"]:
                time.sleep(0.1)
            rewriting = threading.Event()
            stop = threading.Event()
            rewrites = 0

            def rewriter() -> None:
                nonlocal rewrites
                ctl = redis.Redis(port=r.connection_pool.connection_kwargs["port"])
                while not stop.wait(4 if "baseline" not in name else 3600):
                    try:
                        ctl.bgrewriteaof()
                    except redis.ResponseError:
                        continue
                    rewriting.set()
                    while ctl.info("persistence")["aof_rewrite_in_progress"] and not stop.is_set():
                        time.sleep(0.01)
                    rewriting.clear()
                    rewrites += 1

            thread = threading.Thread(target=rewriter, daemon=True)
            thread.start()
            all_ms, during_ms = [], []
            t0 = time.perf_counter()
            total = int(args.rate * args.seconds)
            for i in range(total):
                scheduled = t0 + i / args.rate
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                busy = rewriting.is_set()
                tx = r.pipeline(transaction=True)
                tx.set(f"c:{i}", value)
                tx.zadd("queue", {f"c:{i}": i})
                tx.hset(f"m:{i}", mapping={"status": "processed", "complaint_id": f"c:{i}"})
                tx.execute()
                ms = (time.perf_counter() - scheduled) * 1000
                all_ms.append(ms)
                if busy or rewriting.is_set():
                    during_ms.append(ms)
            stop.set()
            thread.join(10)
            info = r.info("persistence")
            row = {"options": name, "writes": len(all_ms), "p50": pct(all_ms, 50), "p99": pct(all_ms, 99),
                   "max": pct(all_ms, 100), "during_rewrite": len(during_ms), "during_p99": pct(during_ms, 99),
                   "during_max": pct(during_ms, 100), "rewrites": rewrites,
                   "delayed_fsync": info.get("aof_delayed_fsync")}
            print(f"{name:<45} all p50 {row['p50']:.2f} p99 {row['p99']:.1f} max {row['max']:.1f} ms | during "
                  f"{row['during_rewrite']} writes in {rewrites} rewrites: p99 {row['during_p99']:.1f} max "
                  f"{row['during_max']:.1f} ms | delayed fsyncs {row['delayed_fsync']}", flush=True)
            return row
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fill-mb", type=float, default=150)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--seconds", type=float, default=12)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    version = subprocess.run([shutil.which("redis-server") or "redis-server", "--version"], capture_output=True,
                             text=True).stdout.split()[2]
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Redis {version}, load "
          f"average {os.getloadavg()[0]:.2f}; fill {args.fill_mb:.0f} MB, {args.rate:.0f} writes/s for "
          f"{args.seconds:.0f} s")
    for _ in range(args.rounds):
        for name, extra in OPTION_SETS.items():
            run(name, extra, args)


if __name__ == "__main__":
    main()
