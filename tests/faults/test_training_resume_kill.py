"""The headline guarantee of training: SIGKILL the worker running a job and another worker
resumes it from its last checkpoint after the lease expires, ending with weights bit-identical
to an uninterrupted run of the same seeded job."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import maas
from maas.v1 import training_service_pb2 as tpb
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.redis_cluster import RedisClusterServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

Job = tpb.TrainingJob
# ~600 steps of the seed CNN on digits: a few seconds, checkpointed every 25 steps.
SPEC: dict[str, Any] = {"architecture": "cnn", "dataset": "digits", "optimizer": "sgd",
                        "lr": 0.02, "batch_size": 16, "momentum": 0.9, "epochs": 0,
                        "max_steps": 600, "checkpoint_every": 25, "keep": "best", "seed": 7}
LEASE_MS = 2000


@pytest.fixture
def cluster(tmp_path: Path, queue_redis: dict[str, RedisClusterServer]) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, workers=2, train_lease_ms=str(LEASE_MS), **queue_redis)
    yield running
    stop_cluster(running)


def kind(event: tpb.TrainingEvent) -> str:
    return event.WhichOneof("event") or ""


def trainer_children(worker_pid: int) -> list[int]:
    """Pids of `python -m worker.training` processes whose parent is the worker."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == worker_pid and b"worker.training" in cmdline:
            found.append(int(entry.name))
    return found


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def duration_s(job: Job) -> float:
    return (job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9


def test_sigkilled_training_resumes_bit_exactly(cluster: Cluster) -> None:
    r = cluster.redis.client()
    with maas.Client(cluster.target, timeout_s=60) as client:
        # (a) uninterrupted
        whole = client.train({"name": "resume-a", **SPEC}).wait(timeout_s=120)
        assert whole.state == Job.SUCCEEDED and whole.attempts == 1, whole.error

        # (b) the worker running it is SIGKILLed after the first checkpoint
        handle = client.train({"name": "resume-b", **SPEC})
        events: list[tpb.TrainingEvent] = []
        stream = handle.watch(timeout_s=120)
        for event in stream:
            events.append(event)
            if kind(event) == "checkpoint":
                break
        owner = r.hget(keys.job(keys.TRAINING_QUEUE, handle.id), "owner").decode()
        worker = cluster.service(owner)
        children = trainer_children(worker.pid)
        assert len(children) == 1, f"{owner} runs no training process"
        worker.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        killed_at_step = events[-1].checkpoint.global_step
        deadline = time.monotonic() + 5  # PDEATHSIG takes the training process down too
        while is_alive(children[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not is_alive(children[0]), "the training process outlived its worker"
        events += list(stream)
        resumed = handle.refresh()
        recovery_s = time.monotonic() - killed_at
    r.close()

    assert resumed.state == Job.SUCCEEDED, resumed.error
    assert resumed.attempts == 2
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    runs = [i for i, e in enumerate(events) if kind(e) == "state" and e.state == Job.RUNNING]
    assert len(runs) == 2 and events[runs[1]].message == "attempt 2"
    # The second attempt starts from a checkpoint, not from step 0.
    second = [e.progress.global_step for e in events[runs[1]:] if kind(e) == "progress"]
    assert second and second[0] > killed_at_step, (killed_at_step, second)
    versions = {name: client_version(cluster, name) for name in ("resume-a", "resume-b")}
    assert versions["resume-b"] == versions["resume-a"]
    assert resumed.metrics["val_accuracy"] == pytest.approx(whole.metrics["val_accuracy"])
    lost_s = duration_s(resumed) - duration_s(whole)
    print(f"\nuninterrupted {duration_s(whole):.2f}s; killed {owner} at step {killed_at_step}, "
          f"attempt 2 reported step {second[0]} first; "
          f"{duration_s(resumed):.2f}s in all, {lost_s:.2f}s lost to the kill "
          f"(lease {LEASE_MS / 1000:.0f}s); ended {recovery_s:.2f}s after the kill")


def client_version(cluster: Cluster, name: str) -> str:
    with maas.Client(cluster.target) as client:
        return client.get_model(name).versions[0].weights_sha256

