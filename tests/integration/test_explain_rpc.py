"""maas.v1.InferenceService.Explain end to end in one process: SDK and CLI → a real gateway →
Redis queue → a real worker running Captum; completeness checked against ModelInfer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from safetensors.torch import save

from maas.cli.main import main as cli
from maas.client import Client
from maas.errors import InvalidArgument, ModelNotFound
from maas.rpc import from_rpc_error
from maas.v1 import inference_service_pb2 as ipb
from maas.v1.inference_service_pb2_grpc import InferenceServiceStub
from tests.conftest import RedisServer
from tests.inprocess import running_gateway
from tests.inprocess_worker import running_worker
from tests.models import reference_model

ABS_TOL, REL_TOL = 2e-3, 1e-2  # as tests/unit/test_explain.py


@pytest.fixture(scope="module")
def target(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flush = redis_server.client()
    flush.flushall()
    flush.close()
    data = tmp_path_factory.mktemp("explain")
    with running_gateway(redis_server.url, data) as port, \
            running_worker(redis_server.url, data):
        address = f"127.0.0.1:{port}"
        with Client(address, timeout_s=60) as client:
            for name in ("mlp", "cnn", "rnn"):
                client.register_model(name, name, save(reference_model(name).state_dict()))
        yield address


def test_integrated_gradients_sum_to_the_output_difference(target: str) -> None:
    x = np.random.default_rng(0).random((2, 64), dtype=np.float32)
    base = np.full((1, 64), 0.5, np.float32)
    with Client(target, timeout_s=60) as client:
        e = client.explain("mlp", {"input": x}, baselines={"input": base}, n_steps=100)
        at_x = client.infer("mlp", {"input": x})["output"].astype(np.float64)
        at_b = client.infer("mlp", {"input": base})["output"].astype(np.float64)[0]
    assert e.method == "integrated_gradients" and e.model_version == "1"
    assert e.targets.tolist() == at_x.argmax(1).tolist()
    difference = at_x[[0, 1], e.targets] - at_b[e.targets]
    sums = e.attributions["input"].reshape(2, -1).sum(1)
    assert e.attributions["input"].shape == (2, 64)
    assert (np.abs(sums - difference) <= ABS_TOL + REL_TOL * np.abs(difference)).all()
    np.testing.assert_allclose(e.convergence_deltas, sums - difference, atol=1e-4)


def test_tokens_are_attributed_one_value_each(target: str) -> None:
    tokens = np.array([[3, 9, 4, 1, 0], [7, 7, 2, 0, 0]], np.int64)
    lengths = np.array([4, 3], np.int64)
    with Client(target, timeout_s=60) as client:
        e = client.explain("rnn", {"tokens": tokens, "lengths": lengths}, target=1)
        [at_x] = client.infer("rnn", {"tokens": tokens, "lengths": lengths}).values()
        [at_b] = client.infer("rnn", {"tokens": np.zeros_like(tokens), "lengths": lengths}
                              ).values()
    assert list(e.attributions) == ["tokens"] and e.attributions["tokens"].shape == (2, 5)
    assert e.targets.tolist() == [1, 1]
    difference = (at_x[:, 1] - at_b[:, 1]).astype(np.float64)
    sums = e.attributions["tokens"].sum(1)
    assert (np.abs(sums - difference) <= ABS_TOL + REL_TOL * np.abs(difference)).all()


def test_saliency_and_the_cli(target: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(1).random((1, 1, 28, 28), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    saved = tmp_path / "attributions.npz"
    code = cli(["explain", "cnn", "--input", f"input={tmp_path / 'x.npy'}", "--method",
                "saliency", "--class", "3", "--output", str(saved), "--json",
                "--target", target, "--timeout", "60"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["method"] == "saliency" and doc["targets"] == [3]
    assert doc["convergence_deltas"] == []
    with np.load(saved, allow_pickle=False) as arrays:
        written = arrays["input"]
    assert written.shape == (1, 1, 28, 28) and (written >= 0).all() and written.any()
    np.testing.assert_allclose(doc["attributions"]["input"]["data"], written, rtol=1e-6)


def test_bad_requests_name_every_field(target: str) -> None:
    x = np.zeros((1, 64), np.float32)
    request = ipb.ExplainRequest(model="mlp", n_steps=5000, target=10,
                                 method=ipb.ExplainMethod.ValueType(7))
    request.inputs.add(name="input", datatype="FP32", shape=[1, 63], raw=x.tobytes()[:252])
    request.baselines.add(name="input", datatype="FP64", shape=[1, 64], raw=b"")
    request.baselines.add(name="nope", datatype="FP32", shape=[1], raw=b"\0" * 4)
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as caught:
        InferenceServiceStub(channel).Explain(request, timeout=30)
    err = from_rpc_error(caught.value)
    assert isinstance(err, InvalidArgument), err
    assert {v.field for v in err.violations} == {
        "inputs[0].shape[1]", "method", "n_steps", "target", "baselines[0].datatype",
        "baselines[1].name"}, err.violations
    with Client(target) as client:
        with pytest.raises(InvalidArgument) as bad:
            client.explain("rnn", {"tokens": np.zeros((1, 3), np.int64),
                                   "lengths": np.ones(1, np.int64)},
                           baselines={"lengths": np.ones(1, np.int64)}, n_steps=-1)
        fields = {v.field for v in bad.value.violations}
        assert fields == {"baselines[0].name", "n_steps"}, bad.value.violations
        with pytest.raises(ModelNotFound):
            client.explain("no-such-model", {"input": x})
