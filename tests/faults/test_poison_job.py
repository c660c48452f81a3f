"""Fault 9, a poison job: one request kills every worker that runs it. It ends DEAD_LETTERED
after max_attempts (each crash counts), retried with backoff and alone (a retried job never
shares a batch), while the other requests on the same model keep being answered."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import maas
from maas.v1.inference_service_pb2 import InferenceJob
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.faults.poison_entry import POISON
from tests.inprocess import mlp_weights
from tests.redis_cluster import RedisClusterServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def poison_cluster(tmp_path: Path, queue_redis: dict[str, RedisClusterServer],
                   ) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, workers=2, launcher="tests.faults.poison_entry",
                            max_attempts="3", retry_backoff_ms="100",
                            require_live_worker="off", **queue_redis)
    with maas.Client(cluster.target) as client:
        client.register_model("poison", "poison", mlp_weights())
    yield cluster
    stop_cluster(cluster)


def supervise(cluster: Cluster, until: threading.Event) -> None:
    """Restarts crashed workers, as `maas up` (or Kubernetes) would."""
    while not until.is_set():
        cluster.local.supervise_once()
        time.sleep(0.1)


def test_poison_job_is_dead_lettered_and_stalls_nothing(poison_cluster: Cluster) -> None:
    done = threading.Event()
    supervisor = threading.Thread(target=supervise, args=(poison_cluster, done), daemon=True)
    supervisor.start()
    rng = np.random.default_rng(0)
    poison = np.zeros((1, 64), np.float32)
    poison[0, 0] = POISON
    try:
        with maas.Client(poison_cluster.target) as client:
            job = client.submit("poison", {"input": poison})

            def one(i: int) -> tuple[int, float]:
                x = rng.random((2, 64), dtype=np.float32)
                return i, float(np.abs(client.infer("poison", {"input": x},
                                                    timeout_s=60)["output"]).sum())

            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                answered = list(pool.map(one, range(240)))
            served_s = time.monotonic() - started
            ended = client.wait_job(job.job_id, timeout_s=90)
    finally:
        done.set()
        supervisor.join(5)
    crashes = sum(s.restarts for s in poison_cluster.local.services if s.name.startswith("worker"))
    print(f"\npoison job: {ended.attempts} attempts, "
          f"{crashes} worker crashes; 240 other requests answered in {served_s:.1f}s")
    assert ended.state == InferenceJob.DEAD_LETTERED
    assert "attempted 3 times" in ended.error.message
    assert len(answered) == 240 and all(np.isfinite(v) for _, v in answered)
    ledger = check(poison_cluster.redis.url, "9 poison job", ["poison"])
    assert ledger.states["DEAD_LETTERED"] == 1
