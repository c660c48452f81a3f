"""Metrics and health of the real processes: each serves `/metrics` on its own port
(MAAS_METRICS_PORT), workers and the scheduler serve grpc.health.v1 (MAAS_HEALTH_PORT), and
the gateway answers `model/<name>` readiness."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import maas
from maas.cli.demo import DEMO_SPEC
from maas.cli.up import free_port
from maas.inference.grpc_service_pb2_grpc import GRPCInferenceServiceStub
from tests.conftest import Cluster, start_cluster, stop_cluster

pytestmark = pytest.mark.timeout(120)
SERVING = health_pb2.HealthCheckResponse.SERVING
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, dict]]:
    """One worker, no training slots (so a training job stays queued), every port known."""
    ports = {name: {"MAAS_METRICS_PORT": str(free_port()), "MAAS_HEALTH_PORT": str(free_port())}
             for name in ("gateway", "scheduler", "worker-1")}
    debug = {"worker-1": {**ports["worker-1"], "MAAS_LOG_LEVEL": "DEBUG"}}  # batch log lines
    cluster = start_cluster(tmp_path_factory.mktemp("observed"), workers=1,
                            service_env={**ports, **debug},
                            training_slots="0", log_format="json")
    yield cluster, {n: {k: int(v) for k, v in p.items()} for n, p in ports.items()}
    stop_cluster(cluster)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a process's /metrics, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and set(labels.items()) <= ls)


def health(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


def test_gateway_and_worker_count_requests(observed: tuple[Cluster, dict]) -> None:
    cluster, ports = observed
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    with maas.Client(cluster.target, timeout_s=30) as client:
        for _ in range(5):
            client.infer("cnn", {"input": x})
        with pytest.raises(maas.ModelNotFound):
            client.infer("no-such-model", {"input": x})
    gateway = scrape(ports["gateway"]["MAAS_METRICS_PORT"])
    assert value(gateway, "maas_inference_request_success_total", model="cnn",
                 version="1") >= 5
    # Unknown names are not labels (a caller could mint series): they count as _unknown.
    assert value(gateway, "maas_inference_request_failure_total", model="_unknown",
                 reason="MODEL_NOT_FOUND") == 1
    assert value(gateway, "maas_inference_request_duration_us_count", model="cnn") >= 5
    worker = scrape(ports["worker-1"]["MAAS_METRICS_PORT"])
    for histogram in ("maas_inference_queue_duration_us", "maas_inference_compute_duration_us"):
        assert value(worker, f"{histogram}_count", model="cnn") >= 5, histogram
        assert value(worker, f"{histogram}_sum", model="cnn") > 0, histogram
    assert value(worker, "maas_batch_size_count", model="cnn") >= 1
    assert value(worker, "maas_worker_busy_seconds_total") > 0
    assert value(worker, "maas_worker_model_memory_bytes") > 0  # cnn loaded (heartbeat)
    assert ("maas_worker_model_memory_budget_bytes", frozenset()) in worker
    assert value(worker, "process_cpu_seconds_total") > 0  # the default collectors too


def test_scheduler_exports_queue_depth_and_age(observed: tuple[Cluster, dict]) -> None:
    cluster, ports = observed
    with maas.Client(cluster.target, timeout_s=30) as client:
        job = client.train({**DEMO_SPEC, "model_name": "queued-only"})
        port = ports["scheduler"]["MAAS_METRICS_PORT"]
        deadline = time.monotonic() + 15
        while True:  # no worker trains (MAAS_TRAINING_SLOTS=0): the job stays queued
            samples = scrape(port)
            if value(samples, "maas_training_jobs", state="queued") == 1 or (
                    time.monotonic() > deadline):
                break
            time.sleep(0.2)
        job.cancel()
    assert value(samples, "maas_training_jobs", state="queued") == 1
    assert value(samples, "maas_training_jobs", state="running") == 0
    assert value(samples, "maas_workers_wanted") == 1  # KEDA's signal: the queued job's worker
    assert value(samples, "maas_queue_depth", model="_train") == 1
    assert value(samples, "maas_queue_oldest_age_seconds", model="_train") > 0
    assert ("maas_queue_depth", frozenset({("model", "cnn")})) in samples
    assert value(samples, "maas_queue_depth", model="cnn") == 0


def test_health_of_every_process(observed: tuple[Cluster, dict]) -> None:
    cluster, ports = observed
    for name in ("worker-1", "scheduler"):
        port = ports[name]["MAAS_HEALTH_PORT"]
        assert health(port, "") == SERVING, name
        assert health(port, "liveness") == SERVING, name
    gateway_port = int(cluster.target.rsplit(":", 1)[1])
    assert health(gateway_port, "model/cnn") == SERVING
    assert health(gateway_port, "model/cnn:1") == SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health(gateway_port, "model/no-such-model")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_trace_context_reaches_the_worker_log(observed: tuple[Cluster, dict],
                                             capfd: pytest.CaptureFixture[str]) -> None:
    """The caller's W3C `traceparent` metadata travels in the job's envelope: the worker's
    JSON log of the batch carries its trace id, the job id and the model."""
    cluster, _ = observed
    request = maas.client.infer_request("mlp", {"input": np.zeros((1, 64), np.float32)})
    with grpc.insecure_channel(cluster.target) as channel:
        GRPCInferenceServiceStub(channel).ModelInfer(
            request, timeout=30, metadata=(("traceparent", TRACEPARENT), ("other", "x")))
    trace_id = TRACEPARENT.split("-")[1]
    found: list[dict] = []
    deadline = time.monotonic() + 10
    while not found and time.monotonic() < deadline:
        for line in capfd.readouterr().out.splitlines():
            _, _, text = line.partition("] ")
            if line.startswith("[worker-1]") and trace_id in text:
                found.append(json.loads(text))
        time.sleep(0.1)
    assert found, "no worker log line with the trace id"
    assert found[0]["model"] == "mlp" and found[0]["job_id"]
    assert found[0]["trace_id"] == trace_id
