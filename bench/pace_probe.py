"""What the worker's pace sees in a surge: the busiest gateway's load, as the worker reads it, and
the worker's surges and seconds rested, every quarter second of an open loop that starts behind a
backlog (router/pacing.py).

    .venv/bin/python bench/pace_probe.py [--backlog-seconds 5] [--rate 1000] [--seconds 10]

A redis-server with the embedded Redis's options, one gateway and one worker as `make run` starts
them (bench/stack.py); a closed loop of 32 connections for --backlog-seconds puts the worker
behind, then app messages come at --rate a second for --seconds. Printed: the backlog before and
after, the acknowledgement p99 of the open loop, and a line a quarter second: seconds since its
start, the gateways' load as the worker reads it (``Workers.intake_load``: the busiest unexpired
report, each made every half second), the worker's surges and seconds rested so far (its metrics
are written once a second). Use it to see whether a surge holds or ends and begins again with the
pace's thresholds (``BUSY``, ``CALM``) on a machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cost import app_requests, corpus_texts, long_deadlines  # noqa: E402
from intake import PACE_FIELDS  # noqa: E402
from loadgen import closed_loop, open_loop  # noqa: E402
from stack import Cluster  # noqa: E402

from router.store import ComplaintStore  # noqa: E402

EVERY_S = 0.25


async def sample(url: str, prefix: str, rows: list[tuple[float, float, float, float]], stop: asyncio.Event) -> None:
    r = aioredis.Redis.from_url(url)
    store = ComplaintStore(prefix, worker_wake=False)
    store.bind(r)
    started = time.monotonic()
    try:
        while not stop.is_set():
            load = await store.intake_load()  # (what the worker's pace reads)
            surges, rested = await r.hmget(store.keys.metrics, *PACE_FIELDS)
            rows.append((time.monotonic() - started, load, float(surges or 0), float(rested or 0)))
            await asyncio.sleep(EVERY_S)
    finally:
        await r.aclose()


async def main(args: argparse.Namespace) -> None:
    texts = corpus_texts()
    with tempfile.TemporaryDirectory(prefix="bench-pace-") as tmp:
        cluster = Cluster(Path(tmp), gateways=1, workers=1, fsync="always")
        cluster.start()
        try:
            long_deadlines(cluster)
            time.sleep(1)
            port = cluster.gw_ports[0]
            await closed_loop("127.0.0.1", port, app_requests(port, "b", texts), connections=32,
                              seconds=args.backlog_seconds)
            print(f"backlog before the open loop: {cluster.r().zcard(cluster.prefix + 'pending')} messages")
            rows: list[tuple[float, float, float, float]] = []
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample(cluster.redis_url, cluster.prefix, rows, stop))
            sent = await open_loop("127.0.0.1", port, app_requests(port, "o", texts), rate=args.rate,
                                   seconds=args.seconds)
            stop.set()
            await sampler
            print(f"open loop at {args.rate:.0f}/s for {args.seconds:.0f} s: ack p99 {sent.pct(99):.1f} ms; backlog "
                  f"after: {cluster.r().zcard(cluster.prefix + 'pending')} messages")
            print("  s      load   surges  rested s")
            for at, load, surges, rested in rows:
                print(f"  {at:5.2f}  {load:5.3f}  {surges:6.0f}  {rested:8.1f}")
        finally:
            cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
