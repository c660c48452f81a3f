"""Queue statistics against a real redis-server, and the health server of workers and
schedulers on a real port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from maas.cli.up import free_port
from runtime.health import LIVENESS, serve_health
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobKind, JobResult, JobState
from scheduler.connection import connect
from scheduler.queue import JobQueue, new_job_id
from scheduler.stats import stream_stats

MODEL = "stats"
Status = health_pb2.HealthCheckResponse


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = connect(redis_url)
    yield c
    await c.aclose()


async def test_stream_stats_count_queued_and_leased_jobs(client: aioredis.Redis) -> None:
    queue = JobQueue(client, result_ttl_ms=60_000)
    await queue.ensure_group(MODEL)
    empty = await stream_stats(client, MODEL)
    assert (empty.queued, empty.leased, empty.depth, empty.oldest_age_s) == (0, 0, 0, 0.0)
    for _ in range(5):
        await queue.submit(JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER,
                                       model=MODEL, model_version="1", max_attempts=3))
    await asyncio.sleep(0.05)
    leased = (await queue.claim("w1", MODEL, 2)).runnable
    stats = await stream_stats(client, MODEL)
    assert (stats.queued, stats.leased, stats.depth) == (3, 2, 5)
    assert 0.04 <= stats.oldest_age_s < 5
    await queue.complete("w1", [(s.delivery, JobResult(job_id=s.delivery.job_id,
                                                       state=JobState.JOB_STATE_SUCCEEDED))
                                for s in leased])
    stats = await stream_stats(client, MODEL)
    assert (stats.queued, stats.leased) == (3, 0)


async def check(port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def test_health_turns_not_ready_on_drain_but_stays_live() -> None:
    port = free_port()
    stopping = asyncio.Event()
    async with serve_health(port, stopping) as server:
        assert server.port == port
        assert await check(port, "") == Status.SERVING
        assert await check(port, LIVENESS) == Status.SERVING
        stopping.set()
        for _ in range(500):  # the watcher task turns it NOT_SERVING
            if await check(port, "") == Status.NOT_SERVING:
                break
            await asyncio.sleep(0.01)
        assert await check(port, "") == Status.NOT_SERVING
        assert await check(port, LIVENESS) == Status.SERVING
    with pytest.raises(grpc.aio.AioRpcError):
        await check(port, "")


async def test_health_port_zero_serves_nothing() -> None:
    async with serve_health(0, asyncio.Event()) as server:
        assert server.port == 0
