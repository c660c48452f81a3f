"""Submits acknowledged only once N replicas hold them (MAAS_REDIS_WAIT_REPLICAS).

Redis replicates asynchronously: a primary that dies right after a submit may take the job
with it, and the replica promoted in its place never saw it. With `replicas` > 0 every
pipeline of submits ends with `WAIT replicas timeout_ms` on the connection that wrote them
(WAIT counts the replicas that have every earlier write of *its own connection*), and a
submit whose WAIT falls short is answered UNAVAILABLE: the caller retries, with the same
request_id where it must not run twice (the first may still run: it is on the primary).

On a Redis Cluster the writes of one pipeline go to several primaries, and the cluster client
picks a pooled connection per command, so WAIT could land on a connection that wrote nothing
and return at once. Here each primary's share of the pipeline goes through a plain
connection to that primary, WAIT last. A slot that moved (MOVED, ASK) or a cluster that is
failing over (TRYAGAIN, CLUSTERDOWN) refreshes the slot map and resends those calls once;
none of these replies means the script ran.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError

from maas.errors import QueueUnreachable
from scheduler.connection import SOCKET_TIMEOUT_S, TRANSIENT_ERRORS, is_cluster
from scheduler.job_types import _Call

# Replies that mean "not run here": the slot moved or the cluster is failing over.
REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)


def _redirected(reply: Any) -> bool:
    return isinstance(reply, REDIRECTS)


def _moving() -> QueueUnreachable:
    return QueueUnreachable("the job's Redis Cluster slot is moving or failing over: retry",
                            retry_delay_s=0.5)


class ReplicaWait:
    def __init__(self, client: aioredis.Redis, replicas: int, timeout_ms: int) -> None:
        self._client = client
        self.replicas = replicas
        self.timeout_ms = timeout_ms
        self._primaries: dict[tuple[str, int], aioredis.Redis] = {}

    async def pipelined(self, calls: Sequence[_Call]) -> list[Any]:
        """Each call's reply (an exception where it failed), as a plain pipeline's; a call
        written to fewer replicas than asked answers QueueUnreachable."""
        if not is_cluster(self._client):
            return await self._on(self._client, calls)
        cluster = cast("RedisCluster", self._client)
        try:
            replies = await self._by_primary(cluster, calls, list(range(len(calls))))
        except TRANSIENT_ERRORS:  # a primary died: learn who replaces it, for the retry
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await cluster.nodes_manager.initialize()
            raise
        again = [i for i, reply in enumerate(replies) if _redirected(reply)]
        if again:
            await cluster.nodes_manager.initialize()
            for i, reply in zip(again, await self._by_primary(cluster, calls, again),
                                strict=True):
                replies[i] = _moving() if _redirected(reply) else reply
        return replies

    async def close(self) -> None:
        for client in self._primaries.values():
            await client.aclose()
        self._primaries.clear()

    async def _by_primary(self, cluster: RedisCluster, calls: Sequence[_Call],
                          indices: list[int]) -> list[Any]:
        groups: dict[tuple[str, int], list[int]] = {}
        for i in indices:
            node = cluster.get_node_from_key(calls[i].keys[0])
            if node is None:  # a slot with no primary: the cluster is failing over
                raise _moving()
            groups.setdefault((str(node.host), int(node.port)), []).append(i)
        sent = await asyncio.gather(*(
            self._on(self._primary(cluster, where), [calls[i] for i in group])
            for where, group in groups.items()))
        replies: dict[int, Any] = {}
        for group, group_replies in zip(groups.values(), sent, strict=True):
            replies.update(zip(group, group_replies, strict=True))
        return [replies[i] for i in indices]

    async def _on(self, client: aioredis.Redis, calls: Sequence[_Call]) -> list[Any]:
        """The calls and WAIT on one connection (a pipeline is one connection's)."""
        pipe = client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        *replies, acked = await pipe.execute(raise_on_error=False)
        if isinstance(acked, Exception) or int(acked) < self.replicas:
            short = QueueUnreachable(
                f"the queue stored the job, but {acked if isinstance(acked, int) else 0} of "
                f"the {self.replicas} Redis replicas asked for (MAAS_REDIS_WAIT_REPLICAS) "
                f"confirmed it within {self.timeout_ms} ms: retry with the same request_id",
                retry_delay_s=1.0)
            return [r if isinstance(r, Exception) else short for r in replies]
        return replies

    def _primary(self, cluster: RedisCluster, where: tuple[str, int]) -> aioredis.Redis:
        client = self._primaries.get(where)
        if client is None:
            node: ClusterNode | None = cluster.get_node(host=where[0], port=where[1])
            options = node.connection_kwargs if node is not None else {}
            client = self._primaries[where] = aioredis.Redis(
                host=where[0], port=where[1], username=options.get("username"),
                password=options.get("password"),
                ssl=node is not None and "SSL" in node.connection_class.__name__,
                decode_responses=False, socket_connect_timeout=2.0,
                # WAIT blocks up to timeout_ms: the socket waits longer.
                socket_timeout=SOCKET_TIMEOUT_S + self.timeout_ms / 1000)
        return client
