"""Placement by memory with the real processes: a version larger than one worker's model memory
(MAAS_WORKER_MODEL_MEMORY_MB) is served by a worker that has room for it — the small worker
hands the jobs it reads back, their attempts refunded — and, with only workers too small for
it live, it is refused MODEL_TOO_LARGE by the gateway at once, nothing queued."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import save

import maas
from maas.cli.up import free_port
from maas.errors import ModelTooLarge
from maas.inference import grpc_service_pb2 as pb
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from runtime.architectures import get_architecture
from scheduler import keys
from tests.conftest import Cluster, start_cluster, stop_cluster

pytestmark = pytest.mark.timeout(120)

BIG = {"in_features": 64, "hidden": [1024, 1024], "num_classes": 10}  # ~4.3 MiB of FP32
X = np.zeros((1, 64), np.float32)
CALLERS = 4


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, int]]:
    """worker-1 with 1 MiB of model memory, worker-2 unlimited; worker-1's metrics port."""
    port = free_port()
    cluster = start_cluster(tmp_path_factory.mktemp("memory"), workers=2, service_env={
        "worker-1": {"MAAS_WORKER_MODEL_MEMORY_MB": "1", "MAAS_METRICS_PORT": str(port)}})
    yield cluster, port
    stop_cluster(cluster)


def counted(port: int, name: str, model: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return sum(s.value for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name and s.labels.get("model") == model)


def attempts_of_concurrent_requests(target: str) -> list[int]:
    """CALLERS requests at once; the attempt each response reports (a failure raises)."""
    request = pb.ModelInferRequest(model_name="big", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 64])],
        raw_input_contents=[X.tobytes()])
    attempts: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with grpc.insecure_channel(target) as channel:
                reply = GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
            attempts.append(reply.parameters["maas_attempt"].int64_param)
        except grpc.RpcError as err:
            errors.append(err)

    threads = [threading.Thread(target=call) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return attempts


def entries_added(cluster: Cluster) -> int:
    """Jobs ever queued for big (XINFO STREAM's entries-added: deleted entries count too)."""
    return int(cluster.redis.client().xinfo_stream(keys.stream("big"))["entries-added"])


def test_a_version_too_large_for_one_worker_runs_on_one_that_fits(
        cluster: tuple[Cluster, int]) -> None:
    local, metrics_port = cluster
    arch = get_architecture("mlp")
    torch.manual_seed(0)
    weights = save(arch.build(arch.resolve_config(BIG)).state_dict())
    with maas.Client(local.target, timeout_s=30) as client:
        client.register_model("big", "mlp", weights, BIG)
        attempts: list[int] = []
        # Whichever worker is blocked reading first takes a round: worker-1, once it reads
        # big's stream (its model list is refreshed every second), now and then.
        for _ in range(40):
            attempts += attempts_of_concurrent_requests(local.target)
            if counted(metrics_port, "maas_worker_jobs_handed_back_total", "big") >= 1:
                break
            time.sleep(0.25)
        assert counted(metrics_port, "maas_worker_jobs_handed_back_total", "big") >= 1
        assert attempts and set(attempts) == {1}  # every one ran once: hand-backs refunded
        assert counted(metrics_port, "maas_inference_compute_duration_us_count", "big") == 0
        assert local.service("worker-1").poll() is None

        # Only worker-1 is left: the gateway refuses at once, and queues nothing.
        local.service("worker-2").send_signal(signal.SIGTERM)
        local.service("worker-2").wait(30)  # it leaves the worker directory as it stops
        time.sleep(1.2)  # the gateway's worker directory is cached for a second
        queued = entries_added(local)
        began = time.monotonic()
        with pytest.raises(ModelTooLarge) as refused:
            client.infer("big", {"input": X})
        assert time.monotonic() - began < 2.0
        with pytest.raises(ModelTooLarge):
            client.submit("big", {"input": X})
        assert entries_added(local) == queued
    message = refused.value.message
    assert refused.value.reason == "MODEL_TOO_LARGE"
    assert f"needs {len(weights) / 2**20:.1f} MiB" in message
    assert "1 live worker(s)" in message and "MAAS_WORKER_MODEL_MEMORY_MB=1" in message
