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
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    def url(self, port: int) -> str:
        return f"redis://127.0.0.1:{port}/0"

    def owner_of(self, key: str) -> int:
        """The port of the master serving ``key``'s slot."""
        slot = self.client(self.ports[0]).execute_command("CLUSTER", "KEYSLOT", key)
        for start, end, master, *_ in self.client(self.ports[0]).execute_command("CLUSTER", "SLOTS"):
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

    def wait_ok(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if all(b"cluster_state:ok" in self.client(p).execute_command("CLUSTER", "INFO")
                       for p in self.ports):
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
    cluster = LocalCluster([free_port() for _ in range(masters * 2)])
    try:
        for port in cluster.ports:
            node_dir = workdir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            cluster.procs[port] = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-port", str(free_port()),  # the bus port; port + 10000 may not exist
                 "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", str(node_dir)],
                stdout=subprocess.DEVNULL)
        for port in cluster.ports:
            for _ in range(100):
                with contextlib.suppress(redis.RedisError):
                    if cluster.client(port).ping():
                        break
                time.sleep(0.05)
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
