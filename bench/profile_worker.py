"""Profile of the worker per message: where its CPU and its Redis round trips go, by step.

    .venv/bin/python bench/profile_worker.py [--messages 1500] [--top 40] [--out DIR] [--texts outage]

A redis-server with the embedded Redis's options (AOF, appendfsync always) and one uvicorn
gateway are started; --messages app messages (each from a customer of its own, corpus texts) are
taken in with no worker running; then one worker runs *in this process*, in burst mode, under
cProfile (enabled once its start-up is done, so the model load is not counted) until every job
is done: the messages, their acknowledgements, incident checks and events.

Printed, per message: CPU by step (cProfile cumulative time of the pipeline's steps and the
helpers they call), the hottest functions by own time, and Redis round trips and commands as the
client sends them, attributed to the innermost function outside redis-py and the store (a Lua
script is one ``EVALSHA`` here; the commands it runs inside are in the server's figure, printed
too). cProfile times CPU (process_time), not the waits for Redis; its figures carry its own
overhead and this script's command tally (together roughly 1.5-2x): compare steps with each
other, and take the absolute CPU per message from bench/cost.py.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import collections
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cost import app_requests, corpus_texts, long_deadlines  # noqa: E402
from intake import TEXTS as OUTAGE_TEXTS  # noqa: E402
from loadgen import open_loop  # noqa: E402
from stack import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: The worker's steps, as functions whose cumulative time is reported (module path fragment, name).
STEPS = [
    ("router/worker.py", "run", "whole job (instrumented)"),
    ("router/pipeline.py", "process_message", "process_message (all of it)"),
    ("plugins/locks.py", "wait", "  per-sender lock: acquire"),
    ("plugins/locks.py", "release", "  per-sender lock: release"),
    ("router/pipeline.py", "prepare", "  1 prepare (load, customer, open cases)"),
    ("router/templates.py", "refresh", "    templates version check"),
    ("router/pipeline.py", "into_existing_case", "  3 existing case?"),
    ("router/pipeline.py", "categorise_message", "  4 categorise"),
    ("router/pipeline.py", "merge_if_repeat", "  5 repeat check"),
    ("router/pipeline.py", "open_case", "  6-7 route, open, acknowledge"),
    ("router/context.py", "engine", "    routing rules (version check)"),
    ("router/context.py", "deadline_policy", "    deadline policy (version check)"),
    ("router/cases/opening.py", "open_complaint", "    commit the complaint"),
    ("router/pipeline.py", "apply_enrichment", "    enricher plugins"),
    ("router/delivery.py", "deliver", "    send + record the acknowledgement"),
    ("router/incident_check.py", "consider_incident", "consider_incident job"),
    ("router/incidents.py", "consider", "  Incidents.consider"),
    ("router/incidents.py", "_join_open", "    join an open incident?"),
    ("router/incidents.py", "tokens", "    tokens()"),
    ("router/incidents.py", "same_fault", "    same_fault() comparisons"),
    ("router/delivery.py", "dispatch_event", "dispatch_event job"),
    ("router/worker.py", "_count", "job metrics (_count)"),
    ("router/arq_worker.py", "run_job", "arq: claim + run + finish a job"),
    ("router/arq_worker.py", "poll", "arq: polls"),
    ("router/housekeeping.py", "housekeeping", "housekeeping loop"),
    ("router/timers.py", "run", "timer loop"),
]

_SKIP = ("/redis/", "/router/store/", "/router/redis_pool.py", "/asyncio/", "/contextlib.py", "bench/profile_worker.py",
         "/plugins/locks.py")


class CommandTally:
    """Round trips and commands the client sends, by the function that asked for them."""

    def __init__(self) -> None:
        self.trips: collections.Counter[str] = collections.Counter()
        self.commands: collections.Counter[str] = collections.Counter()
        self.names: collections.Counter[str] = collections.Counter()
        self.labels: dict[Any, str] = {}  # code object -> "path:function", or "" to look further out

    def label(self, code: Any) -> str:
        found = self.labels.get(code)
        if found is None:
            path, root = code.co_filename, str(ROOT)
            ours = not any(s in path for s in _SKIP) and (path.startswith(root) or "/arq/" in path)
            found = f"{path[len(root) + 1:] if path.startswith(root) else 'arq'}:{code.co_name}" if ours else ""
            self.labels[code] = found
        return found

    def caller(self) -> str:
        frame = sys._getframe(2)
        lock = ""
        while frame is not None:
            code = frame.f_code
            if not lock and code.co_filename.endswith("/plugins/locks.py"):
                lock = f"locks.{code.co_name}"
            where = self.label(code)
            if where:
                return f"{where} ({lock})" if lock else where
            frame = frame.f_back
        return "?"

    def note(self, names: list[str]) -> None:
        who = self.caller()
        self.trips[who] += 1
        self.commands[who] += len(names)
        for name in names:
            self.names[name] += 1

    def install(self) -> None:
        from redis.asyncio.client import Pipeline, Redis

        tally = self
        single = Redis.execute_command
        batch = Pipeline.execute

        async def execute_command(self: Any, *args: Any, **options: Any) -> Any:
            if not isinstance(self, Pipeline):
                tally.note([str(args[0]).upper()])
            return await single(self, *args, **options)

        async def execute(self: Any, raise_on_error: bool = True) -> Any:
            names = [str(cmd[0][0]).upper() for cmd in self.command_stack]
            if names:
                tally.note((["MULTI"] if self.is_transaction else []) + names
                           + (["EXEC"] if self.is_transaction else []))
            return await batch(self, raise_on_error)

        Redis.execute_command = execute_command  # type: ignore[method-assign]
        Pipeline.execute = execute  # type: ignore[method-assign]


def step_table(stats: pstats.Stats, n: int) -> list[tuple[str, float, int]]:
    rows = []
    raw = stats.stats  # type: ignore[attr-defined]
    for fragment, name, label in STEPS:
        total, calls = 0.0, 0
        for (path, _line, func), (_cc, nc, _tt, ct, _callers) in raw.items():
            if func == name and path.endswith(fragment):
                total += ct
                calls += nc
        rows.append((label, total * 1000 / n, calls))
    return rows


def run_worker_profiled(env: dict[str, str], profiler: cProfile.Profile) -> float:
    os.environ.update(env)
    from gateway.settings import load_settings
    import router.worker as worker_module

    settings = load_settings()
    original = worker_module.startup
    started: dict[str, float] = {}

    async def startup(ctx: dict[str, Any]) -> None:
        await original(ctx)
        started["cpu"] = time.process_time()
        profiler.enable()

    worker_module.startup = startup  # type: ignore[assignment]

    async def drain() -> None:  # as tests/conftest.py's drain: arq's worker binds the loop it is made in
        worker = worker_module.create_worker(settings, burst=True, handle_signals=False)
        try:
            await worker.main()
        finally:
            await worker.close()
            profiler.disable()

    loop = worker_module.new_event_loop()  # the loop run_worker gives the worker process
    try:
        loop.run_until_complete(drain())
    finally:
        loop.close()
    return time.process_time() - started.get("cpu", time.process_time())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--out", type=Path, help="keep the raw profile (profile.pstats) here")
    parser.add_argument("--categoriser", choices=["model", "keywords"], default=None)
    parser.add_argument("--texts", choices=["corpus", "outage"], default="corpus",
                        help="corpus: 600 training texts cycled; outage: bench/intake.py's four texts, so that "
                             "after the first few every complaint joins an open incident (an outage's burst)")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        extra = {"GATEWAY_CATEGORISER": args.categoriser} if args.categoriser else {}
        cluster = Cluster(Path(tmp), gateways=1, workers=0, extra_env=extra)
        cluster.start()
        try:
            long_deadlines(cluster)  # no deadline timer falls due while the worker drains
            port = cluster.gw_ports[0]
            texts = corpus_texts() if args.texts == "corpus" else OUTAGE_TEXTS
            sent = asyncio.run(open_loop("127.0.0.1", port, app_requests(port, f"p{os.getpid():x}", texts),
                                         rate=args.rate, seconds=args.messages / args.rate))
            n = sent.ok
            print(f"{n} messages taken in; the worker drains them in this process")
            tally = CommandTally()
            tally.install()
            profiler = cProfile.Profile(time.process_time)  # CPU, not the wait for Redis's fsync
            server0 = cluster.commandstats()
            cpu = run_worker_profiled(cluster.env, profiler)
            server = {k: v - server0.get(k, 0) for k, v in cluster.commandstats().items()}
            processed = sum(1 for _ in cluster.r().scan_iter(match=cluster.prefix + "complaint:*", count=1000))
        finally:
            cluster.stop()
    stats = pstats.Stats(profiler)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stats.dump_stats(str(args.out / "profile.pstats"))
    print(f"complaints at the end: {processed}; worker CPU after start-up (profiled): {cpu:.2f} s = "
          f"{cpu * 1000 / n:.2f} ms per message\n")
    print("CPU by step, per message (cProfile cumulative CPU time, ms; calls = entries, a coroutine's resumptions "
          "included):")
    for label, ms, calls in step_table(stats, n):
        print(f"  {label:<48} {ms:7.3f} ms  ({calls} calls)")
    print(f"\nround trips / commands sent per message, by caller (client side; total "
          f"{sum(tally.trips.values()) / n:.1f} / {sum(tally.commands.values()) / n:.1f}):")
    for who, trips in tally.trips.most_common(25):
        print(f"  {who:<70} {trips / n:6.2f} / {tally.commands[who] / n:6.2f}")
    print("\nclient commands per message by name:",
          ", ".join(f"{k} {v / n:.2f}" for k, v in tally.names.most_common(20)))
    total = sum(v for v in server.values())
    print(f"\nserver side (INFO commandstats, worker + idle gateway): {total / n:.1f} commands per message:",
          ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(server.items(), key=lambda kv: -kv[1]) if v / n >= 0.05))
    print(f"\nhottest functions by own time (top {args.top}):")
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
