"""A worker killed with SIGKILL while it holds requests: every request still gets its one
correct result within its deadline (the reaper re-queues the dead worker's jobs)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

import maas
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.models import reference_model, run_reference
from tests.redis_cluster import RedisClusterServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def two_workers(tmp_path: Path, queue_redis: dict[str, RedisClusterServer],
                ) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, workers=2, **queue_redis)
    yield cluster
    stop_cluster(cluster)


def wait_until_holding(r: redis.Redis, consumer: str, timeout_s: float = 20) -> int:
    """Waits until the worker has leased entries of the cnn stream; returns how many."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for c in r.xinfo_consumers(keys.stream("cnn"), keys.GROUP):
            if c["name"].decode() == consumer and c["pending"] > 0:
                return int(c["pending"])
        time.sleep(0.002)
    raise AssertionError(f"{consumer} never held a job")


def holding(r: redis.Redis, consumer: str) -> int:
    """Jobs the worker has started: pending in its name, and either lean (no job hash: its
    delivery is its start) or owned by it. An entry with a hash that it has read but not yet
    started (a blocking read returns before START) would run again as attempt 1, not 2."""
    stream = keys.stream("cnn")
    started = 0
    for row in r.xpending_range(stream, keys.GROUP, "-", "+", 1000, consumername=consumer):
        entry = r.xrange(stream, row["message_id"], row["message_id"])
        job_id = entry[0][1][b"job"].decode() if entry else ""
        owner = r.hget(keys.job("cnn", job_id), "owner") if job_id else None
        if job_id and ((owner is None and b"env" in entry[0][1]) or owner == consumer.encode()):
            started += 1
    return started


async def freeze_holding(r: redis.Redis, worker: subprocess.Popen[bytes]) -> int:
    """SIGSTOPs worker-1 at a moment it holds jobs (no race with it finishing them)."""
    while True:
        await asyncio.to_thread(wait_until_holding, r, "worker-1")
        worker.send_signal(signal.SIGSTOP)
        # A COMPLETE the worker sent just before it stopped may still be on its way to
        # Redis: count what it holds once that has landed.
        await asyncio.sleep(0.05)
        if held := holding(r, "worker-1"):
            return held
        worker.send_signal(signal.SIGCONT)


async def test_sigkill_worker_mid_batch_loses_nothing(two_workers: Cluster) -> None:
    rng = np.random.default_rng(0)
    xs = [rng.random((64, 1, 28, 28), dtype=np.float32) for _ in range(96)]
    model = reference_model("cnn")
    r = two_workers.redis.client()

    async with maas.AsyncClient(two_workers.target, timeout_s=60) as client:
        requests = [maas.client.infer_request("cnn", {"input": x}, request_id=f"r{i}")
                    for i, x in enumerate(xs)]
        calls = [asyncio.ensure_future(client._v2.ModelInfer(req, timeout=60))
                 for req in requests]
        held = await freeze_holding(r, two_workers.service("worker-1"))
        two_workers.service("worker-1").send_signal(signal.SIGKILL)
        started = time.monotonic()
        responses = await asyncio.gather(*calls)
        elapsed_s = time.monotonic() - started

    attempts = [resp.parameters["maas_attempt"].int64_param for resp in responses]
    for i, (x, resp) in enumerate(zip(xs, responses, strict=True)):
        assert resp.id == f"r{i}"
        out = maas.client.infer_outputs(resp)["output"]
        assert np.abs(out - run_reference(model, x)).max() <= 1e-5
    print(f"killed worker-1 holding {held} jobs; {len(responses)} answered in {elapsed_s:.1f}s, "
          f"{attempts.count(2)} on a second attempt")
    assert max(attempts) == 2, "the kill hit no job in flight"
    # Nothing is left pending or queued, and each job has exactly one terminal record.
    assert r.xlen(keys.stream("cnn")) == 0
    assert r.xpending(keys.stream("cnn"), keys.GROUP)["pending"] == 0
    assert two_workers.service("worker-2").poll() is None
    r.close()
    ledger = check(two_workers.redis.url, "1 worker SIGKILL mid-batch", ["mlp", "cnn"])
    assert ledger.accepted == len(xs) and ledger.states == {"SUCCEEDED": len(xs)}


async def test_sigstop_past_the_lease_then_sigcont_is_fenced(two_workers: Cluster) -> None:
    """A frozen worker's jobs run elsewhere; when it wakes, its late completions are refused."""
    rng = np.random.default_rng(1)
    xs = [rng.random((64, 1, 28, 28), dtype=np.float32) for _ in range(64)]
    model = reference_model("cnn")
    r = two_workers.redis.client()
    frozen = two_workers.service("worker-1")
    async with maas.AsyncClient(two_workers.target, timeout_s=60) as client:
        calls = [asyncio.ensure_future(client._v2.ModelInfer(
            maas.client.infer_request("cnn", {"input": x}, request_id=f"s{i}"), timeout=60))
            for i, x in enumerate(xs)]
        held = await freeze_holding(r, frozen)
        try:
            responses = await asyncio.gather(*calls)  # worker-2 answers after the reaping
        finally:
            frozen.send_signal(signal.SIGCONT)
    for i, (x, resp) in enumerate(zip(xs, responses, strict=True)):
        assert resp.id == f"s{i}"
        out = maas.client.infer_outputs(resp)["output"]
        assert np.abs(out - run_reference(model, x)).max() <= 1e-5
    await asyncio.sleep(2.0)  # the zombie wakes, finishes its batch, tries to complete it
    assert r.xpending(keys.stream("cnn"), keys.GROUP)["pending"] == 0
    assert frozen.poll() is None, "the woken worker should carry on serving"
    print(f"froze worker-1 holding {held} jobs; all {len(xs)} answered once by worker-2")
    r.close()
    ledger = check(two_workers.redis.url, "2 worker SIGSTOP past the lease, SIGCONT",
                   ["mlp", "cnn"])
    assert ledger.accepted == len(xs) and ledger.states == {"SUCCEEDED": len(xs)}
