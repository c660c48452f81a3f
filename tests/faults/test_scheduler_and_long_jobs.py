"""The scheduler daemon is what reclaims leases: killed, nothing is reclaimed; back (or a
second one at once), the dead worker's jobs run again. And a job far longer than its lease,
kept alive by heartbeats, runs exactly once."""

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
from maas.v1.training_service_pb2 import TrainingJob
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.faults.test_worker_kill import freeze_holding
from tests.redis_cluster import RedisClusterServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def short_leases(tmp_path: Path, queue_redis: dict[str, RedisClusterServer],
                 ) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, workers=2, train_lease_ms="500", **queue_redis)
    yield cluster
    stop_cluster(cluster)


async def test_leases_are_reclaimed_only_while_a_daemon_runs(short_leases: Cluster) -> None:
    r = short_leases.redis.client()
    short_leases.service("scheduler").send_signal(signal.SIGKILL)
    short_leases.service("scheduler").wait()
    rng = np.random.default_rng(2)
    xs = [rng.random((64, 1, 28, 28), dtype=np.float32) for _ in range(48)]
    async with maas.AsyncClient(short_leases.target, timeout_s=60) as client:
        calls = [asyncio.ensure_future(client.infer("cnn", {"input": x}, timeout_s=60))
                 for x in xs]
        victim = short_leases.service("worker-1")
        await freeze_holding(r, victim)  # while it holds jobs: no race with finishing them
        victim.send_signal(signal.SIGKILL)
        await asyncio.sleep(3.0)  # three leases pass: with no daemon, nothing is reclaimed
        stranded = r.xpending(keys.stream("cnn"), keys.GROUP)["pending"]
        assert stranded > 0 and not all(c.done() for c in calls)
        # Two daemons at once (the restarted one and a second replica) do no harm.
        for name in ("scheduler-2", "scheduler-3"):
            short_leases.local.add(name, [sys.executable, "-m", "scheduler"])
        outputs = await asyncio.gather(*calls)
    assert all(o["output"].shape == (64, 10) for o in outputs)
    print(f"{stranded} jobs waited for a daemon; all {len(xs)} answered once")
    r.close()
    ledger = check(short_leases.redis.url, "14 scheduler killed, two daemons", ["mlp", "cnn"])
    assert ledger.accepted == len(xs) and ledger.states == {"SUCCEEDED": len(xs)}


def test_a_job_longer_than_ten_leases_runs_once(short_leases: Cluster) -> None:
    """Training lease 0.5 s; the job runs for many seconds, renewed by the heartbeat."""
    with maas.Client(short_leases.target, timeout_s=60) as client:
        started = time.monotonic()
        job = client.train({"model_name": "long", "architecture": "cnn", "dataset": "digits",
                            "lr": 0.02, "batch_size": 16, "max_steps": 1200, "epochs": 0,
                            "checkpoint_every": 200, "seed": 0}).wait(timeout_s=180)
        ran_s = time.monotonic() - started
    assert job.state == TrainingJob.SUCCEEDED
    assert ran_s > 10 * 0.5, f"the job took {ran_s:.1f}s, not longer than ten leases"
    assert job.attempts == 1, "a lease expired under a running job"
    print(f"a {ran_s:.1f}s job ({ran_s / 0.5:.0f} leases) ran once")
    check(short_leases.redis.url, "8 job longer than ten leases", [keys.TRAINING_QUEUE])
