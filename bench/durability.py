"""What `appendfsync everysec` risks against `always`, and what `always` costs.

    .venv/bin/python bench/durability.py [--trials 8] [--rounds 2] [--quick]

Every phase runs both modes in the same run, on a redis-server of its own (AOF), one uvicorn
gateway process, mixed signed channel traffic (bench/traffic.py), replies to the fake provider
sink:

A. crash: redis-server SIGKILLed (no shutdown, no final write or fsync) at a random moment while
   acknowledged messages flow at --crash-rate, restarted from its AOF at once; every message
   the gateway answered 2xx is looked up afterwards (its idempotency key and its record).
   ``--trials`` kills per mode, one worker running.
B. cost: intake alone (no worker) closed loop (32 connections) and open loop at --rates;
   then a worker draining a backlog of app messages (the worker's commits wait for the fsync
   too). Modes alternate, ``--rounds`` times, each on a fresh Redis.
C. exposure: redis-server run under ``strace -f --seccomp-bpf`` (only write / fdatasync / fsync
   stop it) while messages flow; for every acknowledged message, the time from its 2xx until an
   fdatasync of the AOF that began after the last AOF write preceding the 2xx has returned — how
   long it existed only in the page cache, i.e. what an OS crash or power cut at that instant
   would lose. Also sampled:
   INFO persistence (aof_buffer_length: bytes not even written to the kernel yet,
   aof_pending_bio_fsync, aof_delayed_fsync, aof_last_write_status).

What a container cannot do is cut the power: the loss on an OS crash is computed from C's
observed exposure and B's measured rates, not observed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen import closed_loop  # noqa: E402
from stack import Cluster  # noqa: E402
from traffic import Traffic  # noqa: E402

NEW_ONLY = (("new", 1.0),)
ENV = {"GATEWAY_CONTACT_RATE_PER_MINUTE": "0", "GATEWAY_CHANNEL_RATE_PER_SECOND": "0", "GATEWAY_MAX_PENDING": "0"}


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")


def lookup(cluster: Cluster, sents: list) -> list:
    """The acknowledged requests whose message is not in Redis (idempotency key or record gone)."""
    r = cluster.r()
    pipe = r.pipeline(transaction=False)
    for s in sents:
        pipe.get(f"{cluster.prefix}idem:{s.scope}")
    ids = pipe.execute()
    pipe = r.pipeline(transaction=False)
    for v in ids:
        pipe.exists(f"{cluster.prefix}msg:{v.decode().split('|', 1)[0]}" if v else f"{cluster.prefix}-")
    present = pipe.execute()
    return [s for s, v, p in zip(sents, ids, present) if v is None or not p]


# -- A: crash -----------------------------------------------------------------------------------


def crash_trials(mode: str, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-dur-crash-{mode}-"))
    cluster = Cluster(tmp, gateways=1, workers=1, fsync=mode, extra_env=ENV)
    rows = []
    try:
        cluster.start()
        rng = random.Random(7)
        for trial in range(args.trials):
            traffic = Traffic(seed=100 + trial, kinds=NEW_ONLY)
            kill_after = rng.uniform(1.0, args.crash_seconds - 1.0)
            killed = {}

            def kill() -> None:
                time.sleep(kill_after)
                info = cluster.r().info("persistence")
                killed["at"] = time.time()
                cluster.kill_redis()
                killed["info_before"] = {k: info.get(k) for k in ("aof_buffer_length", "aof_pending_bio_fsync",
                                                                  "aof_delayed_fsync")}
                time.sleep(0.3)
                cluster.start_redis()
                killed["back"] = time.time()

            killer = threading.Thread(target=kill)
            killer.start()
            sents = asyncio.run(traffic.run(cluster.gw_ports, rate=args.crash_rate, count=int(
                args.crash_rate * args.crash_seconds), tries=1))
            killer.join()
            acked = [s for s in sents if s.ok]
            before = [s for s in acked if s.acked_at <= killed["at"]]
            missing = lookup(cluster, acked)
            missing_before = [s for s in missing if s.acked_at <= killed["at"]]
            # acknowledged in the last 50 ms before the kill: the ones everysec would lose first
            last_50ms = [s for s in before if killed["at"] - s.acked_at <= 0.05]
            row = {"trial": trial, "sent": len(sents), "acked": len(acked), "acked_before_kill": len(before),
                   "acked_in_last_50ms_before_kill": len(last_50ms), "missing": len(missing),
                   "missing_acked_before_kill": len(missing_before), "refused_or_failed": len(sents) - len(acked),
                   "redis_down_s": round(killed["back"] - killed["at"], 2), **killed["info_before"]}
            print(f"  [{mode}] trial {trial}: {len(before)} acknowledged before the kill "
                  f"({len(last_50ms)} in its last 50 ms), {len(missing)} missing after restart; "
                  f"{row['refused_or_failed']} not acknowledged while Redis was down", flush=True)
            rows.append(row)
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return {"mode": mode, "trials": rows, "acked_before_kill": sum(r["acked_before_kill"] for r in rows),
            "missing": sum(r["missing"] for r in rows)}


# -- B: cost ------------------------------------------------------------------------------------


def app_only(traffic: Traffic):
    """App messages, each from a new user (no repeats, no per-sender serialising)."""
    from traffic import Sender

    def make(i: int) -> bytes:
        return traffic._app(i, "new", Sender("app", i), f"我被重复扣款了 ¥{i % 900 + 10}.50，交易号 T2026{i:012d}，"
                            "请尽快退款").raw
    return make


def mixed(traffic: Traffic):
    def make(i: int) -> bytes:
        return traffic.plan(i).raw
    return make


def cost_round(mode: str, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-dur-cost-{mode}-"))
    cluster = Cluster(tmp, gateways=1, workers=0, fsync=mode, extra_env=ENV)
    out: dict = {"mode": mode}
    try:
        cluster.start()
        port = cluster.gw_ports[0]
        # the worker's side: a backlog of app messages, then one worker drains it
        traffic = Traffic(seed=5, kinds=NEW_ONLY)
        fill = asyncio.run(closed_loop("127.0.0.1", port, app_only(traffic), connections=16,
                                       seconds=args.fill_seconds))
        backlog = cluster.pending()
        started = time.monotonic()
        cluster.workers.append(cluster._worker())
        cluster.wait_drained(timeout=600)
        drain_s = time.monotonic() - started
        out["drain"] = {"messages": backlog, "seconds": round(drain_s, 2), "msg_s": round(backlog / drain_s, 1),
                        "fill_rate": round(fill.rate, 1)}
        for p in cluster.workers:
            p.terminate()
            p.wait(15)
        cluster.workers.clear()
        # intake alone
        traffic = Traffic(seed=6, kinds=NEW_ONLY)
        asyncio.run(closed_loop("127.0.0.1", port, mixed(traffic), connections=8, seconds=2))  # warm-up
        closed = asyncio.run(closed_loop("127.0.0.1", port, mixed(traffic), connections=32, seconds=args.seconds))
        out["closed_loop"] = {"req_s": round(closed.rate, 1), "p50_ms": round(closed.pct(50), 2),
                              "p99_ms": round(closed.pct(99), 2), "ok": closed.ok, "sent": closed.sent}
        out["open_loop"] = []
        for rate in args.rates:
            t = Traffic(seed=int(rate), kinds=NEW_ONLY)
            sents = asyncio.run(t.run(cluster.gw_ports, rate=rate, count=int(rate * args.seconds), tries=1))
            lat = [s.latency_ms for s in sents if s.ok]
            out["open_loop"].append({"rate": rate, "ok": len(lat), "sent": len(sents),
                                     "p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2),
                                     "max_ms": round(pct(lat, 100), 2)})
        info = cluster.r().info("persistence")
        out["redis"] = {k: info.get(k) for k in ("aof_delayed_fsync", "aof_rewrites", "aof_current_size",
                                                 "aof_last_write_status")}
    finally:
        cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    ol = " | ".join(f"{x['rate']:.0f}/s p50 {x['p50_ms']} p99 {x['p99_ms']} ms" for x in out["open_loop"])
    print(f"  [{mode}] worker drains {out['drain']['messages']} app messages at {out['drain']['msg_s']} msg/s; "
          f"intake closed loop {out['closed_loop']['req_s']} req/s (p99 {out['closed_loop']['p99_ms']} ms); "
          f"open loop {ol}", flush=True)
    return out


# -- C: exposure under strace -------------------------------------------------------------------

_LINE = re.compile(r"^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+)\s+(.*)$")
_CALL = re.compile(r"^(write|fdatasync|fsync)\((\d+)<([^>]*)>")
_DUR = re.compile(r"<(\d+\.\d+)>\s*$")
_RET = re.compile(r"=\s+(-?\d+)")


def _is_aof(fname: str) -> bool:
    """The append-only file itself (7.x: appendonlydir/*.incr.aof), not its manifest or a rewrite's
    temporary file."""
    return ".aof" in fname and "manifest" not in fname and "temp-" not in fname


def parse_strace(path: Path, day: datetime) -> tuple[list[tuple[float, int]], list[tuple[float, float]]]:
    """AOF writes (end time, bytes) and AOF fsyncs (start, end), in unix seconds."""
    base = datetime(day.year, day.month, day.day).timestamp()
    pending: dict[str, tuple[str, str, float]] = {}  # pid -> (call, file, start) for <unfinished ...>
    writes, syncs = [], []
    for line in path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        pid, hh, mm, ss, rest = m.groups()
        t = base + int(hh) * 3600 + int(mm) * 60 + float(ss)
        if rest.startswith("<..."):
            call = pending.pop(pid, None)
            if call is None:
                continue
            name, fname, start = call
            dur = _DUR.search(rest)
            end = start + float(dur.group(1)) if dur else t
            ret = _RET.search(rest)
            if _is_aof(fname):
                if name == "write" and ret:
                    writes.append((end, int(ret.group(1))))
                elif name in ("fdatasync", "fsync"):
                    syncs.append((start, end))
            continue
        c = _CALL.match(rest)
        if not c:
            continue
        name, _fd, fname = c.groups()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (name, fname, t)
            continue
        dur = _DUR.search(rest)
        end = t + float(dur.group(1)) if dur else t
        ret = _RET.search(rest)
        if not _is_aof(fname):
            continue
        if name == "write" and ret:
            writes.append((end, int(ret.group(1))))
        elif name in ("fdatasync", "fsync"):
            syncs.append((t, end))
    syncs.sort()
    writes.sort()
    return writes, syncs


def exposure(mode: str, args: argparse.Namespace) -> dict:
    strace = shutil.which("strace")
    if not strace:
        return {"mode": mode, "skipped": "strace not installed"}
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-dur-strace-{mode}-"))
    trace = tmp / "redis.strace"
    cluster = Cluster(tmp, gateways=1, workers=1, fsync=mode, extra_env=ENV)
    samples: list[dict] = []
    try:
        cluster.start(redis_wrap=[strace, "-f", "--seccomp-bpf", "-tt", "-T", "-y", "-s", "0",
                                  "-e", "trace=write,fdatasync,fsync", "-o", str(trace)])
        stop = threading.Event()

        def sample() -> None:
            r = cluster.r()
            while not stop.is_set():
                info = r.info("persistence")
                samples.append({"t": time.time(), **{k: info.get(k) for k in (
                    "aof_buffer_length", "aof_pending_bio_fsync", "aof_delayed_fsync", "aof_last_write_status")}})
                time.sleep(0.02)

        redis_pid = int(cluster.r().info("server")["process_id"])
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        traffic = Traffic(seed=9, kinds=NEW_ONLY)
        sents = asyncio.run(traffic.run(cluster.gw_ports, rate=args.exposure_rate,
                                        count=int(args.exposure_rate * args.seconds), tries=1))
        time.sleep(1.5)  # one more everysec fsync
        stop.set()
        sampler.join()
        aof_size = cluster.r().info("persistence").get("aof_current_size", 0)
        os.kill(redis_pid, 15)  # redis-server itself, not strace; strace exits with it
    finally:
        cluster.stop()
    writes, syncs = parse_strace(trace, datetime.now())
    starts = [s for s, _ in syncs]
    write_ends = [e for e, _ in writes]
    ok = sorted((s.acked_at, s.acked_at - s.latency_ms / 1000) for s in sents if s.ok)
    acked = [a for a, _ in ok]
    windows, lower = [], []
    for t, sent_at in ok:
        # The message's AOF write lies between its request's start and its 2xx. Upper bound: it
        # was the last AOF write before the 2xx; lower bound: the first one after the request
        # started. It is on disk once an fdatasync that began after that write has returned.
        # (With always, Redis replies only after that fdatasync: the lower bound is then 0 and the
        # upper bound is another request's write landing between the reply and our timestamp.)
        j = bisect.bisect_right(write_ends, t) - 1
        written = write_ends[j] if j >= 0 else t
        i = bisect.bisect_left(starts, written)
        windows.append(max(0.0, syncs[i][1] - t) if i < len(syncs) else float("inf"))
        j = bisect.bisect_left(write_ends, sent_at)
        first = min(write_ends[j] if j < len(write_ends) else t, written)
        i = bisect.bisect_left(starts, first)
        lower.append(max(0.0, syncs[i][1] - t) if i < len(syncs) else float("inf"))
    # acknowledged and not yet covered by a finished fdatasync, over time: the most at once
    def most_at_once(ws: list[float]) -> int:
        events = sorted([(t, 1) for t, w in zip(acked, ws) if w > 0] +
                        [(t + w, -1) for t, w in zip(acked, ws) if 0 < w != float("inf")])
        cur = top = 0
        for _, d in events:
            cur += d
            top = max(top, cur)
        return top

    worst, worst_lower = most_at_once(windows), most_at_once(lower)
    gaps = [b[0] - a[0] for a, b in zip(syncs, syncs[1:])]
    shutil.rmtree(tmp, ignore_errors=True)
    finite = [w for w in windows if w != float("inf")]
    finite_lower = [w for w in lower if w != float("inf")]
    res = {"mode": mode, "acked": len(acked), "aof_writes": len(writes), "aof_fsyncs": len(syncs),
           "aof_bytes_written": sum(n for _, n in writes), "aof_size_at_end": aof_size,
           "fsync_gap_p50_ms": round(pct(gaps, 50) * 1000, 1), "fsync_gap_max_ms": round(pct(gaps, 100) * 1000, 1),
           "fsync_duration_p50_ms": round(pct([e - s for s, e in syncs], 50) * 1000, 2),
           "fsync_duration_max_ms": round(pct([e - s for s, e in syncs], 100) * 1000, 2),
           "ack_to_fsynced_p50_ms": round(pct(finite, 50) * 1000, 1),
           "ack_to_fsynced_p99_ms": round(pct(finite, 99) * 1000, 1),
           "ack_to_fsynced_max_ms": round(pct(finite, 100) * 1000, 1),
           "max_acked_not_fsynced_at_once": worst,
           "lower_bound_ack_to_fsynced_p50_ms": round(pct(finite_lower, 50) * 1000, 1),
           "lower_bound_ack_to_fsynced_max_ms": round(pct(finite_lower, 100) * 1000, 1),
           "lower_bound_max_acked_not_fsynced_at_once": worst_lower,
           "info_samples": len(samples),
           "samples_with_unwritten_aof_buffer": sum(1 for s in samples if (s["aof_buffer_length"] or 0) > 0),
           "max_aof_buffer_length": max((s["aof_buffer_length"] or 0 for s in samples), default=0),
           "samples_with_bio_fsync_pending": sum(1 for s in samples if (s["aof_pending_bio_fsync"] or 0) > 0),
           "aof_delayed_fsync": samples[-1]["aof_delayed_fsync"] if samples else None,
           "aof_last_write_status": samples[-1]["aof_last_write_status"] if samples else None}
    print(f"  [{mode}] {res['acked']} acknowledged at {args.exposure_rate:.0f}/s under strace: "
          f"{res['aof_fsyncs']} AOF fdatasyncs (every p50 {res['fsync_gap_p50_ms']} ms, max "
          f"{res['fsync_gap_max_ms']} ms; each p50 {res['fsync_duration_p50_ms']} ms); acknowledged -> on disk "
          f"p50 {res['ack_to_fsynced_p50_ms']} p99 {res['ack_to_fsynced_p99_ms']} max {res['ack_to_fsynced_max_ms']} ms "
          f"(lower bound p50 {res['lower_bound_ack_to_fsynced_p50_ms']} max {res['lower_bound_ack_to_fsynced_max_ms']} ms); "
          f"acknowledged messages only in the page cache at once: at most {worst_lower}..{worst}; INFO: "
          f"{res['samples_with_unwritten_aof_buffer']}/{res['info_samples']} samples with an unwritten AOF buffer "
          f"(max {res['max_aof_buffer_length']} B), {res['samples_with_bio_fsync_pending']} with a background "
          f"fsync pending, aof_delayed_fsync {res['aof_delayed_fsync']}", flush=True)
    return res


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rates", default="200,500,1000")
    parser.add_argument("--crash-rate", type=float, default=300)
    parser.add_argument("--crash-seconds", type=float, default=4)
    parser.add_argument("--exposure-rate", type=float, default=300)
    parser.add_argument("--fill-seconds", type=float, default=3)
    parser.add_argument("--phases", default="crash,cost,exposure")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    args.rates = [float(x) for x in args.rates.split(",")]
    if args.quick:
        args.trials, args.rounds, args.seconds, args.rates = 2, 1, 3, [200.0]
    phases = set(args.phases.split(","))
    out: dict = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
                 "python": platform.python_version(),
                 "redis": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()}
    print(out["machine"], "Python", out["python"], "|", out["redis"], flush=True)
    if "crash" in phases:
        print(f"A. redis-server SIGKILLed while messages flow ({args.crash_rate:.0f}/s), {args.trials} trials per mode",
              flush=True)
        out["crash"] = [crash_trials(m, args) for m in ("always", "everysec")]
    if "cost" in phases:
        print(f"B. cost, {args.rounds} round(s), modes alternating, fresh Redis each", flush=True)
        out["cost"] = [cost_round(m, args) for _ in range(args.rounds) for m in ("always", "everysec")]
    if "exposure" in phases:
        print(f"C. exposure: redis-server under strace, {args.exposure_rate:.0f} msg/s for {args.seconds:.0f} s",
              flush=True)
        out["exposure"] = [exposure(m, args) for m in ("always", "everysec")]
    summary(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


def summary(out: dict) -> None:
    print("\n== summary ==")
    for c in out.get("crash", []):
        print(f"crash, {c['mode']:8s}: {c['missing']} of {c['acked_before_kill']} acknowledged-before-the-kill "
              f"messages missing after {len(c['trials'])} SIGKILLs of redis-server")
    by_mode: dict[str, list[dict]] = {}
    for r in out.get("cost", []):
        by_mode.setdefault(r["mode"], []).append(r)
    med = {}
    for mode, rs in by_mode.items():
        med[mode] = {"closed": sorted(x["closed_loop"]["req_s"] for x in rs)[len(rs) // 2],
                     "drain": sorted(x["drain"]["msg_s"] for x in rs)[len(rs) // 2]}
        for i, rate_row in enumerate(rs[0]["open_loop"]):
            p99s = sorted(x["open_loop"][i]["p99_ms"] for x in rs)
            p50s = sorted(x["open_loop"][i]["p50_ms"] for x in rs)
            med[mode][float(rate_row["rate"])] = (p50s[len(p50s) // 2], p99s[len(p99s) // 2])
        print(f"cost, {mode:8s}: intake {med[mode]['closed']} req/s closed loop; worker drain "
              f"{med[mode]['drain']} msg/s; ack " + ", ".join(
                  f"{k:.0f}/s p50 {v[0]} p99 {v[1]} ms" for k, v in med[mode].items() if isinstance(k, float)))
    if "always" in med and "everysec" in med:
        a, e = med["always"], med["everysec"]
        print(f"ratio everysec/always: intake throughput {e['closed'] / a['closed']:.2f}, worker drain "
              f"{e['drain'] / a['drain']:.2f}, " + ", ".join(
                  f"p99 at {k:.0f}/s {e[k][1] / max(a[k][1], 0.01):.2f}" for k in a if isinstance(k, float)))
        rate = e["closed"]
        print(f"computed, not observed: an OS crash or power cut loses what was acknowledged since the last "
              f"completed fdatasync: with everysec up to ~1 s of traffic (up to ~2 s when Redis postpones a write "
              f"behind a slow fsync) = up to {rate:.0f}-{2 * rate:.0f} acknowledged messages at this machine's "
              f"intake ceiling, or 1-2 s of whatever the offered rate is; with always: none")
    for x in out.get("exposure", []):
        if "skipped" not in x:
            print(f"observed exposure, {x['mode']:8s}: acknowledged -> fsynced max {x['lower_bound_ack_to_fsynced_max_ms']}"
                  f"..{x['ack_to_fsynced_max_ms']} ms; acknowledged messages only in the page cache at once, most: "
                  f"{x['lower_bound_max_acked_not_fsynced_at_once']}..{x['max_acked_not_fsynced_at_once']} "
                  f"(lower..upper bound)")


if __name__ == "__main__":
    main()
