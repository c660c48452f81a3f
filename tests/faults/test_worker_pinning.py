"""Placement by pinning (MAAS_WORKER_MODELS): each model's jobs go only to the workers that
serve it; a model whose only worker dies is refused UNAVAILABLE (NO_WORKER_FOR_MODEL, with a
retry delay) until a worker for it is back; a version larger than a worker's model memory
fails its jobs MODEL_TOO_LARGE and the worker lives on; `maas workers list` shows it all."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import torch
from safetensors.torch import save

import maas
from maas.errors import DeadlineExceeded, ModelTooLarge, Unavailable
from runtime.architectures import get_architecture
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

MAAS = [sys.executable, "-m", "maas.cli.main"]
MLP_X = {"input": np.zeros((1, 64), np.float32)}
CNN_X = {"input": np.zeros((1, 1, 28, 28), np.float32)}
BIG = {"in_features": 64, "hidden": [1024, 1024], "num_classes": 10}  # ~4.4 MiB of FP32


@pytest.fixture
def pinned(tmp_path: Path) -> Iterator[Cluster]:
    cluster = start_cluster(tmp_path, workers=2, service_env={
        "worker-1": {"MAAS_WORKER_MODELS": "mlp, big", "MAAS_WORKER_MODEL_MEMORY_MB": "1"},
        "worker-2": {"MAAS_WORKER_MODELS": "cnn"}})
    yield cluster
    stop_cluster(cluster)


def readers(r: redis.Redis, model: str) -> set[str]:
    """The workers that have read the model's stream (consumers of its group)."""
    return {c["name"].decode() for c in r.xinfo_consumers(keys.stream(model), keys.GROUP)
            if c["name"].decode().startswith("worker-")}


def workers_list(cluster: Cluster) -> list[dict[str, object]]:
    done = subprocess.run([*MAAS, "workers", "list", "--target", cluster.target, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["workers"])


def until(check: Callable[[], object], timeout_s: float, what: str) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s: {what}")


def refusal(client: maas.Client) -> Unavailable | None:
    try:
        client.infer("cnn", CNN_X, timeout_s=1.0)
    except Unavailable as err:
        return err
    except DeadlineExceeded:  # queued while the dead worker's record lasts
        pass
    return None


def test_pinned_workers_serve_only_their_models(pinned: Cluster) -> None:
    r = pinned.redis.client()
    with maas.Client(pinned.target, timeout_s=30) as client:
        for _ in range(5):
            client.infer("mlp", MLP_X)
            client.infer("cnn", CNN_X)
        assert readers(r, "mlp") == {"worker-1"}
        assert readers(r, "cnn") == {"worker-2"}

        # Weights larger than worker-1's whole model memory: refused, never loaded.
        arch = get_architecture("mlp")
        torch.manual_seed(0)
        weights = save(arch.build(arch.resolve_config(BIG)).state_dict())
        client.register_model("big", "mlp", weights, BIG)
        with pytest.raises(ModelTooLarge) as too_large:
            client.infer("big", MLP_X)
        assert too_large.value.reason == "MODEL_TOO_LARGE"
        assert "MAAS_WORKER_MODEL_MEMORY_MB" in too_large.value.message
        client.infer("mlp", MLP_X)  # worker-1 lives on
        assert pinned.service("worker-1").poll() is None

        listed = {w["worker_id"]: w for w in workers_list(pinned)}
        assert listed["worker-1"]["serves"] == ["big", "mlp"]
        assert listed["worker-1"]["loaded"] == ["mlp:1"]
        assert 0 < int(str(listed["worker-1"]["model_memory_bytes"])) <= 1024 * 1024
        assert listed["worker-1"]["model_memory_budget_bytes"] == str(1024 * 1024)
        assert listed["worker-2"]["serves"] == ["cnn"]
        assert listed["worker-2"]["loaded"] == ["cnn:1"]

        # cnn's only worker dies: its model is refused within a few seconds, mlp still runs.
        pinned.service("worker-2").send_signal(signal.SIGKILL)
        pinned.service("worker-2").wait(10)
        refused = until(lambda: refusal(client), 10, "cnn refused")
        assert isinstance(refused, Unavailable)
        assert refused.reason == "NO_WORKER_FOR_MODEL"
        assert refused.retry_delay_s and "MAAS_WORKER_MODELS" in refused.message
        client.infer("mlp", MLP_X)

        # A worker for cnn is back: cnn is served again.
        service = next(s for s in pinned.local.services if s.name == "worker-2")
        pinned.local.start(service)
        until(lambda: refusal(client) is None and client.infer("cnn", CNN_X, timeout_s=10),
              60, "cnn served again")
    text = subprocess.run([*MAAS, "workers", "list", "--target", pinned.target],
                          capture_output=True, text=True, timeout=60).stdout
    assert "worker-1  device cpu  serves big,mlp  loaded mlp:1" in text, text
