"""Training throughput: the same job (seed CNN on digits, batch 16) in-process and through
maas, side by side. Reports steady samples/s (as the runner measures each epoch) and the
end-to-end rate (all samples / wall time from submit to a servable model version)."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import maas
from maas.cli.up import LocalCluster, free_port, start_redis, wait_ready

SPEC = {"architecture": "cnn", "dataset": "digits", "optimizer": "sgd", "lr": 0.02,
        "momentum": 0.9, "batch_size": 16, "seed": 0, "checkpoint_every": 100}


def in_process(epochs: int) -> dict[str, float]:
    import torch

    from runtime.datasets import builtin_dataset
    from runtime.training_spec import TrainingSpec
    from worker.training.runner import run_training

    torch.set_num_threads(1)
    rates: list[float] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "progress":
            rates.append(event["samples_per_second"])

    spec = TrainingSpec.from_dict({**SPEC, "epochs": epochs})
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        outcome = run_training(spec, builtin_dataset("digits"), Path(tmp), on_event,
                               device="cpu")
        wall_s = time.perf_counter() - started
    samples = outcome.steps * spec.batch_size
    return {"steady_samples_per_s": statistics.median(rates), "wall_s": wall_s,
            "end_to_end_samples_per_s": samples / wall_s, "steps": outcome.steps}


def through_maas(epochs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(dict(os.environ), Path(tmp))
        port = free_port()
        try:
            cluster.env.update(MAAS_REDIS_URL=start_redis(cluster), MAAS_DATA_DIR=tmp,
                               MAAS_GATEWAY_PORT=str(port), MAAS_LOG_LEVEL="WARNING")
            for name, module in (("scheduler", "scheduler"), ("gateway", "gateway"),
                                 ("worker-1", "worker")):
                cluster.add(name, [sys.executable, "-m", module])
            target = f"127.0.0.1:{port}"
            wait_ready(target, cluster)
            time.sleep(2)  # let the worker finish starting (torch import) before timing
            with maas.Client(target) as client:
                started = time.perf_counter()
                handle = client.train({**SPEC, "epochs": epochs, "model_name": "bench-cnn"})
                rates = [e.progress.samples_per_second for e in handle.watch()
                         if e.WhichOneof("event") == "progress"]
                wall_s = time.perf_counter() - started
                job = handle.refresh()
        finally:
            cluster.stop()
    samples = job.progress.global_step * SPEC["batch_size"]
    return {"steady_samples_per_s": statistics.median(rates), "wall_s": wall_s,
            "end_to_end_samples_per_s": samples / wall_s, "steps": job.progress.global_step,
            "state": job.state}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.training")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    local = in_process(args.epochs)
    remote = through_maas(args.epochs)
    ratios = {k: remote[k] / local[k] for k in ("steady_samples_per_s",
                                                  "end_to_end_samples_per_s")}
    doc = {"epochs": args.epochs, "in_process": local, "maas": remote, "ratios": ratios}
    print(json.dumps(doc, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{time.strftime('%Y-%m-%d-%H%M%S')}-training.json").write_text(json.dumps(doc))


if __name__ == "__main__":
    main()
