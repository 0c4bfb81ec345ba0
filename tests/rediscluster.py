"""A small local Redis Cluster for tests: three masters, each with one replica, on free
loopback ports, made with the real ``redis-cli --cluster create``."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import redis

from plugins.testkit import free_port


@dataclass
class LocalCluster:
    ports: list[int]
    workdir: Path
    binary: str
    bus_ports: dict[int, int] = field(default_factory=dict)
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    def start(self, port: int) -> None:
        """Start (or restart, with its data and cluster state) the node on ``port``."""
        node_dir = self.workdir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        self.procs[port] = subprocess.Popen(
            [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-port", str(self.bus_ports[port]),  # the bus port; port + 10000 may not exist
             "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(node_dir),
             "--repl-diskless-sync-delay", "0", "--logfile", str(node_dir / "redis.log")],
            stdout=subprocess.DEVNULL)
        for _ in range(200):
            with contextlib.suppress(redis.RedisError):
                if self.client(port).ping():
                    return
            time.sleep(0.05)
        raise TimeoutError(f"node {port} did not start")

    def kill(self, port: int) -> None:
        self.procs[port].kill()
        self.procs[port].wait(5)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

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

    def wait_ok(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(b"cluster_state:ok" in self.client(p).execute_command("CLUSTER", "INFO")
                       for p in self.ports) and self._replicas_in_sync():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise TimeoutError("cluster did not become ok")


@contextlib.contextmanager
def local_cluster(workdir: Path, masters: int = 3) -> Iterator[LocalCluster]:
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("redis-server and redis-cli are needed (make test installs redis-server)")
    cluster = LocalCluster([free_port() for _ in range(masters * 2)], workdir, binary)
    cluster.bus_ports = {port: free_port() for port in cluster.ports}
    try:
        for port in cluster.ports:
            cluster.start(port)
        subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in cluster.ports],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=60)
        cluster.wait_ok()
        yield cluster
    finally:
        for proc in cluster.procs.values():
            proc.kill()
        for proc in cluster.procs.values():
            proc.wait(5)
