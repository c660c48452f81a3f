"""A real Redis Cluster for the tests of issue #15: 3 primaries and 3 replicas.

Six `redis-server --cluster-enabled yes` on free ports, joined with
`redis-cli --cluster create --cluster-replicas 1`. maas reaches it by a `redis+cluster://` URL
listing every node (scheduler/connection.py). Nodes can be killed (failover tests) and asked
who is primary of a key's slot.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from maas.cli.local_redis_cluster import cluster_port


@dataclass
class ClusterNodeProc:
    port: int
    proc: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)


@dataclass
class RedisClusterServer:
    nodes: list[ClusterNodeProc]
    dir: Path
    appendonly: bool = True

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def client(self) -> RedisCluster:
        first = self.nodes[0]
        return RedisCluster(host="127.0.0.1", port=first.port, socket_timeout=5)

    def primaries(self) -> list[ClusterNodeProc]:
        """The nodes that are primaries now."""
        return [n for n in self.nodes
                if n.proc.poll() is None and n.client().info("replication")["role"] == "master"]

    def primary_of(self, key: str) -> ClusterNodeProc:
        """The node that is primary of the key's slot now."""
        with self.client() as c:
            node = c.get_node_from_key(key)
            return next(n for n in self.nodes if n.port == node.port)

    def restart(self, node: ClusterNodeProc) -> None:
        """Starts a stopped node again on its port and directory: with its nodes.conf it
        rejoins the cluster (a primary that was failed over comes back as a replica)."""
        binary = shutil.which("redis-server")
        assert binary is not None and node.proc.poll() is not None
        node.proc = _spawn(binary, node.port, self.dir / str(node.port), self.appendonly)
        _wait_ping(node)

    def migrate_slot(self, key: str, to: ClusterNodeProc, *, keys_per_step: int = 1,
                     pause_s: float = 0.01) -> int:
        """Moves the slot of `key` to primary `to` while clients go on, by the steps
        `redis-cli --cluster reshard` takes for each slot (IMPORTING on the target,
        MIGRATING on the source, MIGRATE the keys a few at a time, then SETSLOT NODE
        everywhere), slowed by `pause_s` between steps so that calls meet the slot half
        moved (ASK, TRYAGAIN). Returns how many keys moved."""
        source = self.primary_of(key)
        assert source.port != to.port
        src, dst = source.client(), to.client()
        slot = int(src.cluster("keyslot", key))
        src_id, dst_id = src.cluster("myid"), dst.cluster("myid")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        moved = 0
        while batch := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, keys_per_step):
            src.execute_command("MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *batch)
            moved += len(batch)
            time.sleep(pause_s)
        for node in (dst, src, *(n.client() for n in self.primaries())):
            node.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        return moved

    def flush(self) -> None:
        with self.client() as c:
            c.flushall(target_nodes=RedisCluster.PRIMARIES)

    def stop(self) -> None:
        """SIGTERM to every node (each fsyncs its AOF and exits); SIGKILL to any still up
        after 10 s (a loaded machine), so no node outlives the tests."""
        for node in self.nodes:
            if node.proc.poll() is None:
                node.proc.terminate()
        deadline = time.monotonic() + 10
        for node in self.nodes:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(10)


def sync_client(url: str) -> redis.Redis:
    """A blocking client of `url`: a cluster client for `redis+cluster://` URLs (typed as
    the one-node client: it offers the commands tests use, routed by key)."""
    if url.startswith("redis+cluster://"):
        host, _, port = url.removeprefix("redis+cluster://").split(",")[0].rpartition(":")
        return RedisCluster(host=host, port=int(port), socket_timeout=5)  # type: ignore[return-value]
    return redis.Redis.from_url(url)


def start_redis_cluster(directory: Path, *, primaries: int = 3, replicas: int = 1,
                        appendonly: bool = True) -> RedisClusterServer:
    """A formed cluster (cluster_state ok on every node); fails (never skips) if it cannot."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        pytest.fail("redis-server and redis-cli must be on PATH (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    nodes: list[ClusterNodeProc] = []
    for _ in range(primaries * (1 + replicas)):
        port = cluster_port()
        (directory / str(port)).mkdir()
        nodes.append(ClusterNodeProc(port, _spawn(binary, port, directory / str(port),
                                                  appendonly)))
    server = RedisClusterServer(nodes, directory, appendonly)
    try:
        for node in nodes:
            _wait_ping(node)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60)
        _wait_formed(nodes, replicas)
    except BaseException:
        server.stop()
        raise
    return server


def _spawn(binary: str, port: int, node_dir: Path, appendonly: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
         "--save", "", "--appendonly", "yes" if appendonly else "no",
         "--appendfsync", "always", "--maxmemory-policy", "noeviction",
         "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
         "--cluster-node-timeout", "1000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ping(node: ClusterNodeProc) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if node.client().ping():
                return
        except redis.ConnectionError:
            time.sleep(0.05)
    pytest.fail(f"redis-server in cluster mode did not start on port {node.port}")


def _wait_formed(nodes: list[ClusterNodeProc], replicas: int) -> None:
    """Every node sees state ok, and every replica has finished its first sync."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        infos = [n.client().cluster("info") for n in nodes]
        roles = [n.client().info("replication") for n in nodes]
        synced = all(r.get("master_link_status") == "up"
                     for r in roles if r["role"] == "slave")
        if (all(i["cluster_state"] == "ok" for i in infos) and synced
                and sum(r["role"] == "slave" for r in roles) == len(nodes) * replicas
                // (1 + replicas)):
            return
        time.sleep(0.1)
    pytest.fail("the Redis Cluster did not form in 30 s")
