"""Benchmark: a realistic mix of channels at rising rates — signed Twilio SMS, WhatsApp, Telegram,
WeChat (safe mode) and app messages — against the bare endpoint in the same run, with 1, 2 and
4 worker processes and 1 or 2 gateway processes. Reports, per configuration and rate:
acknowledgement p50 / p99, the backlog left when the sending stops, how long it takes to drain,
and the first rate at which the gateway stops keeping up; and Redis's own cost per message (CPU
from INFO cpu, commands from INFO commandstats), so one Redis core's capacity can be stated.

    .venv/bin/python bench/load.py [--configs 1x1,1x2,1x4,2x4] [--rates 20,40,...] [--seconds 10]

``GxW`` is G uvicorn gateway processes (each on its own port; the load is split evenly) and W
`python -m gateway worker` processes, one redis-server with AOF `appendfsync always`. Every
outbound reply (acknowledgements on Twilio, WhatsApp, Telegram, WeChat) goes to the local fake
provider sink (bench/provider_sink.py), which answers as the provider would, so no send fails and
no failed-send retry adds load. Rates rise until one falls behind (then the next configuration).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intake import APP_KEY, free_port, message_request, server_cmd, wait_http  # noqa: E402
from loadgen import LoadResult, open_loop  # noqa: E402
from stack import BENCH, Cluster  # noqa: E402
from webhooks import meta, telegram, twilio, wechat  # noqa: E402

MIX = [("app", 0.4), ("twilio_sms", 0.2), ("whatsapp", 0.2), ("telegram", 0.1), ("wechat", 0.1)]


def mixed(host: str, port: int, offset: int = 0):
    makers = {"app": message_request(port), "twilio_sms": twilio(host), "whatsapp": meta(host),
              "telegram": telegram(host), "wechat": wechat(host)}
    weights = [(name, int(share * 100)) for name, share in MIX]
    table = [name for name, w in weights for _ in range(w)]

    def make(i: int) -> bytes:
        i += offset  # each gateway's share of the load gets its own senders and ids
        return makers[table[i % len(table)]](i)

    return make


async def split_open_loop(ports: list[int], rate: float, seconds: float, offset: int) -> LoadResult:
    """One open loop per gateway process at rate / len(ports); results merged."""
    parts = await asyncio.gather(*(
        open_loop("127.0.0.1", port, mixed(f"127.0.0.1:{port}", port, offset + n * 10_000_000),
                  rate=rate / len(ports), seconds=seconds)
        for n, port in enumerate(ports)))
    merged = LoadResult(seconds=seconds)
    for p in parts:
        merged.sent += p.sent
        merged.ok += p.ok
        merged.errors += p.errors
        merged.retried += p.retried
        merged.latencies_ms += p.latencies_ms
        for k, v in p.statuses.items():
            merged.statuses[k] = merged.statuses.get(k, 0) + v
        for kind, v in p.error_kinds.items():
            merged.error_kinds[kind] = merged.error_kinds.get(kind, 0) + v
    return merged


def processed_messages(cluster: Cluster) -> int:
    """Messages taken by a worker so far (the metrics counter of process_message jobs)."""
    h = cluster.r().hgetall(cluster.prefix + "metrics")
    return sum(int(v) for k, v in h.items() if k.startswith(b"gateway_worker_jobs|") and b"process_message" in k
               and b"result=ok" in k)


def run_config(gateways: int, workers: int, args: argparse.Namespace, what_if: bool = False) -> dict:
    rows = []
    label = f"{gateways}x{workers}" + (" what-if shared SSL" if what_if else "")
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        cluster = Cluster(Path(tmp), gateways=gateways, workers=workers, fsync=args.fsync,
                          extra_env={"GATEWAY_CONTACT_RATE_PER_MINUTE": "0", "GATEWAY_CHANNEL_RATE_PER_SECOND": "0"},
                          worker_script="whatif_worker.py" if what_if else None)
        bare_port = free_port()
        bare = subprocess.Popen(server_cmd("uvicorn", "bare_app:app", bare_port), env=cluster.env, cwd=BENCH,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cluster.start()
        wait_http(f"http://127.0.0.1:{bare_port}/")
        try:
            asyncio.run(split_open_loop(cluster.gw_ports, 20, 2, offset=0))  # warm-up
            cluster.wait_drained()
            offset = 1_000_000
            for rate in args.rates:
                bare_res = asyncio.run(open_loop("127.0.0.1", bare_port, mixed(f"127.0.0.1:{bare_port}", bare_port),
                                                 rate=rate, seconds=args.seconds))
                cpu0, cmd0, done0 = cluster.redis_cpu(), cluster.commandstats(), processed_messages(cluster)
                pending0 = cluster.pending()
                started = time.monotonic()
                gw = asyncio.run(split_open_loop(cluster.gw_ports, rate, args.seconds, offset))
                offset += 1_000_000
                sending_s = time.monotonic() - started
                backlog_at_end = cluster.pending()
                done_while_sending = processed_messages(cluster) - done0
                drained = cluster.wait_drained(timeout=args.drain_timeout)
                drained_after = time.monotonic() - started - sending_s
                cpu1, cmd1, done1 = cluster.redis_cpu(), cluster.commandstats(), processed_messages(cluster)
                processed = max(1, done1 - done0)
                cpu = {k: cpu1[k] - cpu0.get(k, 0) for k in cpu1}
                calls = {k: cmd1[k] - cmd0.get(k, 0) for k in cmd1 if cmd1[k] - cmd0.get(k, 0) > 0}
                row = {
                    "gateways": gateways, "workers": workers, "what_if_shared_ssl": what_if, "rate": rate, "sent": gw.sent, "ok": gw.ok,
                    "errors": gw.errors, "statuses": gw.statuses,
                    "ack_p50_ms": round(gw.pct(50), 1), "ack_p99_ms": round(gw.pct(99), 1),
                    "bare_ack_p99_ms": round(bare_res.pct(99), 1),
                    "processed_while_sending_msg_s": round(done_while_sending / sending_s, 1),
                    "backlog_before": pending0, "backlog_at_end": backlog_at_end,
                    "drained": drained, "drained_after_s": round(max(0.0, drained_after), 1),
                    "processed": processed,
                    "redis_cpu_us_per_msg": round((cpu["used_cpu_user"] + cpu["used_cpu_sys"]) / processed * 1e6, 1),
                    "redis_user_cpu_us_per_msg": round(cpu["used_cpu_user"] / processed * 1e6, 1),
                    "redis_sys_cpu_us_per_msg": round(cpu["used_cpu_sys"] / processed * 1e6, 1),
                    "redis_evalsha_per_msg": round(calls.get("evalsha", 0) / processed, 2),
                    "redis_main_thread_cpu_us_per_msg": round(
                        (cpu.get("used_cpu_user_main_thread", 0) + cpu.get("used_cpu_sys_main_thread", 0))
                        / processed * 1e6, 1),
                    "redis_commands_per_msg": round(sum(calls.values()) / processed, 1),
                    "top_commands_per_msg": {k: round(v / processed, 2) for k, v in
                                             sorted(calls.items(), key=lambda kv: -kv[1])[:12]},
                }
                # keeping up: every request answered, the workers processed (nearly) what came in
                # while it came in, nothing much left over, ack p99 under a second
                row["keeps_up"] = (gw.ok == gw.sent and done_while_sending >= 0.95 * gw.ok and
                                   backlog_at_end <= max(rate / 4, 10) and drained and row["ack_p99_ms"] < 1000)
                print(f"  {label} {rate:6.0f}/s: {gw.ok}/{gw.sent} 2xx, ack p50 {row['ack_p50_ms']} "
                      f"p99 {row['ack_p99_ms']} ms (bare p99 {row['bare_ack_p99_ms']}) | processed "
                      f"{row['processed_while_sending_msg_s']} msg/s while sending, backlog at end {backlog_at_end}, "
                      f"drained {row['drained_after_s']} s later | Redis {row['redis_cpu_us_per_msg']} us CPU "
                      f"(user {row['redis_user_cpu_us_per_msg']}, sys {row['redis_sys_cpu_us_per_msg']}), "
                      f"{row['redis_commands_per_msg']} commands ({row['redis_evalsha_per_msg']} scripts) per message "
                      f"| {'keeps up' if row['keeps_up'] else 'FALLS BEHIND'}", flush=True)
                rows.append(row)
                if not row["keeps_up"]:
                    break
        finally:
            cluster.stop()
            bare.terminate()
            bare.wait(10)
    return {"gateways": gateways, "workers": workers, "what_if_shared_ssl": what_if, "rows": rows,
            "max_kept_up": max((x["rate"] for x in rows if x["keeps_up"]), default=0),
            "fell_behind_at": next((x["rate"] for x in rows if not x["keeps_up"]), None)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", default="1x1,1x2,1x4,2x4", help="GATEWAYSxWORKERS, comma-separated")
    parser.add_argument("--rates", default="10,20,40,60,80,120,160,240,320")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--drain-timeout", type=float, default=180)
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always",
                        help="the Redis's appendfsync (the Redis CPU per message includes its fsync work)")
    parser.add_argument("--what-if-shared-ssl", default="", metavar="CONFIGS",
                        help="also run these configurations with bench/whatif_worker.py (one SSL context per "
                             "worker process instead of one per outbound message): the proposed fix, measured")
    parser.add_argument("--json")
    args = parser.parse_args()
    args.rates = [float(x) for x in args.rates.split(",")]
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"mix: {', '.join(f'{n} {int(s * 100)}%' for n, s in MIX)}; app key {APP_KEY[:5]}…; replies to the "
          f"provider sink")
    results = []
    for config in args.configs.split(","):
        g, w = (int(x) for x in config.lower().split("x"))
        print(f"{g} gateway process(es), {w} worker process(es):", flush=True)
        results.append(run_config(g, w, args))
    for config in filter(None, args.what_if_shared_ssl.split(",")):
        g, w = (int(x) for x in config.lower().split("x"))
        print(f"{g} gateway process(es), {w} worker process(es), WHAT-IF one SSL context per process:", flush=True)
        results.append(run_config(g, w, args, what_if=True))
    print("\n== summary ==")
    for res in results:
        # Redis's cost per message, from the highest rate measured (the most messages, the least
        # share of the idle background polling)
        top = max(res["rows"], key=lambda x: x["processed"]) if res["rows"] else None
        cpu = top["redis_cpu_us_per_msg"] if top else float("nan")
        what_if = " (what-if shared SSL)" if res["what_if_shared_ssl"] else ""
        print(f"{res['gateways']} gateway(s) x {res['workers']} worker(s){what_if}: keeps up to {res['max_kept_up']:.0f}/s, "
              f"falls behind at {res['fell_behind_at']}/s; Redis {cpu} us CPU and {top['redis_commands_per_msg']} "
              f"commands per message at {top['rate']:.0f}/s -> one Redis core ~{1e6 / cpu:,.0f} msg/s (CPU bound "
              f"only)" if top else "no rows")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
