"""redis-server SIGKILLed under load and restarted on its AOF (appendfsync always): every
request still gets its one correct answer, and no accepted job is lost or left pending."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

import maas
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster
from tests.faults.ledger import check
from tests.models import reference_model, run_reference

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def durable_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, workers=2, appendonly=True)
    yield cluster
    stop_cluster(cluster)


async def call_until_answered(stub: object, request: object, tally: dict[str, int]) -> object:
    """A client that retries UNAVAILABLE (Redis away) with backoff, as gRPC clients do."""
    pause_s = 0.05
    while True:
        try:
            return await stub.ModelInfer(request, timeout=30)  # type: ignore[attr-defined]
        except grpc.aio.AioRpcError as err:
            if err.code() not in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            tally[err.code().name] = tally.get(err.code().name, 0) + 1
            await asyncio.sleep(pause_s)
            pause_s = min(pause_s * 2, 1.0)


async def test_redis_sigkill_and_restart_loses_nothing(durable_cluster: Cluster) -> None:
    server = durable_cluster.redis
    argv = server.proc.args
    rng = np.random.default_rng(0)
    xs = [rng.random((8, 1, 28, 28), dtype=np.float32) for _ in range(400)]
    tally: dict[str, int] = {}
    async with maas.AsyncClient(durable_cluster.target, timeout_s=60) as client:
        requests = [maas.client.infer_request("cnn", {"input": x}, request_id=f"r{i}")
                    for i, x in enumerate(xs)]
        sem = asyncio.Semaphore(16)

        async def one(request: object) -> object:
            async with sem:
                return await call_until_answered(client._v2, request, tally)

        calls = [asyncio.ensure_future(one(r)) for r in requests]
        while sum(c.done() for c in calls) < 40:  # kill once the load is flowing  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        in_flight = sum(not c.done() for c in calls)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        await asyncio.sleep(1.0)  # Redis is away for a second under load
        server.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,  # noqa: ASYNC220
                                       stderr=subprocess.DEVNULL)
        started = time.monotonic()
        responses = await asyncio.gather(*calls)
        recovered_s = time.monotonic() - started
    model = reference_model("cnn")
    for i, (x, response) in enumerate(zip(xs, responses, strict=True)):
        assert response.id == f"r{i}"  # type: ignore[attr-defined]
        out = maas.client.infer_outputs(response)["output"]  # type: ignore[arg-type]
        assert np.abs(out - run_reference(model, x)).max() <= 1e-5
    r = server.client()
    deadline = time.monotonic() + 30
    while r.xpending(keys.stream("cnn"), keys.GROUP)["pending"] and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.2)  # leases of jobs whose answer was lost are reaped and rerun
    states = [r.hget(k, "state") for k in r.scan_iter(match=keys.job("cnn", "*"))]
    print(f"killed Redis with {in_flight} calls open; {len(responses)} answered, retries "
          f"{tally}, all answered {recovered_s:.1f}s after the restart; job states "
          f"{sorted(set(states))}")
    assert r.xpending(keys.stream("cnn"), keys.GROUP)["pending"] == 0
    assert not {b"QUEUED", b"RUNNING"} & set(states)
    for name in ("gateway", "scheduler", "worker-1", "worker-2"):
        assert durable_cluster.service(name).poll() is None, f"{name} died"
    r.close()
    check(durable_cluster.redis.url, "4 redis SIGKILL + AOF restart", ["mlp", "cnn"])
