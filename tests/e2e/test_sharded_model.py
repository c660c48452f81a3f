"""One hot model's queue sharded over the primaries of a Redis Cluster (MAAS_MODEL_SHARDS=cnn=3,
scheduler/shards.py), with the processes as `maas up` starts them on the 3 + 3 cluster:
synchronous calls spread over the three queues (one per gateway pipeline, in turn) and
are all answered right; asynchronous jobs
name their queue, a request_id sent again meets its first job, GetJob, WaitJob and cancel
find them; queue statistics (API and CLI) add the queues up; a worker SIGKILLed under load
loses nothing on any queue; the ledger then finds nothing lost and nothing duplicated.

The tests share one maas cluster and run in file order: the ledger test comes last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

import maas
from maas.client import job_outputs
from maas.v1.inference_service_pb2 import InferenceJob
from scheduler import keys
from tests.conftest import Cluster, sdk_client_fixture, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.models import reference_model, run_reference
from tests.redis_cluster import RedisClusterServer

pytestmark = pytest.mark.timeout(240)

MODEL = "cnn"
QUEUES = ["cnn", "cnn#1", "cnn#2"]  # slots 7058, 2485, 14806: one on each primary
BURST = 192  # calls, from CALLERS concurrent callers
CALLERS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory,
            redis_cluster: RedisClusterServer) -> Iterator[Cluster]:
    running = start_cluster(tmp_path_factory.mktemp("sharded"), redis_cluster=redis_cluster,
                            model_shards=f"{MODEL}=3")
    yield running
    stop_cluster(running)


client = sdk_client_fixture()


def sample(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 1, 28, 28), dtype=np.float32)


def assert_reference(x: np.ndarray, out: np.ndarray) -> None:
    assert np.abs(out - run_reference(reference_model(MODEL), x)).max() <= 1e-5


def delivered(redis_cluster: RedisClusterServer, queue: str) -> int:
    """Entries the workers' group read from the queue's normal stream, on its own primary."""
    with redis_cluster.primary_of(keys.stream(queue)).client() as r:
        [group] = r.xinfo_groups(keys.stream(queue))
        return int(group["entries-read"] or 0)


async def test_calls_spread_over_the_queues_on_every_primary(
        cluster: Cluster, redis_cluster: RedisClusterServer) -> None:
    ports = {q: redis_cluster.primary_of(keys.stream(q)).port for q in QUEUES}
    print(f"queue primaries: {ports}")
    assert len(set(ports.values())) == 3
    before = {q: delivered(redis_cluster, q) for q in QUEUES}

    async def caller(sdk: maas.AsyncClient, seed: int) -> None:
        for i in range(BURST // CALLERS):  # one call after another
            x = sample(1 + i % 3, seed=seed * 1000 + i)
            assert_reference(x, (await sdk.infer(MODEL, {"input": x}))["output"])

    async with maas.AsyncClient(cluster.target, timeout_s=60) as sdk:
        await asyncio.gather(*(caller(sdk, seed) for seed in range(CALLERS)))
    spread = {q: delivered(redis_cluster, q) - before[q] for q in QUEUES}
    print(f"calls per queue: {spread}")
    assert sum(spread.values()) == BURST
    # A gateway's pipelines take the queues in turn (one queue per pipeline).
    assert all(n >= BURST // 10 for n in spread.values()), spread


def test_async_jobs_name_their_queue(client: maas.Client) -> None:
    jobs = {}
    for i in range(6):
        x = sample(2, seed=1000 + i)
        jobs[client.submit(MODEL, {"input": x}).job_id] = x
    queues = {job_id.rpartition(":")[0] for job_id in jobs}
    assert queues == set(QUEUES), queues  # in turn: every queue
    for job_id, x in jobs.items():
        done = client.wait_job(job_id, timeout_s=60)
        assert done.state == InferenceJob.SUCCEEDED and done.model == MODEL
        assert_reference(x, job_outputs(done)["output"])
        assert client.get_job(job_id).state == InferenceJob.SUCCEEDED
        with pytest.raises(maas.MaasError) as caught:
            client.cancel_job(job_id)
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_request_id_sent_again_meets_its_first_job(client: maas.Client) -> None:
    x = sample(1, seed=7)
    ids = {client.submit(MODEL, {"input": x}, request_id=f"rid-{i}").job_id for i in range(12)}
    assert len({i.rpartition(":")[0] for i in ids}) >= 2  # keys spread over the queues
    first = client.submit(MODEL, {"input": x}, request_id="rid-3")
    again = client.submit(MODEL, {"input": x}, request_id="rid-3")
    assert first.job_id == again.job_id and first.job_id in ids
    for job_id in ids:
        assert client.wait_job(job_id, timeout_s=60).state == InferenceJob.SUCCEEDED


def test_a_job_id_naming_no_queue_of_the_model_is_not_found(client: maas.Client) -> None:
    for job_id in ("cnn#3:" + "0" * 32, "mlp#1:" + "0" * 32):
        with pytest.raises(maas.MaasError) as caught:
            client.get_job(job_id)
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(maas.MaasError) as caught:
        client.get_job("cnn#0:" + "0" * 32)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_queue_stats_add_the_queues_up(client: maas.Client,
                                       redis_cluster: RedisClusterServer) -> None:
    [stats] = client.queue_stats(MODEL)
    assert stats.model == MODEL and stats.serving_workers >= 1
    normal = {p.priority: p for p in stats.priorities}
    total = sum(p.delivered_total for p in normal.values())
    assert total == sum(delivered(redis_cluster, q) for q in QUEUES)
    assert total >= BURST + 6 + 12
    done = subprocess.run([sys.executable, "-m", "maas.cli.main", "queues", "stats",
                           "--model", MODEL, "--target", client.target, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)["models"]
    assert row["model"] == MODEL


async def test_a_worker_killed_under_load_loses_nothing(
        cluster: Cluster, redis_cluster: RedisClusterServer) -> None:
    """Calls flow over the three queues while worker-1 is SIGKILLed: the jobs it held on any
    queue are reaped there and run by worker-2; every caller gets its answer."""
    stop, enough = asyncio.Event(), asyncio.Event()
    answered, wanted = [0], [1 << 30]

    async def caller(seed: int) -> None:
        async with maas.AsyncClient(cluster.target, timeout_s=60) as sdk:
            i = 0
            while not stop.is_set():
                x = sample(1, seed=seed * 10_000 + i)
                assert_reference(x, (await sdk.infer(MODEL, {"input": x}))["output"])
                answered[0] += 1
                if answered[0] >= wanted[0]:
                    enough.set()
                i += 1

    callers = [asyncio.create_task(caller(s)) for s in range(8)]
    await asyncio.sleep(1.0)
    victim = cluster.service("worker-1")
    deadline = time.monotonic() + 20
    while True:  # frozen, it cannot complete what it holds: killed only while holding jobs
        victim.send_signal(signal.SIGSTOP)
        await asyncio.sleep(0.05)  # what it sent before it froze reaches Redis first
        if held := await asyncio.to_thread(held_by, redis_cluster, "worker-1"):
            break
        victim.send_signal(signal.SIGCONT)
        assert time.monotonic() < deadline, "worker-1 never held a job"
        await asyncio.sleep(0.02)
    victim.kill()  # holding jobs on these queues
    at_kill = answered[0]
    wanted[0] = at_kill + 100
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(enough.wait(), 30)
    stop.set()
    await asyncio.gather(*callers)
    print(f"worker-1 killed holding {held}; {answered[0]} calls answered, "
          f"{answered[0] - at_kill} after the kill")
    assert answered[0] >= at_kill + 100
    # What it held was reaped on its own queue and run again there (a second attempt).
    with redis_cluster.client() as r:
        for queue in held:
            retried = [k for k in r.scan_iter(match=keys.job(queue, "*"), count=1000)
                       if r.hget(k, "attempt") == b"2"]
            assert retried, f"no job of {queue} ran a second attempt"


def held_by(redis_cluster: RedisClusterServer, consumer: str) -> dict[str, int]:
    """The model's queues where `consumer` holds leases now, with how many."""
    held = {}
    with redis_cluster.client() as r:
        for queue in QUEUES:
            for row in r.xpending(keys.stream(queue), keys.GROUP)["consumers"]:
                if row["name"] in (consumer, consumer.encode()):
                    held[queue] = int(row["pending"])
    return held


def test_nothing_lost_nothing_duplicated(redis_cluster: RedisClusterServer) -> None:
    ledger = check(redis_cluster.url, "sharded model", [*QUEUES, "mlp"])
    assert ledger.accepted >= BURST + 6 + 12 + 100
    assert ledger.completed == ledger.accepted
