"""A rolling restart of every process under continuous load loses nothing.

Clients send inference requests without pause while each worker is replaced (the new one
starts first, the old one gets SIGTERM and drains), then the scheduler, then the gateway
(SIGTERM, then a new one on the same port; meanwhile clients retry UNAVAILABLE with the same
request, after the RetryInfo delay that a draining gateway sends). Every request gets its one
correct answer. A training job running through the restarts is checkpointed and handed back
by each drained worker without losing an attempt.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

import maas
from maas.cli.up import Service
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from maas.v1 import training_service_pb2 as tpb
from runtime.queue.v1.queue_pb2 import WorkerHeartbeat
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.models import reference_model, run_reference
from tests.redis_cluster import RedisClusterServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CLIENTS = 4
# Reconnect fast once the new gateway listens (gRPC's default backoff starts at 1 s).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.min_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 250)]
# Long enough to outlive the restarts; cancelled at the end. Checkpoints often.
TRAINING = {"name": "rolling", "architecture": "mlp", "dataset": "digits", "optimizer": "sgd",
            "lr": 0.02, "batch_size": 16, "epochs": 0, "max_steps": 1_000_000,
            "checkpoint_every": 20, "seed": 3}


@dataclass
class Tally:
    answered: int = 0
    retried: int = 0  # UNAVAILABLE while no gateway listened, sent again
    wrong: int = 0
    failed: list[str] = field(default_factory=list)


@pytest.fixture
def cluster(tmp_path: Path, queue_redis: dict[str, RedisClusterServer]) -> Iterator[Cluster]:
    running = start_cluster(tmp_path, workers=2, **queue_redis)
    yield running
    stop_cluster(running)


async def infer_until_answered(stub: GRPCInferenceServiceStub, request: Any,
                               tally: Tally) -> Any:
    deadline = time.monotonic() + 60
    while True:
        try:
            return await stub.ModelInfer(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            tally.retried += 1
            # A draining gateway says how long to wait (RetryInfo); no gateway says nothing.
            await asyncio.sleep(maas.client.from_rpc_error(exc).retry_delay_s or 0.05)


def cases(seed: int, count: int = 16) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inputs and their in-process results, computed before the restarts: the test process
    runs no torch while it forks new processes (torch's and OpenMP's fork handlers may crash
    a child forked mid-computation)."""
    model = reference_model("mlp")
    rng = np.random.default_rng(seed)
    xs = [rng.random((int(rng.integers(1, 5)), 64), dtype=np.float32) for _ in range(count)]
    return [(x, run_reference(model, x)) for x in xs]


async def client_loop(target: str, seed: int, known: list[tuple[np.ndarray, np.ndarray]],
                      stop: asyncio.Event, tally: Tally) -> None:
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = GRPCInferenceServiceStub(channel)
        i = 0
        while not stop.is_set():
            x, expected = known[i % len(known)]
            request = maas.client.infer_request("mlp", {"input": x}, request_id=f"{seed}-{i}")
            i += 1
            try:
                response = await infer_until_answered(stub, request, tally)
            except grpc.aio.AioRpcError as exc:
                tally.failed.append(f"{request.id}: {exc.code().name} {exc.details()}")
                continue
            out = maas.client.infer_outputs(response)["output"]
            if response.id != request.id or np.abs(out - expected).max() > 1e-5:
                tally.wrong += 1
            tally.answered += 1


def wait_serving(cluster: Cluster, worker: Service, timeout_s: float = 90) -> None:
    """Until the worker's heartbeat says it has mlp loaded."""
    r = cluster.redis.client()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            raw = r.get(keys.worker(worker.name))
            if raw and "mlp:1" in WorkerHeartbeat.FromString(raw).models:
                return
            assert worker.proc is not None and worker.proc.poll() is None, (
                f"{worker.name} exited with {worker.proc and worker.proc.returncode}")
            time.sleep(0.1)
    finally:
        r.close()
    raise AssertionError(f"{worker.name} never served mlp in {timeout_s:.0f}s; last "
                         f"heartbeat: {raw and WorkerHeartbeat.FromString(raw)}")


def stop_gracefully(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(60)


def first_checkpoint(handle: Any) -> None:
    for event in handle.watch(timeout_s=60):
        if event.WhichOneof("event") == "checkpoint":
            return


def answers_resume(tally: Tally, since: int, timeout_s: float = 30) -> int:
    """Waits until an answer beyond `since` arrives (the load goes on after a step); returns
    the count then, or `since` if none came within the timeout."""
    deadline = time.monotonic() + timeout_s
    while tally.answered <= since and time.monotonic() < deadline:
        time.sleep(0.01)
    return tally.answered


def roll(cluster: Cluster, tally: Tally) -> list[tuple[str, int, int, int]]:
    """Replaces every process; returns (step, exit code of the old one, answers when it had
    exited, answers once the load went on after it)."""
    py = sys.executable
    steps = []
    for i in (1, 2):
        new = f"worker-{i}b"
        wait_serving(cluster, cluster.local.add(new, [py, "-m", "worker", "--id", new]))
        code = stop_gracefully(cluster.service(f"worker-{i}"))
        steps.append((f"worker-{i}", code, n := tally.answered, answers_resume(tally, n)))
    code = stop_gracefully(cluster.service("scheduler"))
    cluster.local.add("scheduler-b", [py, "-m", "scheduler"])
    steps.append(("scheduler", code, n := tally.answered, answers_resume(tally, n)))
    # While the gateway is away no answer can come: the clients retry until the new one
    # listens (checked after the roll: the new gateway answers).
    code = stop_gracefully(cluster.service("gateway"))
    cluster.local.add("gateway-b", [py, "-m", "gateway"])  # same port (the cluster's env)
    steps.append(("gateway", code, tally.answered, tally.answered))
    return steps


async def test_rolling_restart_under_load_loses_nothing(cluster: Cluster) -> None:
    with maas.Client(cluster.target, timeout_s=30) as client:
        training = client.train(TRAINING)
        await asyncio.to_thread(first_checkpoint, training)
        tally, stop = Tally(), asyncio.Event()
        loops = [asyncio.create_task(client_loop(cluster.target, seed, cases(seed), stop, tally))
                 for seed in range(CLIENTS)]
        started = time.monotonic()
        steps = await asyncio.to_thread(roll, cluster, tally)
        before_stop = tally.answered
        await asyncio.sleep(1.0)  # the new gateway serves
        stop.set()
        await asyncio.gather(*loops)
        elapsed_s = time.monotonic() - started
        training.cancel()
        events = list(training.watch(timeout_s=30))  # all of them, to the terminal state
        job = training.refresh()

    print(f"\nrolling restart in {elapsed_s:.1f}s: {tally.answered} answered, "
          f"{len(tally.failed)} failed, {tally.wrong} wrong, {tally.retried} retried "
          f"(UNAVAILABLE while the gateway restarted); answers by step {steps}")
    assert tally.failed == [] and tally.wrong == 0
    assert all(code == 0 for _, code, _, _ in steps), steps  # each drained and exited cleanly
    # The load went on after each worker and the scheduler were replaced (within 30 s).
    assert all(after > at for _, _, at, after in steps[:-1]), f"the load stalled: {steps}"
    assert tally.answered > before_stop, "the new gateway answered nothing"
    assert tally.retried > 0, "no call met the stopped gateway: was it really down?"
    # Each drained worker checkpointed the job and handed it back; no attempt was spent.
    runs = [e.message for e in events
            if e.WhichOneof("event") == "state" and e.state == tpb.TrainingJob.RUNNING]
    assert len(runs) >= 2 and set(runs) == {"attempt 1"}, runs
    assert job.attempts == 1 and job.state == tpb.TrainingJob.CANCELLED, job
    print(f"training job ran {len(runs)} times, all as attempt 1 (handed back at each drain)")
    check(cluster.redis.url, "3 rolling restart (worker SIGTERM drain)", ["mlp", "cnn"])
