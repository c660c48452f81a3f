"""`maas up --redis-cluster`: a local Redis Cluster of 3 primaries and 3 replicas instead of
one redis-server, to try maas on a cluster in one command (MAAS_REDIS_URL=redis+cluster://).

Six redis-server processes on free ports, supervised as any service of `maas up` (one that
dies is restarted and rejoins: a failed-over primary comes back as a replica), each with AOF
(`appendfsync always`), `noeviction` and the data directory's Redis password (in a config
file, never on a command line), joined once with `redis-cli --cluster create`. The nodes'
ports are kept in <data-dir>/redis-cluster/ports so a later `maas up --redis-cluster` starts
the same cluster with its data.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Collection
from pathlib import Path
from urllib.parse import quote

from maas.cli.cluster import LocalCluster
from maas.cli.local_redis import answers_ping, redis_config, redis_password

PRIMARIES, REPLICAS = 3, 1
# Redis refuses a cluster node whose bus port (port + 10000) would pass 65535.
HIGHEST_PORT = 55535


def start_redis_cluster(cluster: LocalCluster, argv_prefix: list[str] | None = None,
                        appendfsync: str = "always") -> str:
    """Starts (or restarts) the local cluster; returns its redis+cluster:// URL, which
    carries the password: print it masked."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise SystemExit("maas up: redis-server and redis-cli must be on PATH for "
                         "--redis-cluster (Debian/Ubuntu: sudo apt-get install -y "
                         "redis-server)")
    root = cluster.data_dir / "redis-cluster"
    root.mkdir(parents=True, exist_ok=True)
    password = redis_password(cluster.data_dir)
    ports = _ports(root, PRIMARIES * (1 + REPLICAS))
    for i, port in enumerate(ports, 1):
        node_dir = root / str(port)
        node_dir.mkdir(exist_ok=True)
        # masterauth: a replica authenticates to its primary with the same password.
        config = redis_config(node_dir, password, extra=f'masterauth "{password}"\n')
        cluster.add(f"redis-{i}", [
            *(argv_prefix or []), binary, str(config), "--port", str(port),
            "--bind", "127.0.0.1", "--dir", str(node_dir), "--appendonly", "yes",
            "--appendfsync", appendfsync, "--maxmemory-policy", "noeviction", "--save", "",
            "--protected-mode", "yes", "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"])
    deadline = time.monotonic() + 30
    for port in ports:
        while not answers_ping(port, password):
            if time.monotonic() > deadline:
                raise SystemExit("maas up: a Redis Cluster node did not start; see its log")
            time.sleep(0.1)
    if _cluster_info(cli, ports[0], password).get("cluster_known_nodes") == "1":
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                        "--cluster-replicas", str(REPLICAS), "--cluster-yes"],
                       env={**os.environ, "REDISCLI_AUTH": password}, check=True,
                       stdout=subprocess.DEVNULL, timeout=60)
    while any(_cluster_info(cli, p, password).get("cluster_state") != "ok" for p in ports):
        if time.monotonic() > deadline + 30:
            raise SystemExit("maas up: the local Redis Cluster did not reach state ok")
        time.sleep(0.2)
    nodes = ",".join(f"127.0.0.1:{p}" for p in ports)
    return f"redis+cluster://:{quote(password, safe='')}@{nodes}"


def _ports(root: Path, count: int) -> list[int]:
    """The ports kept from an earlier start, else new free ones (with free bus ports)."""
    kept = root / "ports"
    if kept.exists():
        earlier = [int(p) for p in kept.read_text().split()]
        if busy := [p for p in earlier if not _free(p)]:
            raise SystemExit(f"maas up: ports {busy} of the local Redis Cluster in {root} "
                             "are taken; free them, or delete that directory for a new cluster")
        return earlier
    ports: list[int] = []
    while len(ports) < count:
        ports.append(cluster_port(ports))
    kept.write_text(" ".join(map(str, ports)) + "\n")
    return ports


def cluster_port(taken: Collection[int] = ()) -> int:
    """A free port for a cluster node, not in `taken`, whose bus port (+10000) is free too."""
    for _ in range(1000):
        port = random.randint(20000, HIGHEST_PORT)
        if port not in taken and _free(port) and _free(port + 10000):
            return port
    raise SystemExit("maas up: no free port pair for a Redis Cluster node")


def _free(port: int) -> bool:
    """Whether a server could listen on `port` now (SO_REUSEADDR, as redis-server: the
    connections a stopped node closed may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _cluster_info(cli: str, port: int, password: str) -> dict[str, str]:
    done = subprocess.run([cli, "-p", str(port), "cluster", "info"], capture_output=True,
                          text=True, env={**os.environ, "REDISCLI_AUTH": password}, timeout=10)
    return dict(line.strip().split(":", 1) for line in done.stdout.splitlines()
                if ":" in line)
