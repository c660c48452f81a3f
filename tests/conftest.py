"""Shared fixtures: a real redis-server on a free port, and the real processes of a cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

import maas
from maas.api_keys import ensure_key_file
from maas.cli.up import (
    LocalCluster,
    free_port,
    register_demo_models,
    wait_models_ready,
    wait_ready,
)
from scheduler.connection import connect
from tests.cluster_node import check_slots, start_cluster_node
from tests.redis_cluster import RedisClusterServer, start_redis_cluster


@dataclass
class RedisServer:
    url: str
    port: int
    proc: subprocess.Popen[bytes]
    dir: Path

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def start_redis_server(directory: Path, port: int | None = None,
                       appendonly: bool = False) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:  # a missing binary fails, never skips
        pytest.fail("redis-server is not on PATH; install it (apt-get install redis-server)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
         "--save", "", "--appendonly", "yes" if appendonly else "no",
         "--appendfsync", "always", "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = RedisServer(f"redis://127.0.0.1:{port}/0", port, proc, directory)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if server.client().ping():
                return server
        except redis.ConnectionError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail(f"redis-server did not start on port {port}")


@contextlib.contextmanager
def running_redis_server(directory: Path) -> Iterator[RedisServer]:
    """start_redis_server, stopped on leaving."""
    server = start_redis_server(directory)
    try:
        yield server
    finally:
        server.proc.terminate()
        server.proc.wait(10)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """Our own server (never the shared one on 6379), emptied for each test."""
    server_client = redis_server.client()
    server_client.flushall()
    server_client.close()
    return redis_server.url


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio Redis client of this test's redis-server (a test file may define its own)."""
    c = connect(redis_url)
    yield c
    await c.aclose()


@pytest.fixture
async def any_redis_client(any_redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client of `any_redis_url`: a test that asks for it runs on a plain Redis,
    the slot-checked one-node cluster and the 3 + 3 Redis Cluster (#15)."""
    c = connect(any_redis_url)
    yield c
    await c.aclose()


@pytest.fixture(scope="session")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Redis Cluster (tests/cluster_node.py); its URL."""
    proc, port = start_cluster_node(tmp_path_factory.mktemp("cluster-node"))
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def slot_checked_url(cluster_node: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The one-node cluster, emptied, with slot-checked scripts for this test."""
    server_client = redis.Redis.from_url(cluster_node)
    server_client.flushall()
    server_client.close()
    check_slots(monkeypatch)
    return cluster_node


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """A Redis Cluster of 3 primaries and 3 replicas (tests/redis_cluster.py)."""
    server = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield server
    server.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServer,
                      monkeypatch: pytest.MonkeyPatch) -> str:
    """The 3 + 3 cluster, emptied, as maas names it (`redis+cluster://`), with slot-checked
    scripts for this test."""
    redis_cluster.flush()
    check_slots(monkeypatch)
    return redis_cluster.url


@pytest.fixture(params=["redis", "redis-cluster"])
def queue_redis(request: pytest.FixtureRequest) -> dict[str, RedisClusterServer]:
    """`start_cluster`'s keywords for the Redis a test's cluster runs on: a fault test that
    asks for it runs twice, on a private redis-server and on the shared 3 + 3 Redis Cluster
    (#15)."""
    if request.param == "redis":
        return {}
    return {"redis_cluster": request.getfixturevalue("redis_cluster")}


@pytest.fixture(params=["redis", "cluster", "redis-cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """A test that asks for it runs three times: on a plain Redis, on the slot-checked
    one-node Redis Cluster reached by a plain client (what a cluster refuses fails there),
    and on a real 3 + 3 Redis Cluster through redis-py's cluster client."""
    fixture = {"redis": "redis_url", "cluster": "slot_checked_url",
               "redis-cluster": "redis_cluster_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@dataclass
class Cluster:
    target: str
    local: LocalCluster
    # The private redis-server, or the Redis Cluster the processes share (its `url` is
    # `redis+cluster://...`; `client()` a cluster client).
    redis: RedisServer | RedisClusterServer
    # With auth="on": the admin key the gateway installed (MAAS_ADMIN_KEY_FILE).
    admin_key: str = ""

    def service(self, name: str) -> subprocess.Popen[bytes]:
        found = next(s for s in self.local.services if s.name == name)
        assert found.proc is not None
        return found.proc


def start_cluster(tmp: Path, workers: int = 2,
                  service_env: dict[str, dict[str, str]] | None = None,
                  appendonly: bool = False, launcher: str = "",
                  redis_url_for: Callable[[RedisServer], str] | None = None,
                  redis_cluster: RedisClusterServer | None = None,
                  **settings: str) -> Cluster:
    """Scheduler, gateway and workers as `maas up` starts them, on a private redis-server.
    `service_env`: variables of one service (by name: "gateway", "worker-1", ...).
    `launcher`: a module that runs the gateway and workers (`python -m LAUNCHER worker ...`).
    `redis_url_for`: the URL the processes use for the server (e.g. through a proxy).
    `redis_cluster`: a running Redis Cluster (tests/redis_cluster.py) to use instead of a
    private redis-server; it is emptied first and outlives the cluster.
    With auth="on", the gateway installs an admin key (`Cluster.admin_key`) at start."""
    server: RedisServer | RedisClusterServer
    if redis_cluster is None:
        server = start_redis_server(tmp / "redis", appendonly=appendonly)
        url = redis_url_for(server) if redis_url_for else server.url
    else:
        redis_cluster.flush()
        server, url = redis_cluster, redis_cluster.url
    port = free_port()
    env = dict(os.environ)
    env.update(MAAS_REDIS_URL=url, MAAS_DATA_DIR=str(tmp / "data"),
               MAAS_GATEWAY_PORT=str(port), MAAS_INFER_LEASE_MS="1000",
               MAAS_REAPER_INTERVAL_MS="200", MAAS_SHUTDOWN_GRACE_S="2",
               MAAS_LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
    env.update({f"MAAS_{k.upper()}": v for k, v in settings.items()})
    admin_key = ""
    if settings.get("auth") == "on":
        (tmp / "data").mkdir(parents=True, exist_ok=True)
        admin_key = ensure_key_file(tmp / "data" / "admin.key")
        env["MAAS_ADMIN_KEY_FILE"] = str(tmp / "data" / "admin.key")
    local = LocalCluster(env, tmp / "data")
    py = sys.executable
    own = service_env or {}
    local.add("scheduler", [py, "-m", "scheduler"], own.get("scheduler"))
    run = [py, "-m", launcher] if launcher else [py, "-m"]
    local.add("gateway", [*run, "gateway"], own.get("gateway"))
    for i in range(workers):
        name = f"worker-{i + 1}"
        local.add(name, [*run, "worker", "--id", name], own.get(name))
    target = f"127.0.0.1:{port}"
    cluster = Cluster(target, local, server, admin_key)
    try:
        wait_ready(target, local)
        register_demo_models(target, admin_key or None)
        wait_models_ready(target, ["mlp", "cnn"], local, admin_key or None)
    except BaseException:
        stop_cluster(cluster)  # nothing of a cluster that did not start outlives the test
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    cluster.local.stop(grace_s=5)
    if isinstance(cluster.redis, RedisServer):  # a shared Redis Cluster stays up
        cluster.redis.proc.terminate()
        cluster.redis.proc.wait(10)


def sdk_client_fixture() -> Any:
    """A module-scoped `client` fixture, the SDK on the module's own `cluster` fixture; an e2e
    module takes it as `client = sdk_client_fixture()`."""

    @pytest.fixture(scope="module")
    def client(cluster: Cluster) -> Iterator[maas.Client]:
        with maas.Client(cluster.target, timeout_s=60) as sdk:
            yield sdk

    return client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running cluster with demo models `mlp` and `cnn` (seeded weights, as `maas up`)."""
    running = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield running
    stop_cluster(running)
