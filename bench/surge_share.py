"""Benchmark: the worker's share of a core in a surge (``GATEWAY_WORKER_SURGE_SHARE``), two
values alternated: what each gives the intake, and what it costs routing.

    .venv/bin/python bench/surge_share.py [--shares 0.2 0.3] [--pairs 3] [--seconds 10] [--burst N]

Each run starts its own stack as bench/intake.py does (a redis-server with the embedded Redis's
options, one gateway, one worker, the bare endpoint) with the worker at one share, warms it up,
then: wrk's closed loop (32 connections) on the bare endpoint, then on the gateway with the worker
running, then waits until the worker has routed the burst. The shares alternate run by run (the
machine's speed drifts from minute to minute), and each run prints:

- the gateway's requests a second over the bare endpoint's (the issue's intake ratio);
- the CPU of the gateway, the worker and Redis during the gateway's loop (part of a core);
- routing: seconds from the burst's start until every message it brought was processed (the
  burst's last complaint routed) and no job was due, and messages routed a second over that span.
  The burst's complaints, none answered by an agent, warn 48 s and breach 60 s after they came
  (the app's first response): a burst routed after that routes through that wave of timers too,
  as a real desk's would.

``--burst N``: the same burst for both shares, N messages (each of wrk's threads stops at its
half): the closed loop then takes in more messages at the share that leaves the gateway more CPU,
and routing's figures compare the same work. Printed instead of the ratio: how long the intake
took for the N (the first to the last message's arrival, the gateway's clock), and how long after
the burst's start its last complaint was routed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intake import Stack, wrk_closed_loop  # noqa: E402


def arrival_span(stack: Stack, since_ms: int) -> float:
    """Seconds from the first to the last arrival (``received_ms``) of the messages in the stack's
    Redis that arrived from ``since_ms`` on (the warm-up's came before)."""
    import redis

    r = redis.Redis.from_url(stack.redis_url)
    stamps = []
    keys = list(r.scan_iter(match=stack.prefix + "msg:*", count=5000))
    for start in range(0, len(keys), 5000):
        with r.pipeline(transaction=False) as pipe:
            for key in keys[start:start + 5000]:
                pipe.hget(key, "received_ms")
            stamps += [int(v) for v in pipe.execute() if v and int(v) >= since_ms]
    return (max(stamps) - min(stamps)) / 1000 if stamps else float("nan")


async def one_run(share: str, seconds: float, connections: int, burst: int = 0) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-share-") as tmp:
        env = {"GATEWAY_CHANNEL_RATE_PER_SECOND": "0", "GATEWAY_MAX_PENDING": "0", "GATEWAY_WORKER_SURGE_SHARE": share}
        stack = Stack("uvicorn", Path(tmp), "always", env)
        stack.start()
        try:
            await stack.warm_up()
            bare = await wrk_closed_loop(stack.bare_port, connections=connections, seconds=seconds)
            before, started, started_ms = stack.cpu(), time.monotonic(), int(time.time() * 1000)
            gw = await wrk_closed_loop(stack.gw_port, connections=connections, seconds=seconds, limit=burst)
            used = {name: (now - before[name]) / gw.seconds for name, now in stack.cpu().items()}
            stack.wait_drained(600)
            routed_in = time.monotonic() - started
            if burst:
                return {"intake_s": arrival_span(stack, started_ms), "p99": gw.pct(99), "messages": gw.ok,
                        "routed_in": routed_in}
            return {"ratio": gw.rate / bare.rate, "bare": bare.rate, "gateway": gw.rate, "p99": gw.pct(99),
                    **{f"cpu_{name}": part for name, part in used.items()},
                    "messages": gw.ok, "routed_in": routed_in, "routed_rate": gw.ok / routed_in}
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shares", nargs=2, default=["0.2", "0.3"], metavar="SHARE")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--burst", type=int, default=0, metavar="N",
                        help="the same N messages for both shares (wrk runs --seconds; make it long enough)")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; shares {args.shares[0]} and {args.shares[1]} alternated, {args.pairs} "
          f"runs each, {args.seconds:.0f} s closed loops of {args.connections} connections (wrk)", flush=True)
    runs: dict[str, list[dict[str, float]]] = {share: [] for share in args.shares}
    for _ in range(args.pairs):
        for share in args.shares:
            r = asyncio.run(one_run(share, args.seconds, args.connections, args.burst))
            runs[share].append(r)
            if args.burst:
                print(f"share {share}: {r['messages']:,} messages taken in over {r['intake_s']:.1f} s "
                      f"({r['messages'] / r['intake_s']:,.0f} a second), ack p99 {r['p99']:.1f} ms; the last routed "
                      f"{r['routed_in']:.1f} s after the burst began", flush=True)
                continue
            print(f"share {share}: bare {r['bare']:,.0f} req/s, gateway {r['gateway']:,.0f} req/s, "
                  f"ratio {r['ratio']:.2f}, ack p99 {r['p99']:.1f} ms; "
                  f"CPU gateway {r['cpu_gateway']:.2f} worker {r['cpu_worker']:.2f} "
                  f"redis {r['cpu_redis']:.2f}; the burst's {r['messages']:,} messages routed {r['routed_in']:.1f} s "
                  f"after it began ({r['routed_rate']:,.0f} a second)", flush=True)
    print("medians:")
    for share, rs in runs.items():
        med = {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        if args.burst:
            spans = " / ".join(f"{r['routed_in']:.1f}" for r in rs)
            print(f"  share {share}: intake {med['intake_s']:.1f} s, the last routed {med['routed_in']:.1f} s "
                  f"after the burst began ({spans})")
            continue
        each = " / ".join(f"{r['ratio']:.2f}" for r in rs)
        print(f"  share {share}: ratio {med['ratio']:.2f} ({each}), "
              f"worker {med['cpu_worker']:.2f} of a core, gateway {med['cpu_gateway']:.2f}; routed "
              f"{med['routed_rate']:,.0f} messages a second from the burst's start to its last")


if __name__ == "__main__":
    main()
