"""Profile of the gateway per message: where its CPU goes on ``POST /v1/messages``.

    .venv/bin/python bench/profile_gateway.py [--messages 4000] [--rate 400] [--texts corpus|short]
                                              [--closed N] [--no-profile] [--top 35] [--keep FILE]

A redis-server with the embedded Redis's options (AOF, appendfsync always) is started, and one
gateway process: this script again (``--serve``), running uvicorn as ``python -m gateway serve``
does (uvloop, httptools, no access log) with cProfile on a CPU clock (process_time), enabled once
the warm-up's messages are answered. No worker runs: the intake alone. --messages app messages, each from a
customer of its own, are sent open loop at --rate; then the gateway is stopped and its profile
printed per message: the intake's steps by cumulative time, and the hottest functions by own
time. ``--no-profile`` runs the same without cProfile and prints only the gateway's CPU per
message (user + system, /proc), for before/after comparisons; cProfile inflates Python-heavy
code more than C, so compare steps with each other, not with that figure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from loadgen import cpu_seconds  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

#: The intake's steps, as functions whose cumulative time is reported (module path fragment, name).
STEPS = [
    ("uvicorn/protocols/http/httptools_impl.py", "run_asgi", "whole request (ASGI app)"),
    ("adapters/app.py", "submit_message", "  the handler"),
    ("plugins/requests.py", "read_body", "    read the body"),
    ("plugins/requests.py", "decode_json", "    decode + validate"),
    ("normalizer/inbound.py", "clean_text", "    clean_text"),
    ("normalizer/categories.py", "accept_category_hint", "    category hint"),
    ("normalizer/inbound.py", "build_message", "    build_message"),
    ("normalizer/extract.py", "extract_amount", "      amount from the text"),
    ("normalizer/extract.py", "extract_transaction_id", "      transaction id from the text"),
    ("normalizer/language.py", "detect_language", "      language"),
    ("normalizer/contacts.py", "normalise_or_keep", "      contacts"),
    ("router/intake.py", "submit", "    Intake.submit"),
    ("router/store/messages.py", "intake", "      store.intake (args + script call)"),
    ("redis/commands/core.py", "__call__", "        redis-py Script.__call__"),
    ("redis/asyncio/client.py", "execute_command", "        redis-py execute_command"),
    ("router/store/base.py", "job_bytes", "        arq job bytes"),
    ("gateway/auth.py", "", "    auth (any gateway/auth.py function)"),
    ("plugins/auth.py", "roles_guard", "    roles guard"),
]


def serve(port: int, out: str, profile: bool) -> None:
    """The gateway under cProfile (the child process)."""
    import uvicorn

    profiler = cProfile.Profile(time.process_time) if profile else None
    config = uvicorn.Config("gateway.asgi:app", host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                            access_log=False, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def main() -> None:
        # the driver's signal after its warm-up
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, profiler.enable if profiler else lambda: None)
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        Path(out + ".ready").write_text("1")
        await task

    import uvloop

    uvloop.install()
    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # the driver's SIGINT: stop and write the profile
        pass
    finally:
        if profiler:
            profiler.disable()
            profiler.dump_stats(out)


def report(stats_path: str, n: int, top: int) -> None:
    stats = pstats.Stats(stats_path)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in entries.items())
    print(f"\nprofiled CPU per message: {total * 1000 / n:.3f} ms (all functions' own time)")
    print("\nstep (cumulative CPU per message, profiled)")
    for path, name, label in STEPS:
        cum = sum(ct for (f, _, fn), (_, _, _, ct, _) in entries.items()
                  if f.endswith(path) and (not name or fn == name))
        calls = sum(nc for (f, _, fn), (_, nc, _, _, _) in entries.items()
                    if f.endswith(path) and (not name or fn == name))
        print(f"  {label:<48} {cum * 1000 / n:7.3f} ms   ({calls / n:.2f} calls)")
    print(f"\nhottest functions by own time (per message, of {total * 1000 / n:.3f} ms)")
    rows = sorted(entries.items(), key=lambda kv: -kv[1][2])[:top]
    for (f, line, fn), (_, nc, tt, ct, _) in rows:
        where = f.replace(str(ROOT) + "/", "").replace(sys.prefix + "/", "")
        where = where.split("site-packages/")[-1]
        print(f"  {tt * 1000 / n:7.4f} own {ct * 1000 / n:7.4f} cum {nc / n:6.2f} calls  {where}:{line} {fn}")


async def drive(port: int, messages: int, rate: float, texts: list[str], tag: str, closed: int = 0):
    from cost import app_requests
    from loadgen import closed_loop, open_loop

    if closed:
        return await closed_loop("127.0.0.1", port, app_requests(port, tag, texts), connections=closed,
                                 seconds=messages / rate)
    return await open_loop("127.0.0.1", port, app_requests(port, tag, texts), rate=rate,
                           seconds=messages / rate, keep_bodies=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=400)
    parser.add_argument("--texts", choices=["corpus", "short"], default="corpus")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--closed", type=int, default=0, metavar="N",
                        help="closed loop with N connections for messages/rate seconds instead of open loop")
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--keep", type=Path, help="copy the cProfile stats file here (pstats)")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(int(args.serve[0]), args.serve[1], not args.no_profile)

    from cost import corpus_texts
    from gateway.embedded_redis import server_options
    from intake import APP_KEY, free_port, wait_http
    import redis

    if args.texts == "corpus":
        texts = corpus_texts()
    else:
        texts = ["我被重复扣款了 ¥128.50，交易号 T2026112212345678，请尽快退款",
                 "I was charged twice for my coffee, $4.50, please refund",
                 "app闪退打不开，更新以后无法使用", "提现手续费太高了，要求减免"]
    with tempfile.TemporaryDirectory(prefix="bench-profile-gw-") as tmp:
        rport, gport = free_port(), free_port()
        rdir = Path(tmp) / "redis"
        rdir.mkdir()
        rproc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(rport), "--bind",
                                  "127.0.0.1", "--dir", str(rdir), *server_options("always")],
                                 stdout=subprocess.DEVNULL)
        out = str(Path(tmp) / "gateway.prof")
        gproc = None
        try:
            url = f"redis://127.0.0.1:{rport}/0"
            for _ in range(200):
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            env = {**os.environ, "REDIS_URL": url, "GATEWAY_REDIS_PREFIX": "bench:",
                   "GATEWAY_APP_KEYS": f"app:{APP_KEY}", "GATEWAY_VAR_DIR": str(Path(tmp) / "var"),
                   "GATEWAY_PLUGINS": str(ROOT / "plugins.toml"), "GATEWAY_LOG_LEVEL": "WARNING",
                   "PAYMENT_RECORDS_DEMO": "false"}
            cmd = [sys.executable, __file__, "--serve", str(gport), out]
            if args.no_profile:
                cmd.append("--no-profile")
            gproc = subprocess.Popen(cmd, env=env, cwd=ROOT)
            wait_http(f"http://127.0.0.1:{gport}/health")
            while not Path(out + ".ready").exists():
                time.sleep(0.05)
            tag = f"pg{os.getpid():x}"
            asyncio.run(drive(gport, min(500, args.messages), args.rate, texts, tag + "w"))  # warm-up
            gproc.send_signal(signal.SIGUSR1)  # profile from here
            stats0 = redis.Redis.from_url(url).info("commandstats")
            cpu0 = cpu_seconds(gproc.pid)
            result = asyncio.run(drive(gport, args.messages, args.rate, texts, tag, args.closed))
            cpu1 = cpu_seconds(gproc.pid)
            stats1 = redis.Redis.from_url(url).info("commandstats")
            n = result.ok or 1
            print(f"{result.rate:,.0f} req/s answered 202; "
                  f"sent {result.sent}, answered 202: {result.ok}, statuses {result.statuses}, "
                  f"errors {result.errors}; ack p50 {result.pct(50):.2f} p99 {result.pct(99):.2f} ms")
            cmds = {k.removeprefix("cmdstat_"): v["calls"] - stats0.get(k, {}).get("calls", 0)
                    for k, v in stats1.items()}
            cmds = {k: v for k, v in cmds.items() if v and k != "info"}
            print(f"gateway CPU per message (user+system{', under cProfile' if not args.no_profile else ''}): "
                  f"{(cpu1 - cpu0) * 1000 / n:.3f} ms")
            print(f"Redis commands per message: {sum(cmds.values()) / n:.2f}: "
                  + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(cmds.items(), key=lambda kv: -kv[1])))
            gproc.send_signal(signal.SIGINT)
            gproc.wait(timeout=60)
            if not args.no_profile:
                report(out, n, args.top)
                if args.keep:
                    shutil.copy(out, args.keep)
        finally:
            if gproc and gproc.poll() is None:
                gproc.kill()
            rproc.terminate()
            rproc.wait()
    print(json.dumps({"messages": args.messages, "rate": args.rate}))


if __name__ == "__main__":
    main()
