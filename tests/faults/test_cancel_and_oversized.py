"""Fault 11, cancel while queued / running / done, and fault 10, oversized payloads: refused
with the right status, and Redis is left exactly as it was (nothing half-written)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import redis

import maas
from maas.v1.inference_service_pb2 import InferenceJob
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.faults.poison_entry import SLOW
from tests.inprocess import mlp_weights

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("cancel"), workers=1,
                            launcher="tests.faults.poison_entry", max_message_bytes=str(1 << 20))
    with maas.Client(cluster.target) as client:
        client.register_model("poison", "poison", mlp_weights())
    yield cluster
    stop_cluster(cluster)


def slow_input() -> dict[str, np.ndarray]:
    x = np.zeros((1, 64), np.float32)
    x[0, 0] = SLOW
    return {"input": x}


def wait_state(client: maas.Client, job_id: str, state: int, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get_job(job_id).state != state:
        assert time.monotonic() < deadline, f"job {job_id} never reached {state}"
        time.sleep(0.02)


def test_cancel_while_queued_running_and_done(one_worker: Cluster) -> None:
    fast = {"input": np.ones((1, 64), np.float32)}
    with maas.Client(one_worker.target) as client:
        running = client.submit("poison", slow_input())
        wait_state(client, running.job_id, InferenceJob.RUNNING)
        queued = client.submit("poison", fast)  # the only worker is busy for 3 s
        assert client.cancel_job(queued.job_id).state == InferenceJob.CANCELLED
        flagged = client.cancel_job(running.job_id)  # running: flagged, its result dropped
        assert flagged.state == InferenceJob.RUNNING
        assert client.wait_job(running.job_id, 15).state == InferenceJob.CANCELLED
        done = client.submit("poison", fast)
        assert client.wait_job(done.job_id, 15).state == InferenceJob.SUCCEEDED
        with pytest.raises(maas.MaasError) as caught:
            client.cancel_job(done.job_id)
        assert caught.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "already ended (SUCCEEDED)" in str(caught.value)
        assert client.get_job(done.job_id).state == InferenceJob.SUCCEEDED
        assert not client.get_job(running.job_id).outputs  # the cancelled run's result is gone
    ledger = check(one_worker.redis.url, "11 cancel queued/running/done", ["poison"])
    assert ledger.states["CANCELLED"] == 2 and ledger.states["SUCCEEDED"] == 1


def snapshot(url: str) -> dict[bytes, bytes]:
    """Every key with its DUMP: any write at all would show."""
    heartbeat, index = keys.worker("").encode(), keys.workers_index().encode()
    with redis.Redis.from_url(url) as r:
        return {k: r.dump(k) for k in r.scan_iter(count=1000)  # heartbeats change on their own
                if not k.startswith(heartbeat) and k != index}


def test_oversized_payloads_are_refused_and_write_nothing(one_worker: Cluster) -> None:
    big = {"input": np.zeros((5000, 64), np.float32)}  # 1.28 MB > the 1 MiB limit
    many = {"input": np.zeros((1, 64), np.float32)}
    with maas.Client(one_worker.target) as client:
        client.infer("poison", many)  # warm: the model record and streams exist
        time.sleep(0.5)
        before = snapshot(one_worker.redis.url)
        for call in (lambda: client.infer("poison", big),
                     lambda: client.submit("poison", big)):
            with pytest.raises(maas.MaasError) as caught:
                call()
            assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "MAAS_MAX_MESSAGE_BYTES" in str(caught.value)
        time.sleep(0.3)
        after = snapshot(one_worker.redis.url)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    print(f"\n[fault 10 oversized] 2 refused; Redis keys changed: {len(changed)}")
    assert not changed, changed
    check(one_worker.redis.url, "10 oversized", ["poison"])
