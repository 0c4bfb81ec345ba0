"""The processes a multi-process benchmark runs on one machine: a redis-server of its own (AOF,
the appendfsync it is told), the fake provider sink (bench/provider_sink.py), N uvicorn gateway
processes (each on its own port, as `python -m gateway serve` runs them) and M workers
(`python -m gateway worker`, or bench/joblog_worker.py when a job log is wanted). Workers can be
SIGKILLed and restarted, Redis can be SIGKILLed and restarted from its AOF.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.embedded_redis import server_options  # noqa: E402
from intake import APP_KEY, free_port, server_cmd, wait_http  # noqa: E402
from provider_sink import read_records, sink_env  # noqa: E402
from webhooks import ENV as SIGNING_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent


class Cluster:
    def __init__(self, tmp: Path, *, gateways: int = 1, workers: int = 1, fsync: str = "always",
                 joblog: bool = False, extra_env: dict[str, str] | None = None, prefix: str = "bench:",
                 worker_script: str | None = None, root: Path = ROOT) -> None:
        self.tmp, self.fsync, self.joblog = tmp, fsync, joblog
        #: the checkout whose gateway and worker run (another revision's worktree: bench/cost.py --against)
        self.root = root
        self.worker_script = worker_script  # a launcher in bench/ instead of `python -m gateway worker`
        self.n_gateways, self.n_workers = gateways, workers
        self.prefix = prefix
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.sink_port = free_port()
        self.sink_record = str(tmp / "sink.jsonl")
        self.gw_ports = [free_port() for _ in range(gateways)]
        self.redis_proc: subprocess.Popen | None = None
        self.sink_proc: subprocess.Popen | None = None
        self.gateways: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.joblog_dir = tmp / "joblog"
        self.joblog_dir.mkdir(exist_ok=True)
        self.log = open(tmp / "processes.log", "ab")
        self.env = {**os.environ, "REDIS_URL": self.redis_url, "GATEWAY_REDIS_PREFIX": prefix,
                    "GATEWAY_APP_KEYS": f"app:{APP_KEY}", "GATEWAY_AGENT_TOKENS": "a:bench-agent-01",
                    "GATEWAY_SUPERVISOR_TOKENS": "s:bench-supervisor-01",
                    "GATEWAY_VAR_DIR": str(tmp / "var"), "GATEWAY_PLUGINS": str(root / "plugins.toml"),
                    "GATEWAY_LOG_LEVEL": "WARNING",
                    # no payment-records system here: the example plugins.toml would look charges up in its demo
                    # records at GATEWAY_PUBLIC_URL (a signing-only address in benchmarks) and retry for minutes
                    "PAYMENT_RECORDS_DEMO": "false",
                    "SOAK_JOBLOG": str(self.joblog_dir),
                    **SIGNING_ENV, **sink_env(f"http://127.0.0.1:{self.sink_port}"), **(extra_env or {})}
        if root != ROOT:  # that checkout's packages first, before the installed (editable) ones
            self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))

    # -- redis ------------------------------------------------------------------------------

    def start_redis(self, wrap: list[str] | None = None) -> None:
        """redis-server with AOF and this cluster's appendfsync; ``wrap`` runs it under another
        command (strace)."""
        rdir = self.tmp / "redis"
        rdir.mkdir(exist_ok=True)
        self.redis_proc = subprocess.Popen(
            [*(wrap or []), shutil.which("redis-server") or "redis-server", "--port", str(self.redis_port),
             "--bind", "127.0.0.1", "--dir", str(rdir), *server_options(self.fsync)],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                r = redis.Redis.from_url(self.redis_url)
                if r.ping() and r.info("persistence").get("loading") == 0:
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill_redis(self) -> None:
        assert self.redis_proc is not None
        self.redis_proc.send_signal(signal.SIGKILL)
        self.redis_proc.wait()

    def r(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    # -- the sink, gateways, workers --------------------------------------------------------

    def start(self, redis_wrap: list[str] | None = None) -> None:
        self.started_at = time.time()
        self.start_redis(redis_wrap)
        self.sink_proc = subprocess.Popen([sys.executable, str(BENCH / "provider_sink.py"), "--port",
                                           str(self.sink_port), "--record", self.sink_record],
                                          stdout=subprocess.PIPE, stderr=self.log)
        assert self.sink_proc.stdout is not None
        self.sink_proc.stdout.readline()  # "sink ready"
        for port in self.gw_ports:
            self.gateways.append(subprocess.Popen(server_cmd("uvicorn", "gateway.asgi:app", port), env=self.env,
                                                  cwd=self.root, stdout=self.log, stderr=self.log))
        for _ in range(self.n_workers):
            self.workers.append(self._worker())
        for port in self.gw_ports:
            wait_http(f"http://127.0.0.1:{port}/health")
        self.wait_workers(self.n_workers, since=self.started_at)

    def wait_workers(self, n: int, since: float, timeout: float = 60) -> None:
        """Until n workers have announced themselves (their start-up heartbeat) since ``since``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.r().zcount(self.prefix + "workers", int(since * 1000), "+inf") >= n:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{n} workers did not start within {timeout} s")

    def _worker(self) -> subprocess.Popen:
        script = self.worker_script or ("joblog_worker.py" if self.joblog else None)
        cmd = [sys.executable, str(BENCH / script)] if script else [sys.executable, "-m", "gateway", "worker"]
        return subprocess.Popen(cmd, env=self.env, cwd=self.root, stdout=self.log, stderr=self.log)

    def kill_worker(self, i: int) -> tuple[int, float]:
        """SIGKILL worker i; answers its pid and the kill time (unix s)."""
        proc = self.workers[i]
        at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return proc.pid, at

    def restart_worker(self, i: int) -> int:
        self.workers[i] = self._worker()
        return self.workers[i].pid

    def stop(self) -> None:
        procs = [*self.workers, *self.gateways, self.sink_proc, self.redis_proc]
        for p in procs:
            if p is not None and p.poll() is None:
                p.terminate()
        for p in procs:
            if p is None:
                continue
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    # -- state ------------------------------------------------------------------------------

    def pending(self) -> int:
        return self.r().zcard(self.prefix + "pending")

    def wait_drained(self, timeout: float = 600, queue_too: bool = False) -> bool:
        """Until no message waits for a worker (and, with queue_too, no arq job is queued or
        deferred and no reply waits in the outbox)."""
        r = self.r()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = r.zcard(self.prefix + "pending")
            if queue_too:
                busy += r.zcard(self.prefix + "arq:queue") + r.zcard(self.prefix + "outbox")
            if not busy:
                return True
            time.sleep(0.25)
        return False

    def sink_records(self) -> list[dict]:
        return read_records(self.sink_record) if os.path.exists(self.sink_record) else []

    def redis_cpu(self) -> dict[str, float]:
        info = self.r().info("cpu")
        return {k: float(info[k]) for k in ("used_cpu_sys", "used_cpu_user", "used_cpu_sys_main_thread",
                                            "used_cpu_user_main_thread") if k in info}

    def commandstats(self) -> dict[str, int]:
        """``INFO commandstats``: per command, its ``calls``."""
        return {k: v["calls"] for k, v in self.command_figures().items()}

    def command_figures(self) -> dict[str, dict[str, int]]:
        """``INFO commandstats``, one read: per command, its ``calls`` and ``usec`` (the server's
        time in it; a script's commands count in the script's figure too)."""
        info = self.r().info("commandstats")
        return {k.removeprefix("cmdstat_"): {"calls": int(v["calls"]), "usec": int(v["usec"])} for k, v in info.items()}
