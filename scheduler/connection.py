"""The one Redis client of a process, and the errors that mean "Redis is away for now".

`MAAS_REDIS_URL` names one Redis (`redis://`, `rediss://`, `unix://`) or a Redis Cluster
(`redis+cluster://[user:password@]host:port[,host:port...]`, `rediss+cluster://` with TLS):
any reachable nodes of it; the client learns the rest from CLUSTER SLOTS and follows MOVED
and failovers. Every key of one model shares a hash tag (scheduler/keys.py), so every script
and transaction touches one slot; the few commands that span models run per slot.
"""

from __future__ import annotations

import logging
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis._parsers.base import BaseParser
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    AskError,
    ClusterError,
    OutOfMemoryError,
    RedisClusterException,
    RedisClusterUnreachableError,
    ResponseError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from runtime.process import RefusedToStart


class StreamMoved(ResponseError):
    """`UNBLOCKED the stream key no longer exists`: a blocking stream read ended because its
    key left the node (a Redis Cluster slot migrated, or the stream was deleted). Read again:
    the cluster client follows the key to its new node."""


# redis-py builds an error reply's exception from its first word; UNBLOCKED is not one it
# knows, so it would be a bare ResponseError (a bug, to a caller).
BaseParser.EXCEPTION_CLASSES.setdefault("UNBLOCKED", StreamMoved)

# Exceptions a caller should answer with UNAVAILABLE (retry later), never INTERNAL. On a
# Redis Cluster also: a slot moving or failing over for longer than the cluster client's
# redirections and retries (ClusterError "TTL exhausted", CLUSTERDOWN, TRYAGAIN, a stale
# MOVED/ASK in a pipeline), a slot no node serves, and blocking reads whose key moved.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, ClusterError,
    TryAgainError, AskError, SlotNotCoveredError, RedisClusterUnreachableError, StreamMoved)


SOCKET_TIMEOUT_S = 10.0  # > every BLOCK of ours (at most 1 s)
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
# Per node of a cluster: a worker holds one blocking read per model it serves (consumer.py).
CLUSTER_MIN_CONNECTIONS = 64


class BadRedisUrl(RefusedToStart):
    """MAAS_REDIS_URL names a server of the wrong kind (a cluster URL for a plain Redis, a
    plain URL for a node of a multi-node cluster) or cannot be parsed."""


def is_cluster_url(url: str) -> bool:
    scheme, separator, _ = url.partition("://")
    return bool(separator) and scheme.lower() in CLUSTER_SCHEMES


def is_cluster(client: object) -> bool:
    """Whether `client` (from connect) talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def connect(url: str, *, max_connections: int = 256) -> aioredis.Redis:
    """A client with bounded timeouts and retries; binary replies (payloads are protobuf).

    Every command has a deadline (socket_timeout, above the longest BLOCK we use): a reply
    lost with a Redis that died must not leave a caller waiting forever — a worker stuck in
    COMPLETE would keep renewing the leases of jobs it will never finish.
    """
    if is_cluster_url(url):
        return _connect_cluster(url, max_connections)
    # A plain pool (a blocking one costs ~0.25 ms per request at c=1, measured with
    # bench.serving); bursts that could exceed it (cancels) are bounded by their callers.
    pool = aioredis.ConnectionPool.from_url(
        url,
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        max_connections=max_connections,
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes its pool


def cluster_nodes(url: str) -> tuple[list[tuple[str, int]], dict[str, str | bool]]:
    """The (host, port) pairs of a cluster URL and its connection options (credentials,
    TLS)."""
    scheme, rest = url.split("://", 1)
    auth, _, hosts = rest.rpartition("@")
    hosts = hosts.split("/", 1)[0].split("?", 1)[0]
    nodes = []
    for part in hosts.split(","):
        parsed = urlsplit(f"redis://{part}")
        try:
            port = parsed.port or 6379
        except ValueError as exc:
            raise BadRedisUrl(f"bad node {part!r} in the Redis Cluster URL: {exc}") from exc
        if not parsed.hostname:
            raise BadRedisUrl(f"bad node {part!r} in the Redis Cluster URL: no host")
        nodes.append((parsed.hostname, port))
    options: dict[str, str | bool] = {"ssl": scheme.lower().startswith("rediss")}
    if auth:
        user, has_password, password = auth.partition(":")
        if has_password:
            options["password"] = unquote(password)
            if user:
                options["username"] = unquote(user)
        else:
            options["password"] = unquote(user)
    return nodes, options


def _connect_cluster(url: str, max_connections: int) -> aioredis.Redis:
    nodes, options = cluster_nodes(url)
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        decode_responses=False,
        socket_connect_timeout=2.0,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_keepalive=True,
        health_check_interval=10,
        max_connections=max(max_connections, CLUSTER_MIN_CONNECTIONS),
        require_full_coverage=True,
        **options,  # type: ignore[arg-type]
    )
    # RedisCluster offers every command maas sends (it routes each by its keys); the type
    # names the one-node client that the call sites are written against.
    return cast("aioredis.Redis", client)


async def read_streams(client: aioredis.Redis, streams: dict[str, str], *, count: int,
                       block_ms: int | None, group: tuple[str, str] | None = None) -> Any:
    """XREAD (or XREADGROUP as `group` = (group, consumer)) of streams of one slot.

    On a Redis Cluster it goes straight to the slot's node: redis-py's cluster client cannot
    find these commands' keys itself (they follow STREAMS) and would ask the server first
    (COMMAND GETKEYS), a second round trip per read on the hot path; a MOVED reply is still
    followed."""
    args: list[Any] = ["XREADGROUP", "GROUP", *group] if group else ["XREAD"]
    args += ["COUNT", count]
    if block_ms is not None:
        args += ["BLOCK", block_ms]
    args += ["STREAMS", *streams, *streams.values()]
    if is_cluster(client):
        node = cast("RedisCluster", client).get_node_from_key(next(iter(streams)))
        return await client.execute_command(*args, target_nodes=node)  # type: ignore[no-untyped-call]
    return await client.execute_command(*args)  # type: ignore[no-untyped-call]


async def check_server(client: aioredis.Redis) -> None:
    """At a process's start: refuses a URL of the wrong kind (with what to write instead)
    and a Redis that may evict jobs."""
    await _check_kind(client)
    await check_durability(client)


async def _check_kind(client: aioredis.Redis) -> None:
    if is_cluster(client):
        try:
            await cast("RedisCluster", client).initialize()
        except RedisClusterUnreachableError as exc:  # no node answered: away, not wrong
            raise RedisConnectionError(str(exc)) from exc
        except RedisClusterException as exc:
            raise BadRedisUrl(
                f"MAAS_REDIS_URL is a Redis Cluster URL, but the server is not a cluster "
                f"node ({exc}); use redis://host:port for a single Redis") from exc
        return
    try:
        info = await client.info("cluster")
    except ResponseError:  # a managed Redis that hides INFO sections
        return
    if info.get("cluster_enabled") in (1, "1", b"1"):
        known = (await client.cluster("info")).get("cluster_known_nodes", 1)
        if int(known) > 1:
            raise BadRedisUrl(
                "the Redis at MAAS_REDIS_URL is a node of a Redis Cluster: name the cluster "
                "with redis+cluster://host:port[,host:port...] (a plain URL reaches one node, "
                "which refuses the other nodes' keys)")


async def primaries_short_of_replicas(client: aioredis.Redis, wanted: int) -> list[str]:
    """The primaries (host:port; "" for one Redis) with fewer than `wanted` connected
    replicas: with MAAS_REDIS_WAIT_REPLICAS=wanted, every submit to them is refused."""
    if is_cluster(client):
        found = cast("dict[str, dict[str, Any]]", await cast("RedisCluster", client).info(
            "replication", target_nodes=RedisCluster.PRIMARIES))
    else:
        found = {"": await client.info("replication")}
    return [node for node, info in found.items()
            if int(info.get("connected_slaves", 0)) < wanted]


class EvictingRedis(RefusedToStart):
    """The Redis server may evict keys: accepted jobs could vanish. maas refuses to run."""


async def check_durability(client: aioredis.Redis) -> None:
    """Refuses a Redis whose maxmemory-policy may evict keys (any policy but noeviction).

    Managed Redis that hides CONFIG is trusted, with a warning in the log.
    """
    try:
        if is_cluster(client):  # every primary of a cluster: {node: {name: value}}
            replies = list(cast("dict[str, dict[str, str]]", (await cast(
                "RedisCluster", client).config_get(
                    "maxmemory-policy", target_nodes=RedisCluster.PRIMARIES))).values())
        else:
            replies = [cast("dict[str, str]", await client.config_get("maxmemory-policy"))]
    except ResponseError as exc:
        logging.getLogger(__name__).warning("cannot read maxmemory-policy (%s); make sure it "
                                            "is noeviction", exc)
        return
    for reply in replies:
        policy = reply.get("maxmemory-policy")
        if policy in (None, "noeviction", b"noeviction"):
            continue
        raise EvictingRedis(
            f"Redis maxmemory-policy is {policy!r}: it may evict queued jobs. Set "
            "`maxmemory-policy noeviction` (redis.conf or CONFIG SET) and start again.")


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis at maxmemory with noeviction refuses writes with an OOM error (nothing evicted)."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and str(exc).startswith("OOM"))
