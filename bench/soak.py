"""`make soak`: a bounded soak of the real cluster under faults, printing what was accepted,
completed, lost and duplicated.

Mixed models (mlp, cnn), synchronous v2 calls and asynchronous jobs (each with its own
request_id, retried on UNAVAILABLE with the same id), random worker SIGKILLs (the local
supervisor restarts them) and one redis-server SIGKILL + restart on its AOF halfway through.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np
import redis

import maas
from maas.cli.up import (
    LocalCluster,
    free_port,
    register_demo_models,
    start_redis,
    wait_models_ready,
    wait_ready,
)
from maas.client import infer_outputs, job_outputs
from maas.v1.inference_service_pb2 import InferenceJob
from scheduler import keys
from tests.models import reference_model, run_reference

SHAPES = {"mlp": (2, 64), "cnn": (2, 1, 28, 28)}


@dataclass
class Counts:
    accepted: int = 0
    completed: int = 0
    wrong: int = 0
    expired: int = 0  # answered DEADLINE_EXCEEDED: a terminal state, not a loss
    lost: int = 0
    duplicated: int = 0
    refused_retried: int = 0
    worker_kills: int = 0
    redis_restarts: int = 0


class Soak:
    def __init__(self, target: str, redis_url: str) -> None:
        self.target, self.redis_url = target, redis_url
        self.counts = Counts()
        self.async_jobs: dict[str, tuple[str, np.ndarray]] = {}
        self.models = {m: reference_model(m) for m in SHAPES}

    def correct(self, model: str, x: np.ndarray, out: np.ndarray) -> bool:
        return bool(np.abs(out - run_reference(self.models[model], x)).max() <= 1e-5)

    async def sync_caller(self, client: maas.AsyncClient, stop_at: float) -> None:
        rng = np.random.default_rng()
        while time.monotonic() < stop_at:
            model = random.choice(list(SHAPES))
            x = rng.random(SHAPES[model], dtype=np.float32)
            request = maas.client.infer_request(model, {"input": x})
            try:
                response = await client._v2.ModelInfer(request, timeout=30)
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    self.counts.accepted += 1
                    self.counts.expired += 1
                    continue
                if err.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                self.counts.refused_retried += 1  # not accepted: the caller retries
                await asyncio.sleep(0.2)
                continue
            self.counts.accepted += 1
            ok = self.correct(model, x, infer_outputs(response)["output"])
            self.counts.completed += ok
            self.counts.wrong += not ok

    async def async_submitter(self, client: maas.AsyncClient, stop_at: float,
                              index: int) -> None:
        rng = np.random.default_rng()
        n = 0
        while time.monotonic() < stop_at:
            model = random.choice(list(SHAPES))
            x = rng.random(SHAPES[model], dtype=np.float32)
            request_id = f"soak-{os.getpid()}-{index}-{n}"
            n += 1
            while True:
                try:
                    job = await client.submit(model, {"input": x}, request_id=request_id,
                                              deadline_s=300)
                    break
                except maas.Unavailable:
                    self.counts.refused_retried += 1
                    await asyncio.sleep(0.2)
            self.counts.accepted += 1
            self.async_jobs[job.job_id] = (model, x)
            await asyncio.sleep(0.01)

    async def collect(self, client: maas.AsyncClient) -> None:
        for job_id, (model, x) in self.async_jobs.items():
            job = await client.wait_job(job_id, timeout_s=120)
            if job.state == InferenceJob.EXPIRED:
                self.counts.expired += 1
            elif job.state != InferenceJob.SUCCEEDED:
                self.counts.lost += 1
            elif self.correct(model, x, job_outputs(job)["output"]):
                self.counts.completed += 1
            else:
                self.counts.wrong += 1
        r = redis.Redis.from_url(self.redis_url)
        per_model = {m: len(list(r.scan_iter(match=keys.job(m, f"{m}:*"), count=1000)))
                     for m in SHAPES}
        # One job per request_id: more async job records than submits would be duplicates.
        self.counts.duplicated = max(0, sum(per_model.values()) - len(self.async_jobs))
        r.close()


def kill_faults(cluster: LocalCluster, stop_at: float, counts: Counts,
                restart_redis_at: float) -> None:
    """Runs in a thread: SIGKILLs a random worker every 8-15 s while another one is up (the
    supervisor restarts it), and Redis once."""
    redis_done = False
    while time.monotonic() < stop_at:
        time.sleep(random.uniform(8, 15))
        if not redis_done and time.monotonic() > restart_redis_at:
            server = next(s for s in cluster.services if s.name == "redis")
            assert server.proc is not None
            server.proc.send_signal(signal.SIGKILL)  # the supervisor restarts it on its AOF
            counts.redis_restarts += 1
            redis_done = True
            continue
        workers = [s for s in cluster.services if s.name.startswith("worker") and s.proc
                   and s.proc.poll() is None]
        if len(workers) > 1:
            random.choice(workers).proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
            counts.worker_kills += 1


async def drive(soak: Soak, cluster: LocalCluster, seconds: float) -> None:
    stop_at = time.monotonic() + seconds
    faults = asyncio.to_thread(kill_faults, cluster, stop_at, soak.counts,
                               time.monotonic() + seconds / 2)

    async def supervise() -> None:
        while time.monotonic() < stop_at + 5:
            cluster.supervise_once()
            await asyncio.sleep(0.2)

    async with maas.AsyncClient(soak.target, timeout_s=120) as client:
        await asyncio.gather(faults, supervise(),
                             *(soak.sync_caller(client, stop_at) for _ in range(8)),
                             *(soak.async_submitter(client, stop_at, i) for i in range(2)))
        await soak.collect(client)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak")
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        port = free_port()
        try:
            url = start_redis(cluster)
            cluster.env.update(MAAS_REDIS_URL=url, MAAS_DATA_DIR=tmp, MAAS_GATEWAY_PORT=str(port),
                               MAAS_LOG_LEVEL="WARNING", MAAS_INFER_LEASE_MS="1000")
            for name, module in (("scheduler", "scheduler"), ("gateway", "gateway"),
                                 ("worker-1", "worker"), ("worker-2", "worker")):
                cluster.add(name, [sys.executable, "-m", module])
            target = f"127.0.0.1:{port}"
            wait_ready(target, cluster)
            register_demo_models(target)
            wait_models_ready(target, list(SHAPES), cluster)
            soak = Soak(target, url)
            asyncio.run(drive(soak, cluster, args.seconds))
        finally:
            cluster.stop()
    print("soak: " + json.dumps(asdict(soak.counts)))
    bad = soak.counts.lost + soak.counts.duplicated + soak.counts.wrong
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
