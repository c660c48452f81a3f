"""A worker's memory with N models loaded, and the cost of reloading an evicted model.

Registers N mlp models (hidden 1024x1024, ~4.5 MiB each), infers each once, and reads the
worker's RSS after each load; then, with a budget of about half of them, measures a request
that finds its model evicted (a reload) against a warm one. `--large-mb 500` instead
registers one mlp of about that size (streamed upload) and measures its first request (the
load: memory-mapped safetensors, assigned without a copy) against a warm one, and the
worker's resident memory before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

import maas
from maas.cli.up import LocalCluster, free_port, start_redis, wait_ready
from runtime.architectures import get_architecture

CONFIG = {"in_features": 64, "hidden": [1024, 1024], "num_classes": 10}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def weights(seed: int) -> bytes:
    arch = get_architecture("mlp")
    torch.manual_seed(seed)
    return save(arch.build(arch.resolve_config(CONFIG)).state_dict())


@contextlib.contextmanager
def one_worker_cluster(**env: str) -> Iterator[tuple[str, int]]:
    """A local cluster (its own redis-server, scheduler, gateway, one worker): the target and
    the worker's pid."""
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        port = free_port()
        try:
            cluster.env.update(MAAS_REDIS_URL=start_redis(cluster), MAAS_DATA_DIR=tmp,
                               MAAS_GATEWAY_PORT=str(port), MAAS_LOG_LEVEL="WARNING", **env)
            for name, module in (("scheduler", "scheduler"), ("gateway", "gateway"),
                                 ("worker-1", "worker")):
                cluster.add(name, [sys.executable, "-m", module])
            target = f"127.0.0.1:{port}"
            wait_ready(target, cluster)
            worker = next(s for s in cluster.services if s.name == "worker-1").proc
            assert worker is not None
            time.sleep(2)
            yield target, worker.pid
        finally:
            cluster.stop()


def run(n_models: int, budget_mb: int) -> dict[str, object]:
    with one_worker_cluster(MAAS_WORKER_MODEL_MEMORY_MB=str(budget_mb)) as (target, pid):
        x = {"input": np.zeros((1, 64), np.float32)}
        with maas.Client(target, timeout_s=60) as client:
            rss = [rss_mib(pid)]
            for i in range(n_models):
                client.register_model(f"big{i}", "mlp", weights(i), CONFIG)
                client.infer(f"big{i}", x)
                rss.append(rss_mib(pid))
            warm, cold = [], []
            for i in range(n_models):  # cycling through more models than fit: reloads
                started = time.perf_counter()
                client.infer(f"big{i}", x)
                cold.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                client.infer(f"big{i}", x)
                warm.append((time.perf_counter() - started) * 1000)
    return {"models": n_models, "budget_mb": budget_mb, "rss_mib": rss,
            "rss_per_model_mib": (rss[-1] - rss[0]) / n_models,
            "first_request_ms_median": statistics.median(cold),
            "warm_request_ms_median": statistics.median(warm)}


def large(model_mb: int) -> dict[str, object]:
    """One mlp of about model_mb: upload time, load (first request) time, worker RSS."""
    width = int((model_mb * 2**20 / 4) ** 0.5)  # the width x width layer holds most of it
    config = {"in_features": 64, "hidden": [width, width], "num_classes": 10}
    arch = get_architecture("mlp")
    with torch.no_grad():
        data = save(arch.build(arch.resolve_config(config)).state_dict())
    with one_worker_cluster() as (target, pid):
        x = {"input": np.zeros((1, 64), np.float32)}
        with maas.Client(target, timeout_s=300) as client:
            before = rss_mib(pid)
            started = time.perf_counter()
            client.register_model("large", "mlp", data, config)
            upload_s = time.perf_counter() - started
            started = time.perf_counter()
            client.infer("large", x)
            first_ms = (time.perf_counter() - started) * 1000
            after = rss_mib(pid)
            warm = []
            for _ in range(5):
                started = time.perf_counter()
                client.infer("large", x)
                warm.append((time.perf_counter() - started) * 1000)
    return {"model_mb": round(len(data) / 2**20, 1), "upload_s": round(upload_s, 2),
            "first_request_ms": round(first_ms, 1),
            "warm_request_ms_median": round(statistics.median(warm), 2),
            "worker_rss_mib_before": round(before, 1), "worker_rss_mib_after": round(after, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory")
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--large-mb", type=int, default=0,
                        help="instead: one model of about this many MB (load time, RSS)")
    args = parser.parse_args()
    if args.large_mb:
        print(json.dumps(large(args.large_mb), indent=2))
        return
    unlimited = run(args.models, 0)
    budget = run(args.models, int(args.models * 4.5 / 2))
    print(json.dumps({"unlimited": unlimited, "budget": budget}, indent=2))


if __name__ == "__main__":
    main()
