"""Inference end to end through the real processes: tritonclient and the SDK."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import maas
from maas.inference import grpc_service_pb2 as v2
from tests.conftest import Cluster
from tests.models import reference_model, run_reference

pytestmark = pytest.mark.timeout(180)


def test_tritonclient_metadata_and_readiness(cluster: Cluster) -> None:
    client = grpcclient.InferenceServerClient(cluster.target)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("cnn")
    meta = client.get_model_metadata("cnn")
    assert meta.name == "cnn"
    assert list(meta.inputs[0].shape) == [-1, 1, 28, 28]
    assert meta.inputs[0].name == "input" and meta.inputs[0].datatype == "FP32"
    assert meta.outputs[0].name == "output" and list(meta.outputs[0].shape) == [-1, 10]


@pytest.mark.parametrize("batch", [1, 5])
def test_tritonclient_infer_equals_in_process(cluster: Cluster, batch: int) -> None:
    x = np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)
    client = grpcclient.InferenceServerClient(cluster.target)
    inp = grpcclient.InferInput("input", [batch, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer("cnn", [inp], request_id="r-1")
    assert got.get_response().id == "r-1"
    expected = run_reference(reference_model("cnn"), x)
    assert np.abs(got.as_numpy("output") - expected).max() <= 1e-5


def test_tritonclient_typed_contents(cluster: Cluster) -> None:
    """Inputs sent as typed `contents` (not raw) give the same result."""
    x = np.random.default_rng(7).random((2, 64), dtype=np.float32)
    client = grpcclient.InferenceServerClient(cluster.target)
    request = v2.ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[2, 64])
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    response = client._client_stub.ModelInfer(request, timeout=30)  # the generated stub path
    out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 10)
    assert np.abs(out - run_reference(reference_model("mlp"), x)).max() <= 1e-5


def test_sdk_infer_and_models(cluster: Cluster) -> None:
    x = np.random.default_rng(3).random((3, 64), dtype=np.float32)
    with maas.Client(cluster.target) as client:
        out = client.infer("mlp", {"input": x})
        assert set(out) == {"output"}
        assert np.abs(out["output"] - run_reference(reference_model("mlp"), x)).max() <= 1e-5
        model = client.get_model("cnn")
        assert model.latest_version == "1"
        assert len(model.versions[0].weights_sha256) == 64
        assert {m.name for m in client.list_models()} >= {"mlp", "cnn"}


async def test_concurrent_requests_form_batches(cluster: Cluster) -> None:
    """64 concurrent callers: every answer is right, and the worker batched some of them."""
    rng = np.random.default_rng(11)
    xs = [rng.random((1, 1, 28, 28), dtype=np.float32) for _ in range(64)]
    model = reference_model("cnn")
    async with maas.AsyncClient(cluster.target) as client:
        requests = [maas.client.infer_request("cnn", {"input": x}) for x in xs]
        responses = await asyncio.gather(*(client._v2.ModelInfer(r, timeout=60)
                                           for r in requests))
    batch_sizes = []
    for x, response in zip(xs, responses, strict=True):
        out = maas.client.infer_outputs(response)["output"]
        assert np.abs(out - run_reference(model, x)).max() <= 1e-5
        batch_sizes.append(response.parameters["maas_batch_size"].int64_param)
    assert max(batch_sizes) > 1, f"no batch formed: {batch_sizes}"


async def test_async_client_infer(cluster: Cluster) -> None:
    x = np.random.default_rng(5).random((2, 1, 28, 28), dtype=np.float32)
    async with maas.AsyncClient(cluster.target) as client:
        out = await client.infer("cnn", {"input": x}, version="1")
    assert np.abs(out["output"] - run_reference(reference_model("cnn"), x)).max() <= 1e-5


@pytest.mark.parametrize("priority", [1, 2, 7])
def test_tritonclient_priority_is_honoured(cluster: Cluster, priority: int) -> None:
    """tritonclient sends `priority` as a uint64 parameter; each level has its own stream."""
    x = np.random.default_rng(priority).random((1, 1, 28, 28), dtype=np.float32)
    client = grpcclient.InferenceServerClient(cluster.target)
    inp = grpcclient.InferInput("input", [1, 1, 28, 28], "FP32")
    inp.set_data_from_numpy(x)
    got = client.infer("cnn", [inp], priority=priority).as_numpy("output")
    assert np.abs(got - run_reference(reference_model("cnn"), x)).max() <= 1e-5
