"""A small HTTP/1.1 load generator on asyncio streams (keep-alive, pre-built requests).

Two modes: closed loop (N connections as fast as the server answers: throughput) and open
loop (requests started on a fixed schedule whatever the latency: latency at a given rate,
without the coordinated omission of closed-loop latency figures).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    #: the errors by kind (an exception's class name; "generator limit": not sent, too many in flight)
    error_kinds: dict[str, int] = field(default_factory=dict)
    #: requests sent again after their connection closed with no answer (``Connection.request``)
    retried: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    bodies: list[bytes] = field(default_factory=list)

    def failed(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]

    def summary(self) -> str:
        mean = statistics.fmean(self.latencies_ms) if self.latencies_ms else float("nan")
        return (f"{self.ok}/{self.sent} ok in {self.seconds:.1f} s = {self.rate:,.0f} req/s; latency ms "
                f"p50 {self.pct(50):.2f} p90 {self.pct(90):.2f} p99 {self.pct(99):.2f} max {self.pct(100):.2f} "
                f"mean {mean:.2f}; statuses {dict(sorted(self.statuses.items()))}"
                + (f"; errors {self.errors} {dict(sorted(self.error_kinds.items()))}" if self.errors else "")
                + (f"; sent again {self.retried}" if self.retried else ""))


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        #: requests sent again (see ``request``); a reset after a request went out is an error, never
        #: sent again: the server may have taken it
        self.retried = 0

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is not None and self.reader is not None and (
                self.reader.at_eof() or self.writer.transport.is_closing()):
            self.close()  # the server closed it while it was idle: a new one, nothing sent on this one
        reused = self.writer is not None
        if self.writer is None:
            await self.open()
        assert self.writer and self.reader
        self.writer.write(raw)
        status_line = await self.reader.readline()
        if not status_line:
            self.close()
            if reused:  # closed as the request went out (an idle keep-alive the server let go): once more
                self.retried += 1
                return await self.request(raw)
            raise ConnectionError("closed")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def closed_loop(host: str, port: int, make_request: Callable[[int], bytes], *, connections: int,
                      seconds: float, keep_bodies: bool = False) -> LoadResult:
    result = LoadResult()
    deadline = time.perf_counter() + seconds
    counter = 0

    async def run_one() -> None:
        nonlocal counter
        conn = Connection(host, port)
        while time.perf_counter() < deadline:
            counter += 1
            raw = make_request(counter)
            started = time.perf_counter()
            result.sent += 1
            try:
                status, body = await conn.request(raw)
            except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                result.failed(type(exc).__name__)
                conn.close()
                continue
            finally:
                result.retried, conn.retried = result.retried + conn.retried, 0
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.ok += 1
                if keep_bodies:
                    result.bodies.append(body)
        conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(run_one() for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result


async def open_loop(host: str, port: int, make_request: Callable[[int], bytes], *, rate: float, seconds: float,
                    max_connections: int = 256, keep_bodies: bool = False) -> LoadResult:
    """Start request i at t0 + i / rate; latency counts from the scheduled start."""
    result = LoadResult()
    idle: list[Connection] = []
    total = int(rate * seconds)
    in_flight = 0
    t0 = time.perf_counter() + 0.05
    done = asyncio.Event()

    async def fire(i: int, scheduled: float) -> None:
        nonlocal in_flight
        conn = idle.pop() if idle else Connection(host, port)
        in_flight += 1
        try:
            status, body = await conn.request(make_request(i))
        except (OSError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            result.failed(type(exc).__name__)
            conn.close()
        else:
            result.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                result.ok += 1
                if keep_bodies:
                    result.bodies.append(body)
            idle.append(conn)
        finally:
            result.retried, conn.retried = result.retried + conn.retried, 0
            in_flight -= 1
            if result.ok + result.errors + sum(v for k, v in result.statuses.items() if not 200 <= k < 300) >= total:
                done.set()

    tasks = []
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if in_flight >= max_connections:
            result.sent += 1
            result.failed("generator limit")  # the generator's own limit: a failure to keep up
            continue
        result.sent += 1
        tasks.append(asyncio.create_task(fire(i, scheduled)))
    await asyncio.gather(*tasks)
    result.seconds = seconds
    for conn in idle:
        conn.close()
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far: utime and stime, fields 14 and 15
    of proc(5)'s stat."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU of a process (all its threads) so far, apart (proc(5)'s stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick
