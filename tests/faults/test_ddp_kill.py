"""A replica of a data-parallel job is SIGKILLed with its worker mid-way: the gang breaks,
every replica stops, and the job re-forms with 2 replicas (on a worker that arrives later)
and resumes from rank 0's last checkpoint, finishing with attempts = 2."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

import maas
from maas.v1 import training_service_pb2 as tpb
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.test_training_resume_kill import is_alive, kind, trainer_children

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

Job = tpb.TrainingJob
SPEC: dict[str, Any] = {"architecture": "mlp", "dataset": "digits", "optimizer": "sgd",
                        "lr": 0.05, "batch_size": 32, "epochs": 0, "max_steps": 1500,
                        "checkpoint_every": 100, "seed": 5, "config": {"hidden": [64]},
                        "replicas": 2}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, workers=2, train_lease_ms="3000",
                            train_gang_timeout_s="10")
    yield running
    stop_cluster(running)


def test_killed_replica_resumes_with_all_replicas(cluster: Cluster) -> None:
    r = cluster.redis.client()
    with maas.Client(cluster.target, timeout_s=60) as client:
        handle = client.train({"name": "ddp-kill", **SPEC})
        events: list[tpb.TrainingEvent] = []
        stream = handle.watch(timeout_s=180)
        for event in stream:
            events.append(event)
            if kind(event) == "checkpoint":
                break
        member = cast(bytes, r.hget(keys.training_gang(handle.id), "rank:1")).decode()
        worker = cluster.service(member)
        (child,) = trainer_children(worker.pid)
        worker.send_signal(signal.SIGKILL)
        killed_at, killed_at_step = time.monotonic(), events[-1].checkpoint.global_step
        while is_alive(child) and time.monotonic() < killed_at + 5:
            time.sleep(0.02)
        assert not is_alive(child), "the replica outlived its worker"
        cluster.local.add("worker-3", [sys.executable, "-m", "worker", "--id", "worker-3"])
        events += list(stream)
        job = handle.refresh()
    r.close()

    assert job.state == Job.SUCCEEDED, job.error
    runs = [i for i, e in enumerate(events) if kind(e) == "state" and e.state == Job.RUNNING]
    assert job.attempts == 2, [str(events[i]) for i in runs]
    assert job.progress.global_step == SPEC["max_steps"]
    assert [events[i].message for i in runs] == ["attempt 1, 2 replicas",
                                                 "attempt 2, 2 replicas"]
    second = [e.progress.global_step for e in events[runs[1]:] if kind(e) == "progress"]
    assert second and second[0] > killed_at_step, (killed_at_step, second)
    print(f"\nkilled replica 1 ({member}) after the checkpoint at step {killed_at_step}; "
          f"attempt 2 reported step {second[0]} first; ended "
          f"{time.monotonic() - killed_at:.1f}s after the kill")
