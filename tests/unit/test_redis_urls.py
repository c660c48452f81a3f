"""MAAS_REDIS_URL: which URLs name a Redis Cluster, how a cluster URL is read (nodes,
credentials, TLS), and which client `connect` builds for each (no server: clients connect
lazily)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection

from runtime.process import RefusedToStart
from scheduler.backup import main as backup_main
from scheduler.connection import (
    CLUSTER_MIN_CONNECTIONS,
    BadRedisUrl,
    cluster_nodes,
    connect,
    is_cluster,
    is_cluster_url,
)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis+cluster://127.0.0.1:7000", True),
    ("rediss+cluster://h:7000,h:7001", True),
    ("REDIS+CLUSTER://h:7000", True),
    ("Rediss+Cluster://h:7000", True),
    ("redis://127.0.0.1:6379/0", False),
    ("rediss://h:6380", False),
    ("unix:///run/redis.sock", False),
    ("redis-cluster://h:7000", False),
    ("cluster://h:7000", False),
])
def test_is_cluster_url_by_scheme(url: str, expected: bool) -> None:
    assert is_cluster_url(url) is expected


def test_several_nodes_and_the_default_port() -> None:
    nodes, options = cluster_nodes("redis+cluster://10.0.0.1:7000,redis-1,redis-2:7002")
    assert nodes == [("10.0.0.1", 7000), ("redis-1", 6379), ("redis-2", 7002)]
    assert options == {"ssl": False}


def test_a_path_and_a_query_are_not_part_of_the_last_node() -> None:
    nodes, _ = cluster_nodes("redis+cluster://a:7000,b:7001/0?protocol=2")
    assert nodes == [("a", 7000), ("b", 7001)]


def test_an_ipv6_node() -> None:
    nodes, _ = cluster_nodes("redis+cluster://[::1]:7000,127.0.0.1:7001")
    assert nodes == [("::1", 7000), ("127.0.0.1", 7001)]


def test_user_and_password_are_percent_decoded() -> None:
    _, options = cluster_nodes("redis+cluster://app%40acme:p%3As%2Fs%40w@h1:7000,h2:7001")
    assert options == {"ssl": False, "username": "app@acme", "password": "p:s/s@w"}


@pytest.mark.parametrize("url", ["redis+cluster://s%3Acret@h:7000",
                                 "redis+cluster://:s%3Acret@h:7000"])
def test_password_only(url: str) -> None:
    _, options = cluster_nodes(url)
    assert options == {"ssl": False, "password": "s:cret"}


@pytest.mark.parametrize(("url", "ssl"), [("rediss+cluster://h:7000", True),
                                          ("REDISS+CLUSTER://h:7000", True),
                                          ("redis+cluster://h:7000", False)])
def test_rediss_cluster_means_tls(url: str, ssl: bool) -> None:
    assert cluster_nodes(url)[1]["ssl"] is ssl


@pytest.mark.parametrize("url", [
    "redis+cluster://h:notaport",
    "redis+cluster://h:99999",
    "redis+cluster://h:7000,h:-1",
    "redis+cluster://:7000",
    "redis+cluster://h:7000,,h:7001",
    "redis+cluster://",
    "redis+cluster://user:pw@",
])
def test_a_bad_node_is_refused(url: str) -> None:
    with pytest.raises(BadRedisUrl) as bad:
        cluster_nodes(url)
    assert "Redis Cluster URL" in str(bad.value)
    assert isinstance(bad.value, RefusedToStart)  # the process exits 2 with the message


async def test_connect_builds_a_cluster_client_for_a_cluster_url() -> None:
    client = connect("rediss+cluster://app:p%40ss@h1:7000,h2", max_connections=8)
    try:
        assert is_cluster(client) and isinstance(client, RedisCluster)
        startup = client.nodes_manager.startup_nodes
        assert sorted(startup) == ["h1:7000", "h2:6379"]
        for node in startup.values():
            assert node.connection_class is SSLConnection
            assert node.connection_kwargs["username"] == "app"
            assert node.connection_kwargs["password"] == "p@ss"
            assert node.connection_kwargs["socket_timeout"] is not None
            assert node.max_connections == CLUSTER_MIN_CONNECTIONS  # never fewer
    finally:
        await client.aclose()


async def test_connect_without_tls_uses_plain_connections() -> None:
    client = connect("redis+cluster://h1:7000", max_connections=1000)
    try:
        [node] = client.nodes_manager.startup_nodes.values()
        assert node.connection_class is Connection
        assert node.max_connections == 1000
    finally:
        await client.aclose()


@pytest.mark.parametrize("url", ["redis://:pw@127.0.0.1:1/3", "rediss://h:6380/0",
                                 "unix:///run/redis.sock?db=2"])
async def test_connect_builds_a_plain_client_otherwise(url: str) -> None:
    client = connect(url)
    try:
        assert not is_cluster(client)
        assert type(client) is aioredis.Redis
        assert client.connection_pool.connection_kwargs["socket_timeout"] is not None
    finally:
        await client.aclose()


def test_is_cluster_of_other_objects() -> None:
    assert not is_cluster(object())
    assert not is_cluster("redis+cluster://h:7000")


def test_backup_refuses_a_cluster_url_with_what_to_do(capsys: pytest.CaptureFixture[str],
                                                      tmp_path: Path) -> None:
    code = backup_main(["create", "--redis-url", "redis+cluster://127.0.0.1:1,127.0.0.1:2",
                 "--data-dir", str(tmp_path), "--to", str(tmp_path / "out")])
    assert code == 2
    assert "one backup per primary" in capsys.readouterr().err
