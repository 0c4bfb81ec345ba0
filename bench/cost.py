"""Benchmark: what one message costs — Redis commands and CPU per process (issue 21).

    .venv/bin/python bench/cost.py [--messages 2000] [--rate 150] [--rounds 3] [--bare] [--against REV]

Each round starts its own stack as `make run` has it: a redis-server with the embedded Redis's
options (gateway/embedded_redis.py: AOF, appendfsync always), one uvicorn gateway process, one
`python -m gateway worker`, replies to the fake provider sink. It sends app messages, each from a
customer of its own, texts from the training corpus, open loop at --rate (below what one worker
keeps up with, so the figures are of the work, not of a backlog), and waits until every message
is a complaint in a skill queue with its acknowledgement recorded (then checks each one).

Per message, between a snapshot taken before the first request and one taken once all is done:

- Redis commands: ``INFO commandstats`` calls, by command (commands run inside a Lua script
  count, as Redis counts them; ``evalsha`` is the script call itself);
- CPU (user + system) of the gateway, the worker and redis-server, from /proc/<pid>/stat;
- bytes appended to the AOF (``aof_current_size``; rewrites during the round are reported).

The idle rates (commands and CPU per second with no traffic: heartbeats, timers, BLPOP wake-ups)
are measured before each round and printed apart; the per-message figures include them, as a
real desk pays them. CPU figures are noisy on a shared machine: the median of the rounds is
printed, commands per message are exact.

``--against REV``: a baseline in the same run — REV's gateway and worker (a git worktree of REV),
their rounds alternated with this checkout's, and this checkout's figures over REV's printed (the
machine's speed drifts from one minute to the next: alternation puts both through the same drift).

``--bare``: afterwards, the same requests at the same rate to bench/bare_app.py (a bare Litestar
endpoint, same server and flags): the CPU a request that the server and the framework cost alone,
the floor under the gateway's figure (which carries the gateway's idle share too: a few µs a
message at hundreds of messages a second).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intake import APP_KEY, free_port, server_cmd, wait_http  # noqa: E402
from loadgen import build_request, cpu_seconds, cpu_split, open_loop  # noqa: E402
from stack import Cluster  # noqa: E402

import msgspec  # noqa: E402

from router.store import decode_complaint  # noqa: E402
from router.store.codec import with_deliveries  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def corpus_texts(limit: int = 600) -> list[str]:
    """Customer texts from the training corpus (all three channels' styles): ``limit`` of them,
    the same every run, cycled."""
    texts = []
    for path in sorted((ROOT / "data" / "corpus").glob("train_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                texts.append(json.loads(line)["text"][:2000])
    texts.sort(key=lambda t: zlib.crc32(t.encode()))  # interleave the channels' styles, the same every run
    return texts[:limit]


def app_requests(port: int, tag: str, texts: list[str]):
    host = f"127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"}

    def make(i: int) -> bytes:
        body = json.dumps({"user_id": f"{tag}-{i}", "text": texts[i % len(texts)]}, ensure_ascii=False).encode()
        return build_request("POST", "/v1/messages", host, headers, body)

    return make


class Snapshot:
    def __init__(self, cluster: Cluster, pids: dict[str, int]) -> None:
        self.at = time.monotonic()
        split = {name: cpu_split(pid) for name, pid in pids.items()}
        self.cpu = {name: user + system for name, (user, system) in split.items()}
        #: of which the kernel's (system CPU: syscalls — sockets, the AOF's writes and fsyncs)
        self.sys = {name: system for name, (_, system) in split.items()}
        figures = cluster.command_figures()
        self.commands = {k: f["calls"] - OWN_COMMANDS.get(k, 0) for k, f in figures.items()}
        #: Redis's own time in each command, µs (a script's commands count in the script's figure too)
        self.usec = {k: f["usec"] for k, f in figures.items()}
        info = cluster.r().info("persistence")
        self.aof = int(info.get("aof_current_size", 0))
        self.rewrites = int(info.get("aof_rewrites", 0))
        stats = cluster.r().info("stats")
        #: bytes Redis read from and wrote to its clients (commands and their answers)
        self.net = (int(stats.get("total_net_input_bytes", 0)), int(stats.get("total_net_output_bytes", 0)))

    def minus(self, before: "Snapshot") -> dict:
        return {"seconds": self.at - before.at,
                "cpu": {k: self.cpu[k] - before.cpu[k] for k in self.cpu},
                "sys": {k: self.sys[k] - before.sys[k] for k in self.sys},
                "commands": {k: v - before.commands.get(k, 0) for k, v in self.commands.items()
                             if v - before.commands.get(k, 0)},
                "usec": {k: v - before.usec.get(k, 0) for k, v in self.usec.items() if v - before.usec.get(k, 0)},
                "aof_bytes": self.aof - before.aof, "rewrites": self.rewrites - before.rewrites,
                "net_bytes": (self.net[0] - before.net[0], self.net[1] - before.net[1])}


#: Commands this benchmark itself sends to Redis while a round is measured (subtracted).
OWN_COMMANDS: collections.Counter[str] = collections.Counter()


def settled(cluster: Cluster) -> bool:
    """No message waiting, no job due or running in arq's queue (a running job stays in it until
    it ends), nothing in the outbox."""
    r, p = cluster.r(), cluster.prefix
    OWN_COMMANDS.update(["zcard", "zcount", "zcard"])
    return not (r.zcard(p + "pending") or r.zcount(p + "arq:queue", "-inf", int(time.time() * 1000))
                or r.zcard(p + "outbox"))


def wait_settled(cluster: Cluster, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if settled(cluster):
            time.sleep(0.3)  # a job that just finished may still be counting itself
            if settled(cluster):
                return
        time.sleep(0.2)
    raise RuntimeError("the stack did not settle")


def long_deadlines(cluster: Cluster) -> None:
    """A deadline policy whose first-response allowance is an hour: no timer falls due during a
    round, so the figures are the messages' own path, however long a round takes on a loaded
    machine. (With the default 60 s every unanswered complaint also fires a warning at 48 s and
    a breach at 60 s, each a timer and an event job: one round fired them, another did not.)"""
    from router.deadlines import DeadlinePolicy
    from router.store.keys import Keys

    policy = DeadlinePolicy(first_response_seconds={"default": 3600, "phone": 3600, "twilio_voice": 3600})
    cluster.r().set(Keys(cluster.prefix).deadline_policy, msgspec.json.encode(policy))


def check_outcome(cluster: Cluster, bodies: list[bytes]) -> dict[str, int]:
    """Every acknowledged message: a complaint of its own, waiting in its skill queue, its
    acknowledgement recorded as delivered."""
    r, p = cluster.r(), cluster.prefix
    seen = {"complaints": 0, "in_queue": 0, "ack_recorded": 0}
    for body in bodies:
        mid = json.loads(body)["message_id"]
        cid = r.hget(f"{p}msg:{mid}", "complaint_id")
        if cid is None:
            continue
        # as the gateway reads it: the replies' delivery states (kept beside it) merged in
        complaint = with_deliveries(decode_complaint(r.get(f"{p}complaint:{cid.decode()}")),
                                    r.hgetall(f"{p}delivery:{cid.decode()}"))
        if complaint.messages[0].message_id != mid:
            continue
        seen["complaints"] += 1
        if complaint.skill and r.zscore(f"{p}queue:{complaint.skill}", cid) is not None:
            seen["in_queue"] += 1
        if any(a.kind == "ack" and a.delivery in ("sent", "delivered") for a in complaint.replies):
            seen["ack_recorded"] += 1
    return seen


async def one_round(args: argparse.Namespace, n: int, texts: list[str], root: Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        cluster = Cluster(Path(tmp), gateways=1, workers=1, fsync=args.fsync, root=root,
                          extra_env={"GATEWAY_CATEGORISER": args.categoriser} if args.categoriser else None)
        cluster.start()
        try:
            pids = {"gateway": cluster.gateways[0].pid, "worker": cluster.workers[0].pid,
                    "redis": int(cluster.r().info("server")["process_id"])}
            if args.deadlines == "long":
                long_deadlines(cluster)
                time.sleep(1)  # the worker's policy cache looks again within a second
            port = cluster.gw_ports[0]
            tag = f"c{os.getpid():x}r{n}"
            warm = await open_loop("127.0.0.1", port, app_requests(port, tag + "w", texts), rate=args.rate,
                                   seconds=min(2.0, args.messages / args.rate), keep_bodies=True)
            wait_settled(cluster)
            idle0 = Snapshot(cluster, pids)
            time.sleep(args.idle)
            before = Snapshot(cluster, pids)
            idle = before.minus(idle0)
            sent = await open_loop("127.0.0.1", port, app_requests(port, tag, texts), rate=args.rate,
                                   seconds=args.messages / args.rate, keep_bodies=True)
            wait_settled(cluster)
            after = Snapshot(cluster, pids)
            used = after.minus(before)
            outcome = check_outcome(cluster, sent.bodies)
            not_ok = {str(k): v for k, v in sent.statuses.items() if not 200 <= k < 300} | sent.error_kinds
            return {"sent": sent.sent, "acknowledged": sent.ok, "warm_up": warm.ok, "outcome": outcome, "not_ok": not_ok,
                    "used": used, "idle": idle, "ack_p50": sent.pct(50), "ack_p99": sent.pct(99)}
        finally:
            cluster.stop()


async def bare_round(args: argparse.Namespace, texts: list[str]) -> dict:
    """The same requests, at the same rate, to the bare Litestar endpoint (bench/bare_app.py: read
    the body, answer 202, no Redis) under the same server and flags: the server's and the
    framework's own CPU a request, the floor under the gateway's figure."""
    port = free_port()
    proc = subprocess.Popen(server_cmd("uvicorn", "bare_app:app", port), cwd=ROOT / "bench",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        tag = f"b{os.getpid():x}"
        await open_loop("127.0.0.1", port, app_requests(port, tag + "w", texts), rate=args.rate,
                        seconds=min(2.0, args.messages / args.rate))
        before = cpu_seconds(proc.pid)
        sent = await open_loop("127.0.0.1", port, app_requests(port, tag, texts), rate=args.rate,
                               seconds=args.messages / args.rate)
        used = cpu_seconds(proc.pid) - before
        return {"acknowledged": sent.ok, "cpu_ms": used * 1000 / max(1, sent.ok)}
    finally:
        proc.terminate()
        proc.wait()


def per_message(rnd: dict) -> dict:
    n = rnd["acknowledged"]
    used = rnd["used"]
    return {"commands": sum(used["commands"].values()) / n,
            "by_command": {k: v / n for k, v in used["commands"].items()},
            "usec_by_command": {k: v / n for k, v in used["usec"].items()},
            "cpu_ms": {k: v * 1000 / n for k, v in used["cpu"].items()},
            "sys_ms": {k: v * 1000 / n for k, v in used["sys"].items()},
            "aof_bytes": used["aof_bytes"] / n,
            "net_in": used["net_bytes"][0] / n, "net_out": used["net_bytes"][1] / n}


def report(rounds: list[dict]) -> dict:
    per = [per_message(r) for r in rounds]
    median = statistics.median
    commands = median(p["commands"] for p in per)
    cpu = {k: median(p["cpu_ms"][k] for p in per) for k in per[0]["cpu_ms"]}
    names = sorted({k for p in per for k in p["by_command"]}, key=lambda k: -median(
        p["by_command"].get(k, 0) for p in per))
    by_command = {k: round(median(p["by_command"].get(k, 0) for p in per), 2) for k in names}
    print(f"\nper message, median of {len(rounds)} rounds (each round's figures after the '|'):")
    print(f"| Redis commands per message (INFO commandstats) | {commands:.1f} | "
          + " / ".join(f"{p['commands']:.1f}" for p in per))
    print(f"| CPU per message: gateway / worker / redis-server | {cpu['gateway']:.2f} / {cpu['worker']:.2f} / "
          f"{cpu['redis']:.2f} ms = {sum(cpu.values()):.2f} ms | "
          + " ; ".join(" / ".join(f"{p['cpu_ms'][k]:.2f}" for k in ("gateway", "worker", "redis")) for p in per))
    sys_ms = {k: median(p["sys_ms"][k] for p in per) for k in per[0]["sys_ms"]}
    print("  of which system CPU (the kernel's, for the process): "
          + " / ".join(f"{sys_ms[k]:.2f}" for k in ("gateway", "worker", "redis")) + " ms")
    print(f"| AOF bytes per message | {median(p['aof_bytes'] for p in per):,.0f} | "
          + " / ".join(f"{p['aof_bytes']:,.0f}" for p in per)
          + f" (rewrites during the rounds: {[r['used']['rewrites'] for r in rounds]})")
    print(f"| Redis network bytes per message, in / out | {median(p['net_in'] for p in per):,.0f} / "
          f"{median(p['net_out'] for p in per):,.0f} | "
          + " ; ".join(f"{p['net_in']:,.0f} / {p['net_out']:,.0f}" for p in per))
    print("commands per message by command:", ", ".join(f"{k} {v}" for k, v in by_command.items() if v >= 0.05))
    usec = {k: median(p["usec_by_command"].get(k, 0) for p in per) for k in {k for p in per for k in p["usec_by_command"]}}
    print("Redis's time in commands, µs per message (INFO commandstats usec; evalsha holds its commands' time "
          "too):", ", ".join(f"{k} {v:.1f}" for k, v in sorted(usec.items(), key=lambda kv: -kv[1]) if v >= 0.5))
    for i, r in enumerate(rounds):
        idle = r["idle"]
        secs = idle["seconds"] or 1
        print(f"round {i + 1}: sent {r['sent']}, acknowledged {r['acknowledged']}"
              + (f" (not: {r['not_ok']})" if r.get("not_ok") else "") + f", outcome {r['outcome']}, "
              f"ack p50 {r['ack_p50']:.1f} p99 {r['ack_p99']:.1f} ms, took {r['used']['seconds']:.1f} s; idle: "
              f"{sum(idle['commands'].values()) / secs:.0f} commands/s, CPU "
              + " / ".join(f"{idle['cpu'][k] * 1000 / secs:.1f}" for k in ("gateway", "worker", "redis"))
              + " ms/s")
    return {"commands_per_msg": commands, "cpu_ms_per_msg": cpu, "by_command": by_command,
            "rounds": [per_message(r) | {"outcome": r["outcome"], "acknowledged": r["acknowledged"]}
                       for r in rounds]}


def over_the_others(rounds: list[dict], process: str) -> float:
    """The median over ``rounds`` (``per_message`` figures) of ``process``'s CPU over the other two's."""
    return statistics.median(r["cpu_ms"][process] / (sum(r["cpu_ms"].values()) - r["cpu_ms"][process])
                             for r in rounds)


def against(args: argparse.Namespace, texts: list[str]) -> dict:
    """``--against REV``: REV checked out in a worktree beside this checkout (the same virtualenv),
    rounds alternated — REV's first, then this checkout's — so that both meet the same moments of a
    noisy machine; each side's medians, then this checkout's figures over REV's. REV's gateway and
    worker run from its worktree (``Cluster(root=...)``); the load, the deadline policy and the
    outcome check are this checkout's, so REV must read what they write (revisions since the
    complaint codec of issue 21's start, b368ed5, do)."""
    with tempfile.TemporaryDirectory(prefix="bench-cost-against-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), args.against],
                       check=True)
        try:
            rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], check=True,
                                 capture_output=True, text=True).stdout.strip()
            base_rounds, rounds = [], []
            for i in range(args.rounds):
                base_rounds.append(asyncio.run(one_round(args, 2 * i, texts, root=tree)))
                rounds.append(asyncio.run(one_round(args, 2 * i + 1, texts)))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
    print(f"\n== baseline: {args.against} ({rev})")
    base = report(base_rounds)
    print("\n== this checkout")
    result = report(rounds)
    ratios = {"commands": result["commands_per_msg"] / base["commands_per_msg"],
              **{k: result["cpu_ms_per_msg"][k] / base["cpu_ms_per_msg"][k] for k in ("gateway", "worker", "redis")},
              "cpu": sum(result["cpu_ms_per_msg"].values()) / sum(base["cpu_ms_per_msg"].values())}
    print(f"\nthis checkout / {rev} (medians of {args.rounds} alternated rounds each): commands "
          f"{ratios['commands']:.2f}; CPU gateway {ratios['gateway']:.2f}, worker {ratios['worker']:.2f}, "
          f"redis-server {ratios['redis']:.2f}, all three {ratios['cpu']:.2f}")
    # The machine's speed moves by up to a third from one round to the next (a pure-Python loop timed
    # every 0.6 s here: 111-179 ms); a change to one process is read better against the other two
    # in the same round, which did the same work on the same moments of the machine
    shares = {k: over_the_others(result["rounds"], k) / over_the_others(base["rounds"], k)
              for k in ("gateway", "worker", "redis")}
    print("each process's CPU over the other two's in the same round, this checkout / " + rev + " (medians): "
          + ", ".join(f"{k} {v:.2f}" for k, v in shares.items()))
    ratios["over_the_others"] = shares
    return result | {"baseline": base | {"rev": args.against}, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=150, help="messages/s, open loop")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=3, help="seconds of idle measured before each round")
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--categoriser", choices=["model", "keywords"], default=None,
                        help="GATEWAY_CATEGORISER for the worker (default: the desk's default, the model)")
    parser.add_argument("--deadlines", choices=["long", "default"], default="long",
                        help="long: a first-response allowance of an hour, so no deadline timer fires in a round")
    parser.add_argument("--bare", action="store_true",
                        help="then the same requests to the bare Litestar endpoint: its CPU a request at the same rate")
    parser.add_argument("--against", metavar="REV",
                        help="a baseline in the same run: REV's gateway and worker (a git worktree of it), "
                             "their rounds alternated with this checkout's, and the ratios printed")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    texts = corpus_texts()
    if args.against:
        result = against(args, texts)
    else:
        rounds = [asyncio.run(one_round(args, i, texts)) for i in range(args.rounds)]
        result = report(rounds)
    if args.bare:
        bare = asyncio.run(bare_round(args, texts))
        gateway = result["cpu_ms_per_msg"]["gateway"]
        print(f"bare Litestar endpoint, same requests and rate: {bare['cpu_ms']:.3f} ms CPU a request "
              f"({bare['acknowledged']} answered); the gateway's {gateway:.2f} ms less it: "
              f"{gateway - bare['cpu_ms']:.2f} ms of intake work a message")
        result["bare_cpu_ms_per_request"] = bare["cpu_ms"]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
