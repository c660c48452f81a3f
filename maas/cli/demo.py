"""The short demo `maas up` runs once the cluster is ready: infer, train, infer again."""

from __future__ import annotations

import threading
import time

from maas.client import Client

DEMO_SPEC = {"model_name": "digits-cnn", "architecture": "cnn", "dataset": "digits",
             "optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "batch_size": 16, "epochs": 10,
             "seed": 0, "keep": "best"}


def run_demo(target: str, api_key: str | None = None) -> None:
    """Infers with the demo cnn, trains the seed CNN on digits, infers with the result."""
    import numpy as np

    from maas.datasets import builtin_dataset, present

    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with Client(target, timeout_s=60, api_key=api_key) as client:
        started = time.perf_counter()
        logits = client.infer("cnn", {"input": x})["output"]
        ms = (time.perf_counter() - started) * 1000
        print(f"[maas] demo: cnn on 4 random images → classes {logits.argmax(1).tolist()} "
              f"in {ms:.1f} ms (gateway → Redis → worker)", flush=True)
        started = time.perf_counter()
        job = client.train(DEMO_SPEC).wait()
        best = max((e.val_accuracy for e in job.epochs), default=0.0)
        print(f"[maas] demo: trained {job.model_version} on digits in "
              f"{time.perf_counter() - started:.1f}s: best validation accuracy {best:.3f} "
              f"({len(job.epochs)} epochs, job {job.job_id})", flush=True)
        digits = present(builtin_dataset("digits"), (-1, 1, 28, 28))
        name, _, version = job.model_version.partition(":")
        out = client.infer(name, {"input": digits.features[:12]}, version=version)["output"]
        print(f"[maas] demo: {job.model_version} reads digits {digits.labels[:12].tolist()} "
              f"as {out.argmax(1).tolist()}", flush=True)


def start_demo(target: str, key: str | None) -> threading.Thread:
    def demo() -> None:
        try:
            run_demo(target, key)
        except Exception as exc:  # the demo's boundary: report it, keep the cluster serving
            print(f"[maas] demo failed: {type(exc).__name__}: {exc}", flush=True)

    thread = threading.Thread(target=demo, name="demo", daemon=True)
    thread.start()
    return thread
