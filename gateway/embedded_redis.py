"""The zero-setup Redis: a ``redis-server`` child under ``./var/redis`` with AOF on, used when
``REDIS_URL`` is unset. It outlives the gateway process (daemonized) so a restart of the gateway
finds the same data; ``appendfsync always`` so an acknowledged message survives a crash."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedRedisError(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


#: The AOF is rewritten (compacted) once it has doubled since the last rewrite and is at least this
#: large. Redis's default, 64 MB, is ~20 s of messages at 500 a second (~3-5 KB of AOF each), and
#: every rewrite holds up the fsynced writes for up to a second; at 256 MB a rewrite comes every
#: ~90 s at that rate. The price: more AOF on disk between rewrites (up to twice the larger of
#: 256 MB and the last rewrite's size) and to replay at a restart. An embedded Redis already
#: running keeps the options it was started with until it is restarted (bench/RESULTS.md,
#: "sixteenth pass").
AOF_REWRITE_MIN_SIZE = "256mb"

#: Redis's background tasks run this many times a second (its default is 10). Keys with a time to
#: live (a sender's per-minute rate count, idempotency records, arq's job keys: several a message)
#: expire in waves a minute after a surge, and each run of the expiry cycle may block Redis for a
#: quarter of the time between two runs: up to 25 ms at 10, 2.5 ms at 100. Measured with 500,000
#: keys expiring at once, a write's longest wait fell from 37 to 6.5 ms, for ~2 ms of Redis's CPU a
#: second more when idle (bench/expiry_wave.py; bench/RESULTS.md, "thirty-third pass").
SERVER_HZ = "100"


def server_options(fsync: str = "always") -> list[str]:
    """The persistence options of the embedded Redis (the benchmarks start theirs with these too)."""
    return ["--appendonly", "yes", "--appendfsync", fsync, "--save", "",
            "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE, "--hz", SERVER_HZ]


def ensure_embedded_redis(var_dir: Path, *, fsync: str = "always") -> str:
    """Start (or find running) the embedded Redis and return its URL."""
    redis_dir = (var_dir / "redis").resolve()
    redis_dir.mkdir(parents=True, exist_ok=True)
    port_file = redis_dir / "port"
    if port_file.exists():
        port = int(port_file.read_text().strip() or 0)
        if port and _answers_ping(port):
            return f"redis://127.0.0.1:{port}/0"
    binary = shutil.which("redis-server")
    if binary is None:
        raise EmbeddedRedisError(
            "REDIS_URL is unset and no redis-server binary is installed: run `make run` "
            "(it installs Debian's redis-server) or set REDIS_URL"
        )
    port = _free_port()
    subprocess.run(
        [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(redis_dir),
            *server_options(fsync),
            "--daemonize", "yes",
            "--pidfile", str(redis_dir / "redis.pid"),
            "--logfile", str(redis_dir / "redis.log"),
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _answers_ping(port):
            port_file.write_text(str(port))
            return f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    raise EmbeddedRedisError(f"embedded redis-server did not answer on port {port}; see {redis_dir / 'redis.log'}")


def stop_embedded_redis(var_dir: Path) -> None:
    port_file = (var_dir / "redis" / "port")
    if not port_file.exists():
        return
    port = int(port_file.read_text().strip() or 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"SHUTDOWN\r\n")
    except OSError:
        pass
