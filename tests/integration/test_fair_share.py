"""Fair share across tenants, per-tenant queue quotas and retry backoff, against the real Lua
scripts on a private redis-server; and the gateway's answers (QuotaFailure, no live worker)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis.asyncio as aioredis

import maas
from maas.api_keys import ensure_key_file
from maas.errors import QuotaExceeded
from maas.v1.inference_service_pb2 import InferenceJob
from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope, JobKind
from scheduler import keys
from scheduler.connection import connect
from scheduler.queue import JobQueue, RetryPolicy, SubmitStatus, TenantPolicy, new_job_id
from tests.inprocess import mlp_weights, running_gateway

MODEL = "fs"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    c = connect(redis_url)
    yield c
    await c.aclose()


def job(tenant: str, priority: int = 0, max_attempts: int = 3) -> JobEnvelope:
    return JobEnvelope(job_id=new_job_id(), kind=JobKind.JOB_KIND_INFER, model=MODEL,
                       model_version="1", tenant=tenant, priority=priority,
                       max_attempts=max_attempts, infer=InferTask())


async def queue_with(client: aioredis.Redis, **policy: object) -> JobQueue:
    queue = JobQueue(client, tenants=TenantPolicy(**policy),  # type: ignore[arg-type]
                     retry=RetryPolicy(backoff_ms=400, backoff_max_ms=1000))
    await queue.ensure_group(MODEL)
    return queue


async def serve_order(queue: JobQueue, jobs: int, batch: int = 8) -> list[str]:
    """Tenants in the order a worker claiming `batch` at a time is given their jobs."""
    order: list[str] = []
    while len(order) < jobs:
        started = (await queue.claim("w", MODEL, batch)).runnable
        assert started, f"nothing claimable after {len(order)} of {jobs} jobs"
        order += [s.envelope.tenant for s in started]
    return order


async def test_a_flood_does_not_starve_another_tenants_trickle(client: aioredis.Redis) -> None:
    queue = await queue_with(client, share_slots=16)
    for _ in range(400):
        await queue.submit(job("flood"))
    for _ in range(3):
        await queue.submit(job("trickle"))
    order = await serve_order(queue, 403)
    last_trickle = max(i for i, tenant in enumerate(order) if tenant == "trickle")
    print(f"fair share: the trickle's 3 jobs served by position {last_trickle} of 403")
    assert last_trickle < 16 + 3  # behind at most the flood's share, not its 400 jobs


async def test_without_fair_share_the_trickle_waits_behind_the_flood(
        client: aioredis.Redis) -> None:
    """The same load first come, first served: the reason for the share (the test above can
    only pass because of it)."""
    queue = await queue_with(client, share_slots=0)
    for _ in range(100):
        await queue.submit(job("flood"))
    await queue.submit(job("trickle"))
    assert (await serve_order(queue, 101))[-1] == "trickle"


async def test_weights_divide_the_service(client: aioredis.Redis) -> None:
    queue = await queue_with(client, share_slots=8, weights={"gold": 3.0})
    for _ in range(300):
        await queue.submit(job("gold"))
        await queue.submit(job("bronze"))
    served = Counter((await serve_order(queue, 200))[:200])
    ratio = served["gold"] / served["bronze"]
    print(f"weights 3:1 → served {served['gold']}:{served['bronze']} = {ratio:.2f}")
    assert 2.4 <= ratio <= 3.6


async def test_priority_holds_within_a_tenants_backlog(client: aioredis.Redis) -> None:
    queue = await queue_with(client, share_slots=2)
    normal = [job("t") for _ in range(6)]
    for envelope in normal:
        await queue.submit(envelope)
    high = job("t", priority=1)  # arrives last, over the cap: waits in the backlog
    await queue.submit(high)
    started = (await queue.claim("w", MODEL, 2)).runnable
    assert [s.envelope.job_id for s in started] == [normal[0].job_id, normal[1].job_id]
    # The two deliveries refilled the streams from the backlog, high level first.
    started = (await queue.claim("w", MODEL, 1)).runnable
    assert started[0].envelope.job_id == high.job_id


async def test_tenant_queue_quota(client: aioredis.Redis) -> None:
    queue = await queue_with(client, share_slots=2, max_queued=5)
    for _ in range(5):
        assert (await queue.submit(job("q")))[0] == SubmitStatus.CREATED
    with pytest.raises(QuotaExceeded, match="has 5 jobs queued") as refused:
        await queue.submit(job("q"))
    assert refused.value.quota_violations[0].subject == "tenant:q"
    assert (await queue.submit(job("other")))[0] == SubmitStatus.CREATED  # per tenant
    await queue.claim("w", MODEL, 1)
    assert (await queue.submit(job("q")))[0] == SubmitStatus.CREATED  # room again
    assert await queue.tenant_queued(MODEL, "q") == 5


async def test_cancelled_jobs_give_back_their_share(client: aioredis.Redis) -> None:
    queue = await queue_with(client, share_slots=2, max_queued=3)
    jobs = [job("c") for _ in range(3)]
    for envelope in jobs:
        await queue.submit(envelope)
    for envelope in jobs:
        assert await queue.cancel_queued(MODEL, envelope.job_id)
    # Each cancel freed a place that the backlog refilled: nothing of "c" waits any more.
    assert await queue.tenant_queued(MODEL, "c") == 0
    assert (await queue.claim("w", MODEL, 10)).runnable == []
    assert (await queue.submit(job("c")))[0] == SubmitStatus.CREATED


async def test_a_lost_job_is_retried_after_an_exponential_backoff(
        client: aioredis.Redis) -> None:
    queue = await queue_with(client)
    envelope = job("", max_attempts=4)
    await queue.submit(envelope)
    waits = []
    for attempt in (1, 2, 3):
        [started] = (await queue.claim(f"w{attempt}", MODEL, 1)).runnable
        assert started.attempt == attempt
        lost_at = time.time() * 1000
        assert (await queue.reap(MODEL, lease_ms=0)).requeued == 1  # its worker died
        due = await client.zscore(keys.delayed(MODEL), envelope.job_id)
        waits.append(due - lost_at)
        assert await queue.promote(MODEL) == 0  # not yet
        assert (await queue.claim("early", MODEL, 1)).runnable == []
        await client.zadd(keys.delayed(MODEL), {envelope.job_id: 0})  # fast-forward
        assert await queue.promote(MODEL) == 1
    print("backoff waits (ms):", [round(w) for w in waits])
    # base 400 ms x 2^(attempt-1), capped at 1000, times 0.5..1 (jitter); the upper slack
    # is the REAP round trip (Redis timestamps the due time after this test read its clock).
    for wait, full in zip(waits, (400, 800, 1000), strict=True):
        assert full * 0.5 - 5 <= wait <= full + 100
    [last] = (await queue.claim("w4", MODEL, 1)).runnable
    assert last.attempt == 4


# --- through the gateway ----------------------------------------------------------------------

def test_over_quota_is_resource_exhausted_with_quota_failure(
        redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    key_file = tmp_path / "admin.key"
    admin_key = ensure_key_file(key_file)
    x = np.zeros((1, 64), np.float32)
    with running_gateway(redis_url, tmp_path / "data", auth="on", admin_key_file=str(key_file),
                         tenant_max_queued=2) as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target, api_key=admin_key) as admin:
            admin.register_model("mlp", "mlp", mlp_weights(), shared=True)
            tenant_key = admin.create_key("acme", ["infer"]).api_key
        with maas.Client(target, api_key=tenant_key) as client:
            client.submit("mlp", {"input": x})
            client.submit("mlp", {"input": x})
            with pytest.raises(maas.QuotaExceeded) as caught:
                client.submit("mlp", {"input": x})
        error = caught.value
        assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "MAAS_TENANT_MAX_QUEUED=2" in str(error) and "acme" in str(error)
        violations = error.quota_violations
        assert violations and violations[0].subject == "tenant:acme"


def test_sync_inference_without_a_live_worker_is_unavailable_with_retry_info(
        redis_url: str, tmp_path: Path) -> None:
    x = np.zeros((1, 64), np.float32)
    with running_gateway(redis_url, tmp_path / "data", require_live_worker="on") as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target) as client:
            client.register_model("mlp", "mlp", mlp_weights())
            started = time.monotonic()
            with pytest.raises(maas.Unavailable) as caught:
                client.infer("mlp", {"input": x}, timeout_s=30)
            assert time.monotonic() - started < 5  # answered at once, not at the deadline
            assert "no worker has been alive" in str(caught.value)
            assert caught.value.retry_delay_s and caught.value.retry_delay_s > 0
            job = client.submit("mlp", {"input": x})  # async work is queued anyway
            assert job.state == InferenceJob.QUEUED


def test_tenant_training_quota(redis_url: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAAS_API_KEY", raising=False)
    key_file = tmp_path / "admin.key"
    admin_key = ensure_key_file(key_file)
    spec = {"architecture": "cnn", "dataset": "digits", "epochs": 1, "max_steps": 1,
            "model_name": "q"}
    with running_gateway(redis_url, tmp_path / "data", auth="on", admin_key_file=str(key_file),
                         tenant_max_training=2) as port:
        target = f"127.0.0.1:{port}"
        with maas.Client(target, api_key=admin_key) as admin:
            acme = admin.create_key("acme", ["train"]).api_key
            other = admin.create_key("other", ["train"]).api_key
        with maas.Client(target, api_key=acme) as client:
            first = client.train(spec)  # no worker: both stay queued
            client.train(spec)
            with pytest.raises(maas.QuotaExceeded) as caught:
                client.train(spec)
            assert "MAAS_TENANT_MAX_TRAINING=2" in str(caught.value)
            assert caught.value.quota_violations[0].subject == "tenant:acme"
            with maas.Client(target, api_key=other) as neighbour:
                neighbour.train(spec)  # quotas are per tenant
            first.cancel()  # an ended job frees its place
            client.train(spec)
