"""Global overload: a model's queue at MAAS_MAX_QUEUE_DEPTH refuses new work with UNAVAILABLE
and a retry delay, writing nothing; room again once jobs complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import maas
from maas.errors import QueueFull
from runtime.queue.v1.queue_pb2 import InferTask, JobEnvelope
from scheduler import keys
from scheduler.connection import connect
from scheduler.queue import JobQueue, SubmitStatus, new_job_id
from tests.conftest import RedisServer
from tests.inprocess import mlp_weights, running_gateway


async def test_full_stream_refuses_and_writes_nothing(redis_url: str) -> None:
    client = connect(redis_url)
    queue = JobQueue(client, max_depth=2)
    await queue.ensure_group("m")
    jobs = [JobEnvelope(job_id=new_job_id(), model="m", model_version="1", max_attempts=1,
                        infer=InferTask()) for _ in range(3)]
    assert [(await queue.submit(j))[0] for j in jobs[:2]] == [SubmitStatus.CREATED] * 2
    with pytest.raises(QueueFull, match="is full \\(2 jobs queued"):
        await queue.submit(jobs[2])
    assert await client.xlen(keys.stream("m")) == 2
    assert not await client.exists(keys.job("m", jobs[2].job_id))
    other = JobEnvelope(job_id=new_job_id(), model="m", model_version="1", priority=1,
                        max_attempts=1, infer=InferTask())
    assert (await queue.submit(other))[0] == SubmitStatus.CREATED  # a level has its own room
    await client.aclose()


def test_gateway_answers_unavailable_with_retry_info(redis_server: RedisServer,
                                                     redis_url: str, tmp_path: Path) -> None:
    with running_gateway(redis_url, tmp_path, max_queue_depth=1) as port, \
            maas.Client(f"127.0.0.1:{port}") as client:
        client.register_model("mlp", "mlp", mlp_weights())
        x = {"input": np.zeros((1, 64), np.float32)}
        client.submit("mlp", x)  # no worker: it stays queued and fills the queue
        with pytest.raises(maas.Unavailable) as full:
            client.submit("mlp", x)
        assert full.value.reason == "QUEUE_FULL" and full.value.retry_delay_s == 1.0
        assert "MAAS_MAX_QUEUE_DEPTH" in full.value.message
        with pytest.raises(maas.Unavailable):
            client.infer("mlp", x, timeout_s=5)


def test_redis_at_maxmemory_is_resource_exhausted_and_evicts_nothing(
        redis_server: RedisServer, redis_url: str, tmp_path: Path) -> None:
    admin = redis_server.client()
    with running_gateway(redis_url, tmp_path) as port, \
            maas.Client(f"127.0.0.1:{port}") as client:
        client.register_model("mlp", "mlp", mlp_weights())
        x = {"input": np.zeros((1, 64), np.float32)}
        kept = client.submit("mlp", x)
        before = admin.dbsize()
        admin.config_set("maxmemory", "1")  # far below what Redis already uses
        try:
            with pytest.raises(maas.MaasError) as full:
                client.submit("mlp", x)
            assert full.value.code.name == "RESOURCE_EXHAUSTED"
            assert full.value.reason == "QUEUE_STORAGE_FULL"
            assert admin.dbsize() == before  # nothing written, nothing evicted
        finally:
            admin.config_set("maxmemory", "0")
        assert client.get_job(kept.job_id).job_id == kept.job_id
        client.submit("mlp", x)  # room again
        print(f"\n[fault 13 redis at maxmemory] accepted 2 (queued: no worker here), refused 1 "
              f"RESOURCE_EXHAUSTED, keys evicted 0 ({before} before the refusal, "
              f"{admin.dbsize()} after the next submit)")
    admin.close()
