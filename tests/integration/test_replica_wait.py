"""MAAS_REDIS_WAIT_REPLICAS (#15): a submit is acknowledged only once N replicas hold it.

On one Redis without a replica, on one with a replica, and on the 3 + 3 Redis Cluster, where
each primary's share of a pipeline is written and WAITed on one connection to that primary.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from maas.errors import QueueUnreachable
from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind
from scheduler import keys
from scheduler.connection import connect, primaries_short_of_replicas
from scheduler.queue import JobQueue, SubmitStatus, new_job_id
from tests.conftest import RedisServer, start_redis_server
from tests.redis_cluster import ClusterNodeProc, RedisClusterServer

MODELS = ["alpha", "beta", "gamma", "delta"]  # hash tags spread over the cluster's primaries


def envelope(model: str, reply_to: str = "") -> JobEnvelope:
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=model,
                       model_version="1", reply_to=reply_to, max_attempts=3,
                       infer=InferTask(request_id="r"))


@pytest.fixture
def primary_and_replica(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = start_redis_server(tmp_path / "primary")
    replica = start_redis_server(tmp_path / "replica")
    replica.client().replicaof("127.0.0.1", primary.port)
    deadline = time.monotonic() + 10
    while replica.client().info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    yield primary, replica
    for server in (replica, primary):
        server.proc.terminate()
        server.proc.wait(10)


async def test_without_a_replica_a_submit_is_refused_as_unavailable(redis_url: str) -> None:
    client = connect(redis_url)
    queue = JobQueue(client, wait_replicas=1, wait_timeout_ms=100)
    try:
        await queue.ensure_group("alpha")
        job = envelope("alpha")
        started = time.monotonic()
        with pytest.raises(QueueUnreachable, match="0 of the 1 Redis replicas"):
            await queue.submit(job)
        assert 0.09 < time.monotonic() - started < 5  # WAIT waited its timeout, no longer
        [refused] = await queue.submit_many([envelope("alpha", reply_to="r")], lean=True)
        assert isinstance(refused, QueueUnreachable)
        # Stored on the primary all the same: the caller retries with the same request_id.
        assert await client.exists(keys.job("alpha", job.job_id))
    finally:
        await queue.aclose()
        await client.aclose()


async def test_with_a_replica_every_acknowledged_submit_is_on_it(
        primary_and_replica: tuple[RedisServer, RedisServer]) -> None:
    primary, replica = primary_and_replica
    client = connect(primary.url)
    queue = JobQueue(client, wait_replicas=1, wait_timeout_ms=2000)
    try:
        await queue.ensure_group("alpha")
        jobs = [envelope("alpha") for _ in range(20)]
        outcomes = await queue.submit_many(jobs)
        assert outcomes == [(SubmitStatus.CREATED, j.job_id) for j in jobs]
        one = envelope("alpha")
        assert await queue.submit(one) == (SubmitStatus.CREATED, one.job_id)
        # No wait here: WAIT returned once the replica had every one of them.
        seen = replica.client()
        for job in [*jobs, one]:
            assert seen.exists(keys.job("alpha", job.job_id))
    finally:
        await queue.aclose()
        await client.aclose()


async def test_on_a_redis_cluster_each_primary_waits_for_its_replica(
        redis_cluster: RedisClusterServer) -> None:
    redis_cluster.flush()
    primaries = {redis_cluster.primary_of(keys.stream(m)).port for m in MODELS}
    assert len(primaries) >= 2, "the models' slots should span several primaries"
    client = connect(redis_cluster.url)
    queue = JobQueue(client, wait_replicas=1, wait_timeout_ms=2000)
    try:
        for model in MODELS:
            await queue.ensure_group(model)
        jobs = [envelope(m) for m in MODELS for _ in range(5)]
        lean = [envelope(m, reply_to=keys.reply_stream(m, "gw")) for m in MODELS]
        outcomes = await queue.submit_many([*jobs, *lean], lean=True)
        assert outcomes == [(SubmitStatus.CREATED, j.job_id) for j in [*jobs, *lean]]
        for job in jobs:  # on the replica of its primary, read with READONLY
            assert _replica_of(redis_cluster, keys.job(job.model, job.job_id)).exists(
                keys.job(job.model, job.job_id))
    finally:
        await queue.aclose()
        await client.aclose()


async def test_on_a_redis_cluster_a_frozen_replica_fails_the_wait(
        redis_cluster: RedisClusterServer) -> None:
    """WAIT runs on the connection that wrote: with the replica frozen it cannot be met (a
    WAIT on another pooled connection, which wrote nothing, would return at once)."""
    redis_cluster.flush()
    client = connect(redis_cluster.url)
    queue = JobQueue(client, wait_replicas=1, wait_timeout_ms=200)
    replica = _replica_node(redis_cluster, keys.stream("alpha"))
    try:
        await queue.ensure_group("alpha")
        replica.proc.send_signal(signal.SIGSTOP)  # well under cluster-node-timeout (1 s)
        try:
            [outcome] = await queue.submit_many([envelope("alpha")])
        finally:
            replica.proc.send_signal(signal.SIGCONT)
        assert isinstance(outcome, QueueUnreachable), outcome
    finally:
        await queue.aclose()
        await client.aclose()


def _replica_node(server: RedisClusterServer, key: str) -> ClusterNodeProc:
    primary = server.primary_of(key)
    for node in server.nodes:
        info = node.client().info("replication")
        if info["role"] == "slave" and info["master_port"] == primary.port:
            return node
    raise AssertionError(f"no replica of the primary on port {primary.port}")


def _replica_of(server: RedisClusterServer, key: str) -> redis.Redis:
    replica = _replica_node(server, key).client()
    replica.execute_command("READONLY")
    return replica



async def test_primaries_short_of_replicas_are_named(
        redis_url: str, redis_cluster: RedisClusterServer) -> None:
    """What the gateway warns about at start when MAAS_REDIS_WAIT_REPLICAS asks for more
    replicas than a primary has (every submit to it would be refused)."""
    plain, cluster = connect(redis_url), connect(redis_cluster.url)
    try:
        assert await primaries_short_of_replicas(plain, 1) == [""]
        assert await primaries_short_of_replicas(plain, 0) == []
        assert await primaries_short_of_replicas(cluster, 1) == []
        short = await primaries_short_of_replicas(cluster, 2)
        assert sorted(short) == sorted(f"127.0.0.1:{n.port}" for n in redis_cluster.primaries())
    finally:
        await plain.aclose()
        await cluster.aclose()
