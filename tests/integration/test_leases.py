"""Leases under a closed loop: a worker that keeps up never loses one, and never says so.

A real gateway, worker and scheduler daemon (each on its own event loop in a thread) serve
callers that send their next request as soon as the last one returns. The lease is short, so
the heartbeat renews it many times while jobs complete around it: no job may be reclaimed
and run again (every attempt, as each response's `maas_attempt` reports it, is 1; a
reclaimed synchronous job would also leave a job hash behind, see "Lean jobs" in
scheduler/lua/common.lua), and no lease may be counted or logged as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from prometheus_client import REGISTRY
from safetensors.torch import save

from maas.client import Client
from maas.inference import grpc_service_pb2 as pb
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from runtime.settings import Settings
from scheduler import keys
from scheduler.daemon import Daemon
from tests.inprocess import running_gateway
from tests.inprocess_worker import running_worker
from tests.models import reference_model

pytestmark = pytest.mark.timeout(90)

LEASE = {"infer_lease_ms": 450}  # the heartbeat renews every 150 ms
CALLERS = 8
LOOP_S = 4.0


@contextlib.contextmanager
def running_daemon(redis_url: str, data_dir: Path) -> Iterator[Daemon]:
    """The scheduler daemon (the reaper) on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    daemon = Daemon(Settings(redis_url=redis_url, data_dir=data_dir, reaper_interval_ms=100,
                             **LEASE))  # type: ignore[arg-type]
    thread = threading.Thread(target=loop.run_until_complete, args=(daemon.run(),),
                              daemon=True)
    thread.start()
    try:
        yield daemon
    finally:
        loop.call_soon_threadsafe(daemon.stop)
        thread.join(30)
        loop.close()


def counted(name: str, model: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": model}) or 0.0


def closed_loop(target: str, seconds: float) -> list[int]:
    """CALLERS threads, each sending its next request when the last returns; the attempt
    each response reports, per request."""
    done: list[list[int]] = []
    x = np.random.default_rng(0).random((1, 64), dtype=np.float32)
    request = pb.ModelInferRequest(
        model_name="mlp", inputs=[pb.ModelInferRequest.InferInputTensor(
            name="input", datatype="FP32", shape=[1, 64])], raw_input_contents=[x.tobytes()])

    def caller() -> None:
        ran = []
        with grpc.insecure_channel(target) as channel:
            stub = GRPCInferenceServiceStub(channel)
            stop_at = time.monotonic() + seconds
            while time.monotonic() < stop_at:
                response = stub.ModelInfer(request, timeout=30)
                ran.append(response.parameters["maas_attempt"].int64_param)
        done.append(ran)

    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    assert len(done) == CALLERS, "a caller failed"
    return [attempt for ran in done for attempt in ran]


def job_hashes(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for _ in client.scan_iter(keys.job("mlp", "*"), count=1000))
    finally:
        client.close()


def test_a_closed_loop_loses_no_lease(redis_url: str, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    lost_before = counted("maas_worker_lost_leases_total", "mlp")
    reclaimed_before = counted("maas_leases_reclaimed_total", "mlp")
    with running_gateway(redis_url, tmp_path, **LEASE) as port, \
            running_worker(redis_url, tmp_path, **LEASE), \
            running_daemon(redis_url, tmp_path):
        target = f"127.0.0.1:{port}"
        with Client(target) as client:
            client.register_model("mlp", "mlp", save(reference_model("mlp").state_dict()))
        caplog.set_level(logging.INFO, logger="worker.loop")
        ran = closed_loop(target, LOOP_S)
    assert len(ran) >= 50
    assert set(ran) == {1}, "jobs were reclaimed and run again"
    assert job_hashes(redis_url) == 0, "synchronous jobs were adopted (reclaimed or released)"
    assert counted("maas_leases_reclaimed_total", "mlp") == reclaimed_before
    assert counted("maas_worker_lost_leases_total", "mlp") == lost_before
    warnings = [r.getMessage() for r in caplog.records if "lost the lease" in r.getMessage()]
    assert not warnings, warnings
