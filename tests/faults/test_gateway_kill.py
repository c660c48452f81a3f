"""A gateway SIGKILLed between accepting jobs and answering: clients retry with the same
request_id against the restarted gateway and get the same job — one job, one result."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import maas
from maas.client import job_outputs
from maas.errors import IdempotencyKeyReused, MaasError
from maas.v1.inference_service_pb2 import InferenceJob
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.models import reference_model, run_reference
from tests.redis_cluster import RedisClusterServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def cluster1(tmp_path: Path, queue_redis: dict[str, RedisClusterServer]) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, workers=1, **queue_redis)
    yield cluster
    stop_cluster(cluster)


def submit_until_accepted(client: maas.Client, x: np.ndarray, request_id: str) -> InferenceJob:
    for _ in range(100):
        try:
            return client.submit("cnn", {"input": x}, request_id=request_id, deadline_s=60)
        except MaasError:  # the gateway is down or restarting: retry, same request_id
            time.sleep(0.1)
    raise AssertionError("never accepted")


def test_gateway_sigkill_then_retry_with_same_request_id(cluster1: Cluster) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.random((4, 1, 28, 28), dtype=np.float32) for _ in range(40)]
    with maas.Client(cluster1.target, timeout_s=5) as client:
        first = {f"k{i}": submit_until_accepted(client, x, f"k{i}").job_id
                 for i, x in enumerate(xs[:20])}
        cluster1.service("gateway").send_signal(signal.SIGKILL)
        cluster1.service("gateway").wait()
        cluster1.local.add("gateway-2", [sys.executable, "-m", "gateway"])
        # Every client retries all its requests; the second half is new work.
        again = {f"k{i}": submit_until_accepted(client, x, f"k{i}").job_id
                 for i, x in enumerate(xs)}
        assert all(again[k] == first[k] for k in first), "a retry created a second job"
        with pytest.raises(IdempotencyKeyReused):
            client.submit("cnn", {"input": xs[1]}, request_id="k0")
        model = reference_model("cnn")
        for i, x in enumerate(xs):
            job = client.wait_job(again[f"k{i}"], timeout_s=30)
            assert job.state == InferenceJob.SUCCEEDED and job.attempts == 1
            out = job_outputs(job)["output"]
            assert np.abs(out - run_reference(model, x)).max() <= 1e-5
    r = cluster1.redis.client()
    assert len(list(r.scan_iter(match=keys.job("cnn", "*")))) == len(xs)  # one job each
    r.close()
    check(cluster1.redis.url, "6 gateway SIGKILL, same request_id", ["mlp", "cnn"])


async def test_many_clients_one_request_id(cluster: Cluster) -> None:
    """Concurrent submits with one request_id: one job; a different body is refused."""
    x = np.zeros((1, 64), np.float32)
    async with maas.AsyncClient(cluster.target) as client:
        from maas.client import submit_request

        same = submit_request("mlp", {"input": x}, "", (), 0, "shared-key", None)
        other = submit_request("mlp", {"input": x + 1}, "", (), 0, "shared-key", None)
        # 20 clients with one body race each other and one client with another body; which
        # body comes first is up to the network, so both outcomes are checked.
        calls = [client._jobs.SubmitInference(same, timeout=30) for _ in range(20)]
        calls.append(client._jobs.SubmitInference(other, timeout=30))
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
    ids = {o.job.job_id for o in outcomes if not isinstance(o, BaseException)}
    refused = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    assert len(ids) == 1
    assert all("FAILED_PRECONDITION" in str(outcomes[i]) for i in refused)
    assert refused in ([20], list(range(20))), refused  # the other body lost, or all the rest
    check(cluster.redis.url, "7 many clients, one request_id", ["mlp", "cnn"])
