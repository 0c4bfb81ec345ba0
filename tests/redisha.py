"""Redis that fails over, for tests: a small local Redis Cluster (three masters, each with one
replica, made with the real ``redis-cli --cluster create``) and a master + replica watched by a
Sentinel, on free loopback ports; a channel that retries until acknowledged, and a worker
process run until a condition holds.

Nothing here waits a fixed time for Redis to act: every step (a node answering, a failover, a
promoted replica, a resynced one) is polled for, with a bound generous enough for a loaded
2-core machine (``FAILOVER_BOUND_S``); reaching the bound fails the test, it never lets it go on.
The cluster's node timeout and the Sentinel's down-after are 5 s, not 2 s: a node a busy machine
starves for two seconds must not be failed over behind the test's back."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import redis

from router.store import decode_complaint
from tests.conftest import APP, RESTARTED_WORKER_ENV, ROOT

#: How long a failover, a restart or a resync may take before the test fails (they take a few
#: seconds on an idle machine).
FAILOVER_BOUND_S = 90.0
#: Redis Cluster's node timeout and the Sentinel's down-after: how long a node must be silent
#: to be failed over.
NODE_TIMEOUT_MS = 5000


def poll(done: Callable[[], Any], what: str, bound: float = FAILOVER_BOUND_S, every: float = 0.1) -> Any:
    """``done()``'s first true answer (a Redis error counts as not yet); fails after ``bound``."""
    deadline = time.monotonic() + bound
    while True:
        with contextlib.suppress(redis.RedisError):
            value = done()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound:.0f} s: {what}")
        time.sleep(every)


def distinct_ports(n: int) -> list[int]:
    """``n`` free loopback ports, all different (each socket held until all are chosen)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@dataclass
class RedisNodes:
    """redis-server processes on loopback, each with AOF ``always`` in its own directory."""

    workdir: Path
    binary: str
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    def spawn(self, port: int, *extra: str) -> None:
        """Start (or restart, with its data) the node on ``port``; returns once it answers."""
        node_dir = self.workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(node_dir), "--repl-diskless-sync-delay", "0",
             "--logfile", str(node_dir / "redis.log"), *extra],
            stdout=subprocess.DEVNULL)
        _wait_ping(self.client(port))

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait(5)

    def kill_all(self) -> None:
        for proc in self.procs.values():
            proc.kill()
        for proc in self.procs.values():
            proc.wait(5)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)


@dataclass
class LocalCluster(RedisNodes):
    ports: list[int] = field(default_factory=list)
    bus_ports: dict[int, int] = field(default_factory=dict)

    def start(self, port: int) -> None:
        """Start (or restart, with its data and cluster state) the node on ``port``."""
        self.spawn(port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                   "--cluster-port", str(self.bus_ports[port]),  # the bus port; port + 10000 may not exist
                   "--cluster-node-timeout", str(NODE_TIMEOUT_MS))

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def owner_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        node = self.client(next(p for p in self.ports if self.procs[p].poll() is None))  # a live node
        slot = node.execute_command("CLUSTER", "KEYSLOT", key)
        for start, end, master, *_ in node.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise LookupError(slot)

    def replica_of(self, master_port: int) -> int:
        node_id = self.client(master_port).execute_command("CLUSTER", "MYID").decode()
        for port in self.ports:
            info = self.client(port).info("replication")
            if info.get("role") == "slave" and int(info.get("master_port", 0)) == master_port:
                return port
        raise LookupError(node_id)

    def masters(self) -> list[int]:
        return [p for p in self.ports if self.client(p).info("replication").get("role") == "master"]

    def keys_on(self, port: int, match: str = "*") -> list[bytes]:
        return list(self.client(port).scan_iter(match=match, count=1000))

    def _replicas_in_sync(self) -> bool:
        """A replica that has not finished its first sync will not stand in for its master."""
        roles = [self.client(p).info("replication") for p in self.ports]
        replicas = [r for r in roles if r.get("role") == "slave"]
        return len(replicas) == len(self.ports) // 2 and all(r.get("master_link_status") == "up" for r in replicas)

    def wait_ok(self, timeout: float = FAILOVER_BOUND_S) -> None:
        poll(lambda: all(b"cluster_state:ok" in self.client(p).execute_command("CLUSTER", "INFO")
                         for p in self.ports) and self._replicas_in_sync(),
             "the cluster is ok, every replica in sync", timeout)

    def wait_owner(self, key: str, port: int, what: str) -> None:
        """Until every live node says ``port`` serves ``key``'s slot."""
        def agreed() -> bool:
            live = [p for p in self.ports if self.procs[p].poll() is None]
            slot = self.client(live[0]).execute_command("CLUSTER", "KEYSLOT", key)
            for node in live:
                owners = [int(m[1]) for start, end, m, *_ in self.client(node).execute_command("CLUSTER", "SLOTS")
                          if start <= slot <= end]
                if owners != [port]:
                    return False
            return True

        poll(agreed, what)

    def fail_over(self, replica: int, key: str) -> None:
        """``CLUSTER FAILOVER`` on ``replica`` until it serves ``key``'s slot (a manual failover
        gives up after 5 s when the master is slow to answer; it is asked again)."""
        def done() -> bool:
            if self.owner_of(key) == replica:
                return True
            if time.monotonic() - asked[0] > 2 * NODE_TIMEOUT_MS / 1000:
                with contextlib.suppress(redis.RedisError):
                    self.client(replica).execute_command("CLUSTER", "FAILOVER")
                asked[0] = time.monotonic()
            return False

        asked = [time.monotonic()]
        assert self.client(replica).execute_command("CLUSTER", "FAILOVER")
        poll(done, f"the replica on {replica} took over")


@contextlib.contextmanager
def local_cluster(workdir: Path, masters: int = 3) -> Iterator[LocalCluster]:
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("redis-server and redis-cli are needed (make test installs redis-server)")
    ports = distinct_ports(masters * 4)
    cluster = LocalCluster(workdir, binary, ports=ports[: masters * 2])
    cluster.bus_ports = dict(zip(cluster.ports, ports[masters * 2:]))
    try:
        for port in cluster.ports:
            cluster.start(port)
        subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in cluster.ports],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=FAILOVER_BOUND_S)
        cluster.wait_ok()
        yield cluster
    finally:
        cluster.kill_all()


class RetryingChannel:
    """Posts app messages the way a channel does: the same ``client_message_id`` again (after
    the ``Retry-After`` pause) until the gateway acknowledges it. ``answers`` counts 202s and
    the problem codes of the refusals."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.acked: dict[int, str] = {}
        self.answers: collections.Counter[str] = collections.Counter()

    async def send(self, n: int, until: float) -> None:
        body = {"user_id": f"k{n}", "text": f"my card payment {n} was declined but money left",
                "client_message_id": f"k{n}"}
        while time.monotonic() < until:
            resp = await self.client.post("/v1/messages", json=body, headers=APP)
            if resp.status_code in (200, 202):
                self.answers["accepted"] += 1
                self.acked[n] = resp.json()["message_id"]
                return
            assert resp.status_code == 503 and resp.headers["Retry-After"], resp.text
            self.answers[resp.json()["code"]] += 1
            await asyncio.sleep(0.2)


class WorkerProcess:
    """A ``python -m gateway worker`` process for the length of a ``with`` block. Its log goes to
    a file (a pipe nobody reads would stop the worker once full)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "worker"], env={**env, **RESTARTED_WORKER_ENV}, cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=self.log)

    def __enter__(self) -> "WorkerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def alive(self) -> None:
        assert self.proc.poll() is None, "the worker exited: " + self.output()[-8000:]

    def wait_until(self, done: Callable[[], bool], timeout: float = FAILOVER_BOUND_S) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            self.alive()
            assert time.monotonic() < deadline, "the worker did not finish in time: " + self.output()[-4000:]
            time.sleep(0.2)


@pytest.fixture
def worker_processes() -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    """Start worker processes with ``worker_processes(env)``; all are stopped after the test,
    whatever happened in it."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str]) -> WorkerProcess:
        started.append(WorkerProcess(env))
        return started[-1]

    yield start
    for worker in started:
        worker.__exit__()


def run_worker_until(env: dict[str, str], done: Callable[[], bool], timeout: float = FAILOVER_BOUND_S) -> None:
    """A worker process, stopped once ``done()``."""
    with WorkerProcess(env) as worker:
        worker.wait_until(done, timeout)


@dataclass
class LocalSentinel(RedisNodes):
    """A master, a replica and one Sentinel watching them (quorum 1, down after 5 s)."""

    service: str = "desk"
    master: int = 0
    replica: int = 0
    sentinel: int = 0

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel}/{self.service}"

    def start(self, port: int, *extra: str) -> None:
        self.spawn(port, *extra)

    def current_master(self) -> int:
        host, port = self.client(self.sentinel).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(port)

    def sentinel_knows_replica(self) -> bool:
        """A Sentinel learns the replicas from the master's INFO; until then it has none to promote."""
        replicas = self.client(self.sentinel).execute_command("SENTINEL", "REPLICAS", self.service)
        return any(int(dict(zip(r[::2], r[1::2])).get(b"port", 0)) == self.replica for r in replicas)

    def replica_in_sync(self, port: int) -> bool:
        info = self.client(port).info("replication")
        return info.get("role") == "slave" and info.get("master_link_status") == "up"


def _wait_ping(client: redis.Redis, timeout: float = FAILOVER_BOUND_S) -> None:
    poll(client.ping, "redis answers", timeout, every=0.05)


@contextlib.contextmanager
def local_sentinel(workdir: Path) -> Iterator[LocalSentinel]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is needed (make test installs it)")
    master, replica, sentinel = distinct_ports(3)
    ha = LocalSentinel(workdir, binary, master=master, replica=replica, sentinel=sentinel)
    try:
        ha.start(ha.master)
        ha.start(ha.replica, "--replicaof", "127.0.0.1", str(ha.master))
        conf = workdir / "sentinel.conf"  # Sentinel rewrites its configuration file: one of its own
        conf.write_text(f"port {ha.sentinel}\nbind 127.0.0.1\ndir {workdir}\nlogfile {workdir}/sentinel.log\n"
                        f"sentinel monitor {ha.service} 127.0.0.1 {ha.master} 1\n"
                        f"sentinel down-after-milliseconds {ha.service} {NODE_TIMEOUT_MS}\n"
                        f"sentinel failover-timeout {ha.service} {3 * NODE_TIMEOUT_MS}\n")
        ha.procs[ha.sentinel] = subprocess.Popen([binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL)
        _wait_ping(ha.client(ha.sentinel))
        poll(lambda: ha.replica_in_sync(ha.replica) and ha.sentinel_knows_replica(),
             "the replica is in sync and the Sentinel knows it")
        yield ha
    finally:
        ha.kill_all()


def complaints_per_message(client: redis.Redis, prefix: str) -> tuple[int, collections.Counter[str]]:
    """(how many complaints the desk holds, how many complaints took each message id), read from
    every complaint key (not from an index, and not from the message's own record, which names
    one complaint only): a message that made two complaints counts 2."""
    complaints, taken = 0, collections.Counter[str]()
    for key in client.scan_iter(match=f"{prefix}complaint:*", count=1000):
        if client.type(key) != b"string":
            continue
        complaint = decode_complaint(client.get(key))
        complaints += 1
        taken.update({m.message_id for m in complaint.messages})
    return complaints, taken
