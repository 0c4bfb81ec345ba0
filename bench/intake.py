"""Benchmark: POST /v1/messages as `make run` serves it, against a bare Litestar endpoint that
answers 202 without touching Redis, same server and settings, same run.

    .venv/bin/python bench/intake.py [--server uvicorn|granian|both] [--quick] [--no-queue] [--pairs 3]
                                     [--channel-budget N] [--max-pending N] [--open-loops N]
    .venv/bin/python bench/intake.py --only-queue [--fill-mb N] [--rewrite-at S]

Prints closed-loop throughput of both and their ratio, open-loop latency at --rate req/s,
with what held Redis up for 3 ms or more during each open loop (its latency monitor: a fork for an
AOF rewrite, a slow fsync, a long script, an expiry run; --open-loops N runs the gateway's N times),
and ingress → in-skill-queue latency at --queue-rate msg/s with the worker running. The ratio with
the worker running is the median of --pairs pairs (a bare loop, then the gateway's), the backlog
drained before each: on a machine whose speed drifts from minute to minute one pair's ratio moved
from 0.39 to 0.50 in half an hour with the same code.
Redis is a redis-server started here with the embedded one's options (AOF, appendfsync always).
The gateway runs without the channel budget and the backlog limit unless --channel-budget /
--max-pending set them: with the default budget (2,000 a second per channel) the closed loop
measures the budget, every request beyond it answered 429.

``--only-queue --fill-mb 400 --rewrite-at 10``: the ingress -> queue phase alone, on a Redis that
holds 400 MB of other keys (as a desk's holds its history), with an AOF rewrite of all of it 10 s
in: what a rewrite costs the latency, at a moment known in advance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen import LoadResult, build_request, closed_loop, cpu_seconds, open_loop  # noqa: E402

import msgspec  # noqa: E402

from gateway.embedded_redis import server_options  # noqa: E402
from gateway.settings import load_settings  # noqa: E402
from router.metrics import counter_field  # noqa: E402
from router.store import Keys, decode_complaint  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: The app's first-response allowance (router/deadlines.py's default, 60 s) and a margin: the
#: warnings and breaches of a loop's complaints fall due within this of the loop's end.
FIRST_RESPONSE_MS = 61_000
#: The worker's pace in its metrics hash: surges begun, seconds rested (router/pacing.py).
PACE_FIELDS = (counter_field("gateway_worker_surges"), counter_field("gateway_worker_rested_seconds"))
APP_KEY = "bench-app-key-0001"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def server_cmd(server: str, target: str, port: int) -> list[str]:
    if server == "granian":
        return [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1", "--no-access-log", "--loop", "uvloop", target]
    return [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port), "--loop", "uvloop",
            "--http", "httptools", "--no-access-log", "--log-level", "warning", "--workers", "1"]


class Stack:
    def __init__(self, server: str, tmp: Path, fsync: str = "always", extra_env: dict[str, str] | None = None) -> None:
        self.server, self.tmp, self.fsync = server, tmp, fsync
        self.extra_env = extra_env or {}
        self.procs: list[subprocess.Popen] = []
        self.redis_port = free_port()
        self.gw_port = free_port()
        self.bare_port = free_port()
        self.prefix = "bench:"

    def start(self) -> None:
        rdir = self.tmp / "redis"
        rdir.mkdir(exist_ok=True)
        self.procs.append(subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
             "--dir", str(rdir), *server_options(self.fsync)],
            stdout=subprocess.DEVNULL))
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        for _ in range(100):
            try:
                redis.Redis.from_url(self.redis_url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        env = {**os.environ, "REDIS_URL": self.redis_url, "GATEWAY_REDIS_PREFIX": self.prefix,
               "GATEWAY_APP_KEYS": f"app:{APP_KEY}", "GATEWAY_AGENT_TOKENS": "a:bench-agent-01",
               "GATEWAY_VAR_DIR": str(self.tmp / "var"), "GATEWAY_PLUGINS": str(ROOT / "plugins.toml"),
               "GATEWAY_LOG_LEVEL": "WARNING",
               "PAYMENT_RECORDS_DEMO": "false",  # no payment-records system in the benchmark (see bench/stack.py)
               **self.extra_env}
        log = open(self.tmp / "processes.log", "ab")
        self.procs.append(subprocess.Popen(server_cmd(self.server, "gateway.asgi:app", self.gw_port), env=env, cwd=ROOT,
                                           stdout=log, stderr=log))
        self.procs.append(subprocess.Popen(server_cmd(self.server, "bare_app:app", self.bare_port), env=env,
                                           cwd=ROOT / "bench", stdout=log, stderr=log))
        self.worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                                       stdout=log, stderr=log)
        self.procs.append(self.worker)
        wait_http(f"http://127.0.0.1:{self.gw_port}/health")
        wait_http(f"http://127.0.0.1:{self.bare_port}/")
        self.wait_worker()

    def wait_worker(self, timeout: float = 180) -> None:
        """Until the worker's start-up heartbeat (it loads, or first trains, its model): a phase
        begun before measured the start-up as queueing (p50 2.2 s at 150 msg/s once)."""
        r = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + timeout
        while not r.zcard(self.prefix + "workers"):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

    def pending(self) -> int:
        """Messages not yet processed, plus jobs due in arq's queue (the incident checks, replies
        and events the processed messages queued): a phase that starts before these are done
        measures the previous phase's backlog (the queue phase once showed p50 48 s for that)."""
        r = redis.Redis.from_url(self.redis_url)
        return r.zcard(self.prefix + "pending") + r.zcount(self.prefix + "arq:queue", "-inf", int(time.time() * 1000))

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system, all threads) so far of the gateway, the worker and Redis."""
        procs = {"gateway": self.procs[1], "worker": self.worker, "redis": self.procs[0]}
        return {name: cpu_seconds(proc.pid) for name, proc in procs.items()}

    def rests(self) -> tuple[float, float]:
        """The worker's surges and seconds rested so far (router/pacing.py; its metrics are written
        once a second)."""
        surges, rested = redis.Redis.from_url(self.redis_url).hmget(self.prefix + "metrics", *PACE_FIELDS)
        return float(surges or 0), float(rested or 0)

    def rested_since(self, before: tuple[float, float]) -> str:
        time.sleep(1.2)  # (the worker's last counts written)
        surges, rested = (now - then for now, then in zip(self.rests(), before))
        return f"  the worker's pace: {surges:.0f} surge(s), {rested:.1f} s rested"

    def wait_timers(self, until_ms: int, timeout: float = 180) -> None:
        """Until every deadline timer due before ``until_ms`` has fired (none left in the timers'
        set or in flight), then until drained: a closed loop's complaints, none answered by an
        agent, warn 48 s and breach 60 s after they came (the app's first response), a wave of
        work a later loop would otherwise measure."""
        r, keys = redis.Redis.from_url(self.redis_url), Keys(self.prefix)
        deadline = time.monotonic() + timeout
        while ((r.zcount(keys.timers, "-inf", until_ms) or r.zcard(keys.timers_inflight))
               and time.monotonic() < deadline):
            time.sleep(0.5)
        self.wait_drained()

    async def warm_up(self) -> None:
        """A few seconds of messages to the gateway and the bare endpoint, then drained: the first
        requests of a process pay its imports and caches."""
        await closed_loop("127.0.0.1", self.gw_port, message_request(self.gw_port), connections=8, seconds=2)
        await closed_loop("127.0.0.1", self.bare_port, message_request(self.bare_port), connections=8, seconds=2)
        self.wait_drained()

    def wait_drained(self, timeout: float = 120) -> None:
        """Until nothing waits (see ``pending``), at most ``timeout`` s: deadline timers of the
        earlier phases' complaints keep queueing events, so the queue need not empty; what is left
        is printed, since a phase that starts behind a backlog measures it too."""
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.5)
        left = self.pending()
        if left:
            r = redis.Redis.from_url(self.redis_url)
            due = r.zrangebyscore(self.prefix + "arq:queue", "-inf", int(time.time() * 1000))
            kinds: dict[str, int] = {}
            for job in due:
                kind = job.decode().removeprefix(self.prefix).split(":")[0]
                kinds[kind] = kinds.get(kind, 0) + 1
            print(f"  (not drained after {timeout:.0f} s: {left} waiting; due jobs by kind {kinds})")


_phases = iter(range(1, 1_000_000))
TEXTS = ["我被重复扣款了 ¥128.50，交易号 T2026112212345678，请尽快退款",
         "I was charged twice for my coffee, $4.50, please refund",
         "app闪退打不开，更新以后无法使用", "提现手续费太高了，要求减免"]


def message_request(port: int, tag: str | None = None):
    """App messages, each from a customer of its own: user ids ``<tag>-<i>``, the tag new for every
    call (a run nonce and a phase number), so no phase's message is a repeat or a follow-up of
    an earlier phase's case (that made the queue phase compare a message's arrival with the
    routing of an older complaint it was merged into: latencies of minus minutes)."""
    host = f"127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"}
    tag = tag or f"b{os.getpid():x}{int(time.time()) % 100_000:05d}p{next(_phases)}"

    def make(i: int) -> bytes:
        body = json.dumps({"user_id": f"{tag}-{i}", "text": TEXTS[i % len(TEXTS)]}, ensure_ascii=False).encode()
        return build_request("POST", "/v1/messages", host, headers, body)

    return make


#: wrk's script: app messages as ``message_request`` builds them (each from a customer of its own),
#: and its figures on one line: requests, seconds, non-2xx, socket errors, then 1,000 latency
#: quantiles in microseconds.
WRK_LUA = """
local tag, counter = os.getenv("BENCH_TAG"), 0
local texts = {%(texts)s}
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer %(key)s"
wrk.headers["Content-Type"] = "application/json"
function setup(thread) thread:set("tid", tostring(thread.addr) .. tostring(math.random(1, 1e9))) end
request = function()
  counter = counter + 1
  local body = '{"user_id": "' .. tag .. tid .. '-' .. counter .. '", "text": "' .. texts[counter %% #texts + 1] .. '"}'
  return wrk.format(nil, "/v1/messages", nil, body)
end
function done(summary, latency, requests)
  local e = summary.errors
  local q = {}
  for i = 1, 1000 do q[i] = string.format("%%d", latency:percentile(i / 10)) end
  io.write(string.format("WRK %%d %%.3f %%d %%d ", summary.requests, summary.duration / 1e6, e.status,
                         e.connect + e.read + e.write + e.timeout) .. table.concat(q, ",") .. "\\n")
end
"""


#: With a limit: each of wrk's two threads stops once it had half of the limit's answers.
WRK_LIMIT_LUA = """
local answered = 0
function response(status, headers, body)
  answered = answered + 1
  if answered >= %(per_thread)d then wrk.thread:stop() end
end
"""


async def wrk_closed_loop(port: int, *, connections: int, seconds: float, limit: int = 0) -> LoadResult:
    """The closed loop run by wrk (as the issue measures it: a load generator in C that takes a
    few per cent of a core, where ours in Python takes a quarter of one on the same two cores).
    With ``limit``, about that many requests (each thread stops at its half; wrk itself still
    exits after ``seconds``, and its figures' seconds are those)."""
    texts = ", ".join(json.dumps(json.dumps(t, ensure_ascii=False)[1:-1], ensure_ascii=False) for t in TEXTS)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA % {"texts": texts, "key": APP_KEY})
        if limit:
            f.write(WRK_LIMIT_LUA % {"per_thread": (limit + 1) // 2})
    try:
        proc = await asyncio.create_subprocess_exec(
            "wrk", "-t2", f"-c{connections}", f"-d{seconds:.0f}s", "-s", f.name, f"http://127.0.0.1:{port}/v1/messages",
            stdout=asyncio.subprocess.PIPE, env={**os.environ, "BENCH_TAG": f"w{os.getpid():x}{next(_phases)}t{time.time_ns() % 10**9}"})
        out, _ = await proc.communicate()
    finally:
        os.unlink(f.name)
    line = next(ln for ln in out.decode().splitlines() if ln.startswith("WRK "))
    _, requests, secs, non2xx, errors, quantiles = line.split(" ")
    result = LoadResult(sent=int(requests), seconds=float(secs))
    result.ok = int(requests) - int(non2xx)
    result.statuses = {"2xx": result.ok, **({"other": int(non2xx)} if int(non2xx) else {})}  # type: ignore[dict-item]
    if int(errors):
        result.error_kinds["socket"] = int(errors)
        result.errors = int(errors)
    result.latencies_ms = [int(v) / 1000 for v in quantiles.split(",")]
    return result


def pause_worker(stack: Stack, paused: bool) -> None:
    """SIGSTOP / SIGCONT: measure intake alone, the worker catching up afterwards."""
    import signal

    stack.worker.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)


async def throughput(stack: Stack, seconds: float, connections: int, client: str = "python") -> tuple:
    async def closed(port: int) -> LoadResult:
        if client == "wrk":
            return await wrk_closed_loop(port, connections=connections, seconds=seconds)
        return await closed_loop("127.0.0.1", port, message_request(port), connections=connections, seconds=seconds)

    bare = await closed(stack.bare_port)
    before = stack.cpu()
    gw = await closed(stack.gw_port)
    used = {name: (now - before[name]) / gw.seconds for name, now in stack.cpu().items()}
    print("  CPU during the gateway's closed loop, part of a core: "
          + ", ".join(f"{name} {part:.2f}" for name, part in used.items()))
    return bare, gw


def ingress_to_queue(stack: Stack, bodies: list[bytes]) -> tuple[list[float], dict[str, int], list[int]]:
    """For every acknowledged message that opened a complaint of its own: the time from its
    arrival (``received_ms``, the gateway's clock) to its complaint's routing into a skill queue
    (the ``routed`` history event, the worker's clock; the same machine, the same wall clock).
    A message that joined another complaint (a repeat, a follow-up) has no routing of its own:
    counted apart, never paired with the other complaint's stamp. The third list is each
    latency's arrival (ms)."""
    from datetime import datetime

    r = redis.Redis.from_url(stack.redis_url)
    latencies: list[float] = []
    arrivals: list[int] = []
    other = {"not processed": 0, "joined another complaint": 0, "not routed": 0}
    for body in bodies:
        mid = json.loads(body)["message_id"]
        received_ms, cid = r.hmget(f"{stack.prefix}msg:{mid}", "received_ms", "complaint_id")
        if cid is None or received_ms is None:
            other["not processed"] += 1
            continue
        complaint = msgspec.to_builtins(decode_complaint(r.get(f"{stack.prefix}complaint:{cid.decode()}")))
        if not complaint["messages"] or complaint["messages"][0]["message_id"] != mid:
            other["joined another complaint"] += 1
            continue
        routed = next((h for h in complaint["history"] if h["action"] == "routed"), None)
        if routed is None:
            other["not routed"] += 1
            continue
        queued_ms = datetime.fromisoformat(routed["at"].replace("Z", "+00:00")).timestamp() * 1000
        latencies.append(queued_ms - int(received_ms))
        arrivals.append(int(received_ms))
    return latencies, other, arrivals


def by_window(latencies: list[float], arrivals: list[int], seconds: float = 10) -> str:
    """p50 / p99 / max of the latencies of the messages that arrived in each ``seconds`` of the
    phase: a tail spread over the phase, or one stretch of it (a rewrite, timers falling due)."""
    if not arrivals:
        return ""
    start = min(arrivals)
    windows: dict[int, list[float]] = {}
    for lat, at in zip(latencies, arrivals):
        windows.setdefault(int((at - start) / 1000 // seconds), []).append(lat)
    return "; ".join(f"{w * seconds:.0f}-{(w + 1) * seconds:.0f} s: {pct(v, 50):.0f} / {pct(v, 99):.0f} / "
                     f"{pct(v, 100):.0f}" for w, v in sorted(windows.items()))


def pct(data: list[float], q: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(q / 100 * len(data)))] if data else float("nan")


def redis_persistence(stack: Stack) -> dict:
    info = redis.Redis.from_url(stack.redis_url).info()
    return {k: info.get(k) for k in ("aof_rewrites", "latest_fork_usec", "aof_current_size", "used_memory_human",
                                     "aof_delayed_fsync")}


def fill(stack: Stack, megabytes: int) -> None:
    """``megabytes`` of other keys (300-byte values) in the benchmark's Redis, then an AOF rewrite
    waited for: a desk's Redis holds its history, and a rewrite copies all of it."""
    r = redis.Redis.from_url(stack.redis_url)
    value = os.urandom(300)  # (as compressed complaints are: nothing for the rewrite's LZF to shrink)
    keys = megabytes * 1_000_000 // 360
    for start in range(0, keys, 10_000):
        with r.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + 10_000, keys)):
                pipe.set(f"fill:{n}", value)
            pipe.execute()
    compact(stack)  # (after the fill's own automatic one, if any)


def compact(stack: Stack) -> None:
    """An AOF rewrite, waited for, before a closed-loop pair: Redis rewrites its AOF by itself once
    it has doubled, and a pair's ~80,000 messages on top of the earlier pairs' cross that within
    a loop (the third of three, once: ratio 0.27, the worker at full speed since it does not rest
    while Redis writes in a forked child). A rewrite is measured on purpose with --rewrite-at."""
    r = redis.Redis.from_url(stack.redis_url)
    wait_for_rewrite(r)
    r.bgrewriteaof()
    time.sleep(0.2)
    wait_for_rewrite(r)


def wait_for_rewrite(r: redis.Redis) -> None:
    while r.info("persistence")["aof_rewrite_in_progress"]:
        time.sleep(0.1)


async def rewrite_later(stack: Stack, seconds: float) -> None:
    """An AOF rewrite ``seconds`` into the phase (Redis's own comes when the AOF has doubled), at
    a known moment: the by-arrival windows then show what it costs. (An asyncio client: it shares
    the load generator's event loop, which a blocking call to a stalled Redis would stop too.)"""
    await asyncio.sleep(seconds)
    r = aioredis.Redis.from_url(stack.redis_url)
    try:
        started = time.monotonic()
        try:
            await r.bgrewriteaof()
        except redis.ResponseError as exc:  # an automatic rewrite under way already: that one is measured
            print(f"  (at {seconds:.0f} s: {exc})", flush=True)
        while time.monotonic() - started < 0.5 or (await r.info("persistence"))["aof_rewrite_in_progress"]:
            await asyncio.sleep(0.05)
    finally:
        await r.aclose()
    print(f"  a rewrite started at {seconds:.0f} s took {time.monotonic() - started:.1f} s", flush=True)


async def queue_phase(stack: Stack, server: str, args: argparse.Namespace) -> list[float]:
    before, rests = redis_persistence(stack), stack.rests()
    rewrite = asyncio.create_task(rewrite_later(stack, args.rewrite_at)) if args.rewrite_at else None
    q = await open_loop("127.0.0.1", stack.gw_port, message_request(stack.gw_port),
                        rate=args.queue_rate, seconds=args.queue_seconds, keep_bodies=True)
    if rewrite is not None:
        await rewrite
    stack.wait_drained()
    after = redis_persistence(stack)
    lat, other, arrivals = ingress_to_queue(stack, q.bodies)
    print(f"[{server}] ingress -> in skill queue at {args.queue_rate:.0f} msg/s for {args.queue_seconds:.0f} s "
          f"(worker running): {len(lat)} complaints (not measured: {other}); ms p50 {pct(lat, 50):.1f} p99 {pct(lat, 99):.1f} "
          f"min {min(lat, default=float('nan')):.1f} max {pct(lat, 100):.1f} (goal p99 <= 50 ms); ack {q.summary()}")
    print(f"  redis during the phase: AOF rewrites {before['aof_rewrites']} -> {after['aof_rewrites']}, "
          f"latest fork {after['latest_fork_usec']} us, AOF {after['aof_current_size'] / 1e6:.0f} MB, "
          f"memory {after['used_memory_human']}, delayed fsyncs {after['aof_delayed_fsync']}")
    print(f"  ms p50 / p99 / max by arrival: {by_window(lat, arrivals, args.window)}")
    print(stack.rested_since(rests))
    return lat


#: Redis's latency monitor records what held it up this long (a fork, an fsync, a script, expiry)
HELD_UP_MS = 3


def held_up(r: redis.Redis) -> str:
    """Redis's latency monitor since its last reset: each kind of event, its latest and longest."""
    events = r.execute_command("LATENCY", "LATEST")
    return ", ".join(f"{e[0].decode()} {e[2]} / {e[3]}" for e in sorted(events, key=lambda e: -e[3])) or "nothing"


async def run(server: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        stack = Stack(server, Path(tmp), args.fsync, {"GATEWAY_CHANNEL_RATE_PER_SECOND": str(args.channel_budget),
                                                      "GATEWAY_MAX_PENDING": str(args.max_pending)})
        stack.start()
        try:
            if args.only_queue:
                if args.fill_mb:
                    fill(stack, args.fill_mb)
                for setting in args.redis_config:
                    name, _, value = setting.partition("=")
                    redis.Redis.from_url(stack.redis_url).config_set(name, value)
                lat = await queue_phase(stack, server, args)
                return {"server": server, "queue_p50": pct(lat, 50), "queue_p99": pct(lat, 99)}
            await stack.warm_up()
            ratios = []
            for pair in range(1, args.pairs + 1):
                compact(stack)
                rests, rewrites = stack.rests(), redis_persistence(stack)["aof_rewrites"]
                bare, gw = await throughput(stack, args.seconds, args.connections, args.client)
                ended_ms = int(time.time() * 1000)
                if redis_persistence(stack)["aof_rewrites"] != rewrites:
                    print("  (Redis rewrote its AOF during this pair: the worker does not rest meanwhile)")
                print(f"[{server}] closed loop, {args.connections} connections, {args.seconds:.0f} s each, load from "
                      f"{args.client}" + (f", pair {pair} of {args.pairs}" if args.pairs > 1 else ""))
                print(f"  bare endpoint : {bare.summary()}")
                print(f"  gateway       : {gw.summary()}")
                ratios.append(gw.rate / bare.rate if bare.rate else float("nan"))
                print(f"  ratio gateway/bare = {ratios[-1]:.2f}  (goal >= 0.5; worker running, as in make run)")
                stack.wait_drained(300)  # (before the next bare loop: a worker draining the backlog shares its CPU)
                print(stack.rested_since(rests))
                stack.wait_timers(ended_ms + FIRST_RESPONSE_MS)
            ratio = statistics.median(ratios)
            if args.pairs > 1:
                print(f"  ratio gateway/bare, worker running: median {ratio:.2f} of {args.pairs} pairs "
                      f"({' / '.join(f'{r:.2f}' for r in ratios)})")
            pause_worker(stack, True)
            bare2, gw2 = await throughput(stack, args.seconds, args.connections, args.client)
            ended_ms = int(time.time() * 1000)
            pause_worker(stack, False)
            ratio_alone = gw2.rate / bare2.rate if bare2.rate else float("nan")
            print(f"  worker paused: bare {bare2.rate:,.0f} req/s, gateway {gw2.rate:,.0f} req/s "
                  f"(p99 {gw2.pct(99):.1f} ms), ratio {ratio_alone:.2f}")
            stack.wait_drained(300)
            stack.wait_timers(ended_ms + FIRST_RESPONSE_MS)

            bare_ol = await open_loop("127.0.0.1", stack.bare_port, message_request(stack.bare_port),
                                      rate=args.rate, seconds=args.seconds)
            stack.wait_drained()
            print(f"[{server}] open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s")
            print(f"  bare endpoint : {bare_ol.summary()}")
            r = redis.Redis.from_url(stack.redis_url)
            r.config_set("latency-monitor-threshold", HELD_UP_MS)
            loops = []
            for n in range(1, args.open_loops + 1):
                rests = stack.rests()
                r.execute_command("LATENCY", "RESET")
                loops.append(await open_loop("127.0.0.1", stack.gw_port, message_request(stack.gw_port),
                                             rate=args.rate, seconds=args.seconds))
                print(f"  gateway {n if args.open_loops > 1 else ' '}     : {loops[-1].summary()}  (goal p99 <= 25 ms)")
                print(f"    Redis held up {HELD_UP_MS} ms or more (event: latest / longest ms): {held_up(r)}")
                stack.wait_drained()
                print(stack.rested_since(rests))
            gw_ol, p99s = loops[0], [loop.pct(99) for loop in loops]
            if len(loops) > 1:
                print(f"  gateway p99 over {len(loops)} loops: median {statistics.median(p99s):.2f}, "
                      f"{min(p99s):.2f}-{max(p99s):.2f} ms")

            lat = await queue_phase(stack, server, args) if not args.no_queue else []
            return {"server": server, "bare_rps": bare.rate, "gateway_rps": gw.rate, "ratio": ratio, "ratios": ratios,
                    "ratio_worker_paused": ratio_alone,
                    "open_loop_rate": args.rate, "gateway_p50": gw_ol.pct(50), "gateway_p99": gw_ol.pct(99),
                    "gateway_p99s": p99s,
                    "bare_p99": bare_ol.pct(99), "queue_p50": pct(lat, 50), "queue_p99": pct(lat, 99)}
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", choices=["uvicorn", "granian", "both"], default="uvicorn")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=3,
                        help="closed loops with the worker running, each a bare loop then a gateway loop, the "
                             "backlog drained between: the median ratio is printed (the machine's speed drifts)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--open-loops", type=int, default=1, metavar="N",
                        help="the gateway's open loop N times, drained between (the p99 of one 10-s loop is one "
                             "draw of a wide spread: an AOF rewrite inside a loop moves it most)")
    parser.add_argument("--queue-rate", type=float, default=500)
    parser.add_argument("--queue-seconds", type=float, default=60)
    parser.add_argument("--window", type=float, default=10,
                        help="seconds of arrivals per line of the ingress -> queue latencies by arrival")
    parser.add_argument("--quick", action="store_true", help="short phases, for a smoke run")
    parser.add_argument("--only-queue", action="store_true", help="only the ingress -> queue phase, on a fresh Redis")
    parser.add_argument("--no-queue", action="store_true",
                        help="skip the ingress -> queue phase (closed- and open-loop phases only)")
    parser.add_argument("--fsync", choices=["always", "everysec"], default="always",
                        help="the bench Redis's appendfsync (the embedded Redis uses always)")
    parser.add_argument("--channel-budget", type=int, default=0, metavar="N",
                        help="GATEWAY_CHANNEL_RATE_PER_SECOND for the gateway (default 0: no limit). With the "
                             "default setting (2000) the closed loop measures that budget, not the intake: "
                             "the rest of its requests are answered 429")
    parser.add_argument("--max-pending", type=int, default=0, metavar="N",
                        help="GATEWAY_MAX_PENDING for the gateway (default 0: no limit; the worker-paused phase "
                             "leaves more messages waiting than the default 100,000 in a few runs)")
    parser.add_argument("--fill-mb", type=int, default=0, metavar="N",
                        help="with --only-queue: N MB of other keys written (and the AOF rewritten) first")
    parser.add_argument("--rewrite-at", type=float, default=0, metavar="S",
                        help="an AOF rewrite S seconds into the ingress -> queue phase")
    parser.add_argument("--redis-config", action="append", default=[], metavar="NAME=VALUE",
                        help="with --only-queue: CONFIG SET on the benchmark's Redis before the phase (after the fill)")
    parser.add_argument("--client", choices=["wrk", "python"], default=None,
                        help="the closed loop's load generator: wrk (the default where it is installed: "
                             "`make bench-deps`), or this directory's Python one (loadgen.py)")
    args = parser.parse_args()
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") else "python"
        if args.client == "python":
            print("wrk is not installed (make bench-deps): the closed loop runs on loadgen.py, which takes a "
                  "quarter of a core of its own")
    if args.quick:
        args.seconds, args.queue_seconds, args.pairs = 3, 5, 1
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    default = load_settings({})  # the worker's pace as make run starts it
    share, lag = (os.environ.get(name) or f"{value} (the default)" for name, value in (
        ("GATEWAY_WORKER_SURGE_SHARE", default.worker_surge_share),
        ("GATEWAY_WORKER_SURGE_LAG_SECONDS", default.worker_surge_lag_seconds)))
    print(f"worker: GATEWAY_WORKER_NICE={os.environ.get('GATEWAY_WORKER_NICE') or '0 (as make run starts it)'} "
          f"GATEWAY_WORKER_SURGE_SHARE={share} GATEWAY_WORKER_SURGE_LAG_SECONDS={lag}")
    print(f"gateway limits: GATEWAY_CHANNEL_RATE_PER_SECOND={args.channel_budget} GATEWAY_MAX_PENDING={args.max_pending} "
          "(0: none)")
    servers = ["uvicorn", "granian"] if args.server == "both" else [args.server]
    results = [asyncio.run(run(s, args)) for s in servers]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
