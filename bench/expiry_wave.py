"""Benchmark: how long one write waits while a wave of keys expires, at Redis's default ``hz``
against the embedded Redis's options (gateway/embedded_redis.py ``server_options``).

    .venv/bin/python bench/expiry_wave.py [--keys 500000] [--rounds 2] [--seconds 8]

Each message leaves several keys with a time to live (its sender's per-minute rate count, its
idempotency record, arq's job keys), so a surge's keys expire together a minute later. Redis
removes expired keys in a cycle run ``hz`` times a second, each run allowed a quarter of the time
to the next: at the default 10 a run may hold every command up for 25 ms.

Per round, a redis-server with the embedded Redis's options (AOF, ``appendfsync always``), once
with ``--hz 10`` (Redis's default) and once as ``server_options`` has it, alternated: its idle CPU
for 5 s, then ``--keys`` keys written with a 3-s time to live, then for ``--seconds`` one ``SET``
a millisecond (fsynced, as an intake's write is), each one's latency recorded. Printed: the
latencies' p50 / p99 / p99.9 / max per round, the idle CPU, and the embedded options' figures
over the default's (medians of the rounds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aof_options import pct, start_redis_server  # noqa: E402
from loadgen import cpu_seconds  # noqa: E402

from gateway.embedded_redis import SERVER_HZ, server_options  # noqa: E402


def one_round(options: list[str], keys: int, seconds: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-expiry-") as tmp:
        proc, r = start_redis_server(tmp, options)
        try:
            before = cpu_seconds(proc.pid)
            time.sleep(5)
            idle_ms_s = (cpu_seconds(proc.pid) - before) / 5 * 1000
            pipe = r.pipeline(transaction=False)
            for i in range(keys):
                pipe.set(f"rate:contact:user{i}:1", "1", ex=3)
                if i % 5000 == 4999:
                    pipe.execute()
            pipe.execute()
            waits = []
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                started = time.perf_counter()
                r.set("probe", "1")
                waits.append((time.perf_counter() - started) * 1000)
                time.sleep(0.001)
            left = r.dbsize() - 1
        finally:
            proc.terminate()
            proc.wait(10)
    return {"p50": pct(waits, 50), "p99": pct(waits, 99), "p99.9": pct(waits, 99.9), "max": max(waits),
            "idle_ms_s": idle_ms_s, "left": left}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    embedded = server_options("always")
    kinds = {"default": ("10", [*embedded, "--hz", "10"]),  # (a later option wins: Redis's default)
             "embedded": (SERVER_HZ, embedded)}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in kinds}
    for n in range(args.rounds):
        for name, (hz, options) in kinds.items():
            got = one_round(options, args.keys, args.seconds)
            runs[name].append(got)
            print(f"round {n + 1}, hz {hz} ({name}): {args.keys:,} keys expiring; "
                  f"a fsynced SET waited p50 {got['p50']:.2f} p99 {got['p99']:.2f} p99.9 {got['p99.9']:.2f} "
                  f"max {got['max']:.1f} ms; idle CPU {got['idle_ms_s']:.1f} ms/s; keys left {got['left']}")
    medians = {name: {k: statistics.median(x[k] for x in got) for k in got[0]} for name, got in runs.items()}
    print(f"embedded options (hz {SERVER_HZ}) / default (hz 10), medians of {args.rounds} rounds: " + ", ".join(
        f"{k} {medians['embedded'][k] / medians['default'][k]:.2f}"
        for k in ("p50", "p99", "p99.9", "max", "idle_ms_s")))

if __name__ == "__main__":
    main()
