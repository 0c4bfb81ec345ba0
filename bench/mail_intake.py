"""Benchmark: e-mail intake through a real `python -m gateway worker` and a real Dovecot.

    .venv/bin/python bench/mail_intake.py [--backlog 2000] [--pushes 20]

1. Backlog: N mails waiting in the mailbox when the worker starts -> mails/s until every one
   is a complaint, against the baseline of fetching the same N mails with imapclient alone.
2. Push: one mail appended while the worker idles -> latency until its complaint exists,
   against the baseline of a bare IMAP IDLE client seeing the new mail.
"""

from __future__ import annotations

import sys

# run as a script, this file's folder comes first on sys.path, and this file is called email.py:
# take the folder off so that `import email` finds the standard library
sys.path[:] = [p for p in sys.path if p.rstrip("/") != __file__.rpartition("/")[0]]

import argparse  # noqa: E402
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from email.message import EmailMessage

import redis

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402
from tests.mailservers import Dovecot  # noqa: E402

USER, PASSWORD = "desk@example.com", "secret"
TEXTS = ["我被重复扣款了 ¥128.50，交易号 T2026112212345678，请尽快退款", "I was charged twice, refund $4.50 please",
         "app闪退打不开，更新以后无法使用", "提现手续费太高了，要求减免"]


def make_mail(n: int) -> bytes:
    m = EmailMessage()
    m["From"] = f"customer{n}@example.com"
    m["To"] = USER
    m["Subject"] = f"complaint {n}"
    m["Message-ID"] = f"<bench{n}.{time.time_ns()}@example.com>"
    m.set_content(TEXTS[n % len(TEXTS)] + "\n\nOn Mon, Care wrote:\n> earlier text\n")
    return bytes(m)


def append_many(dovecot: Dovecot, count: int, start: int = 0) -> None:
    imap = dovecot.client(USER)
    for n in range(start, start + count):
        imap.append("INBOX", None, None, make_mail(n))
    imap.logout()


def baseline_fetch(dovecot: Dovecot) -> float:
    from imapclient import IMAPClient

    started = time.perf_counter()
    client = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
    client.login(USER, PASSWORD)
    client.select_folder("INBOX", readonly=True)
    uids = client.search(["ALL"])
    for i in range(0, len(uids), 50):
        client.fetch(uids[i : i + 50], ["BODY.PEEK[]"])
    client.logout()
    return len(uids) / (time.perf_counter() - started)


def baseline_idle(dovecot: Dovecot, pushes: int) -> list[float]:
    from imapclient import IMAPClient

    client = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
    client.login(USER, PASSWORD)
    client.select_folder("INBOX", readonly=True)
    latencies = []
    for n in range(pushes):
        client.idle()
        time.sleep(0.05)
        appended = threading.Event()
        stamp = {}

        def push() -> None:
            append_many(dovecot, 1, 900_000 + n)
            stamp["t"] = time.perf_counter()
            appended.set()

        threading.Thread(target=push).start()
        while True:
            responses = client.idle_check(timeout=5)
            if any(len(r) > 1 and r[1] == b"EXISTS" for r in responses):
                break
        appended.wait()
        latencies.append(max(0.0, time.perf_counter() - stamp["t"]) * 1000)
        client.idle_done()
    client.logout()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--pushes", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    root = pathlib.Path(tempfile.mkdtemp(prefix="bench-email-"))
    root.chmod(0o755)
    dovecot = Dovecot(root, {USER: PASSWORD}).start()
    redis_port = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                   "--dir", str(root), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                                  stdout=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    time.sleep(0.3)
    r = redis.Redis.from_url(redis_url)
    worker = None
    try:
        started = time.perf_counter()
        append_many(dovecot, args.backlog)
        print(f"appended {args.backlog} mails in {time.perf_counter() - started:.1f} s")
        base_rate = baseline_fetch(dovecot)

        plugins = root / "plugins.toml"
        plugins.write_text((ROOT / "plugins.toml").read_text())
        env = {**os.environ, "REDIS_URL": redis_url, "GATEWAY_REDIS_PREFIX": "bench:", "GATEWAY_PLUGINS": str(plugins),
               "GATEWAY_VAR_DIR": str(root / "var"), "GATEWAY_LOG_LEVEL": "WARNING", "IMAP_HOST": "127.0.0.1",
               "IMAP_PORT": str(dovecot.port), "IMAP_SECURITY": "none", "IMAP_USER": USER, "IMAP_PASSWORD": PASSWORD}
        started = time.perf_counter()
        worker = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env=env, cwd=ROOT,
                                  stdout=open(root / "worker.log", "wb"), stderr=subprocess.STDOUT)

        def complaints() -> int:
            return r.zcard("bench:idx:all")

        taken_at = None
        while complaints() < args.backlog:
            if taken_at is None and r.dbsize() and r.zcard("bench:pending") + complaints() >= args.backlog:
                taken_at = time.perf_counter() - started
            if time.perf_counter() - started > 600:
                raise SystemExit(f"backlog not done in 600 s: {complaints()} complaints")
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        rate = args.backlog / elapsed
        print(f"backlog: {args.backlog} mails -> complaints in {elapsed:.1f} s = {rate:.0f} mails/s "
              f"(worker start included; all taken from IMAP after {taken_at or elapsed:.1f} s) (goal >= 200/s); "
              f"baseline bare IMAP fetch {base_rate:.0f} mails/s; ratio {rate / base_rate:.2f}")

        latencies = []
        for n in range(args.pushes):
            before = complaints()
            time.sleep(0.3)
            append_many(dovecot, 1, 100_000 + n)
            pushed = time.perf_counter()
            while complaints() <= before:
                if time.perf_counter() - pushed > 30:
                    raise SystemExit("push not taken in 30 s")
                time.sleep(0.002)
            latencies.append((time.perf_counter() - pushed) * 1000)
        base = baseline_idle(dovecot, args.pushes)
        q = lambda d, p: sorted(d)[min(len(d) - 1, int(p / 100 * len(d)))]  # noqa: E731
        print(f"push (IDLE) -> complaint: p50 {q(latencies, 50):.0f} ms, p99 {q(latencies, 99):.0f} ms, "
              f"max {max(latencies):.0f} ms, mean {statistics.fmean(latencies):.0f} ms (goal <= 1000 ms); "
              f"baseline bare IDLE notice p50 {q(base, 50):.0f} ms, max {max(base):.0f} ms")
    finally:
        if worker:
            worker.terminate()
            worker.wait(10)
        dovecot.stop()
        redis_proc.terminate()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
