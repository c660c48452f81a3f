"""worker/explain.py on every architecture: Integrated Gradients' completeness (attributions
sum to f(x)[target] - f(baseline)[target]), saliency, targets and token attributions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from maas import tensors
from maas.errors import InvalidArgument
from maas.v1.inference_service_pb2 import (
    EXPLAIN_METHOD_INTEGRATED_GRADIENTS,
    EXPLAIN_METHOD_SALIENCY,
)
from maas.v1.model_service_pb2 import ModelVersion, TensorSpec
from runtime.architectures import ARCHITECTURES, get_architecture
from runtime.queue.v1.queue_pb2 import (
    ExplainTask,
    InferTask,
    JobEnvelope,
    JobKind,
    JobState,
    Tensor,
)
from scheduler.queue import Delivery, Started
from worker.cache import LoadedModel, pick_device
from worker.explain import explain, run_with_explanations

ROWS = 3
STEPS = 100
# Completeness: |sum(attributions) - (f(x) - f(baseline))| <= ABS_TOL + REL_TOL * |f(x) - f(b)|
# (Gauss-Legendre, 100 steps, float32; measured: < 0.1 of it for mlp and cnn, ~0 for rnn,
# 0.45 of it for transformer).
ABS_TOL, REL_TOL = 2e-3, 1e-2


def loaded(name: str) -> tuple[LoadedModel, dict[str, Any]]:
    arch = get_architecture(name)
    config = arch.resolve_config(None)
    torch.manual_seed(0)
    device = pick_device("auto")
    module = arch.build(config).to(device).eval()
    spec = [TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape)
            for s in arch.inputs(config)]
    out = [TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape)
           for s in arch.outputs(config)]
    version = ModelVersion(model=name, version="1", architecture=name, inputs=spec, outputs=out)
    return LoadedModel(version, module, device, 0, 0.0), config


def example(name: str, config: dict[str, Any], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "mlp":
        return {"input": rng.random((ROWS, config["in_features"]), dtype=np.float32)}
    if name == "cnn":
        return {"input": rng.random((ROWS, 1, 28, 28), dtype=np.float32)}
    steps = 10
    return {"tokens": rng.integers(1, config["vocab_size"], (ROWS, steps)).astype(np.int64),
            "lengths": np.array([steps, 6, 2], np.int64)}


def as_tensors(values: dict[str, np.ndarray]) -> list[Tensor]:
    return [Tensor(name=k, datatype=tensors.datatype_of(a), shape=a.shape, raw=tensors.to_raw(a))
            for k, a in values.items()]


def logits(model: LoadedModel, values: dict[str, np.ndarray]) -> np.ndarray:
    order = [s.name for s in model.version.inputs]
    with torch.inference_mode():
        out = model.module(*(torch.from_numpy(values[n]).to(model.device) for n in order))
    return out.cpu().double().numpy()  # type: ignore[no-any-return]


def attribution_sums(out: Any) -> np.ndarray:
    sums: np.ndarray = np.zeros(ROWS)
    for a in out.attributions:
        sums = sums + tensors.from_raw(a.raw, a.datatype, a.shape).reshape(ROWS, -1).sum(1)
    return sums


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_integrated_gradients_is_complete(name: str) -> None:
    model, config = loaded(name)
    x = example(name, config)
    task = ExplainTask(inputs=as_tensors(x), method=EXPLAIN_METHOD_INTEGRATED_GRADIENTS,
                       n_steps=STEPS)
    out = explain(model, task)
    at_x = logits(model, x)
    # The default baseline: zeros (token id 0), the other inputs (lengths) unchanged.
    baseline = {k: (v if k == "lengths" else np.zeros_like(v)) for k, v in x.items()}
    at_b = logits(model, baseline)
    targets = at_x.argmax(1)
    assert list(out.targets) == targets.tolist()  # default: the predicted class
    rows = np.arange(ROWS)
    difference = at_x[rows, targets] - at_b[rows, targets]
    np.testing.assert_allclose(out.target_outputs, at_x[rows, targets], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.baseline_outputs, at_b[rows, targets], rtol=1e-4, atol=1e-5)
    error = np.abs(attribution_sums(out) - difference)
    assert (error <= ABS_TOL + REL_TOL * np.abs(difference)).all(), (error, difference)
    np.testing.assert_allclose(out.convergence_deltas, attribution_sums(out) - difference,
                               atol=1e-4)
    [attribution] = out.attributions
    if name in ("rnn", "transformer", "gpt"):  # one value per token, summed over the embedding
        assert (attribution.name, list(attribution.shape)) == ("tokens", [ROWS, 10])
    else:
        assert (attribution.name, list(attribution.shape)) == ("input", list(x["input"].shape))


@pytest.mark.parametrize("name", ["mlp", "rnn"])
def test_given_target_and_baseline(name: str) -> None:
    model, config = loaded(name)
    x = example(name, config)
    base = {k: v for k, v in example(name, config, seed=1).items() if k != "lengths"}
    task = ExplainTask(inputs=as_tensors(x), baselines=as_tensors(base), target=1,
                       method=EXPLAIN_METHOD_INTEGRATED_GRADIENTS, n_steps=STEPS)
    out = explain(model, task)
    assert list(out.targets) == [1] * ROWS
    difference = logits(model, x)[:, 1] - logits(model, {**x, **base})[:, 1]
    error = np.abs(attribution_sums(out) - difference)
    assert (error <= ABS_TOL + REL_TOL * np.abs(difference)).all(), (error, difference)


@pytest.mark.parametrize("name", ["cnn", "transformer"])
def test_saliency_is_the_absolute_gradient(name: str) -> None:
    model, config = loaded(name)
    x = example(name, config)
    out = explain(model, ExplainTask(inputs=as_tensors(x), method=EXPLAIN_METHOD_SALIENCY))
    [attribution] = out.attributions
    values = tensors.from_raw(attribution.raw, attribution.datatype, attribution.shape)
    assert (values >= 0).all() and values.any()
    assert list(out.convergence_deltas) == [] and len(out.targets) == ROWS
    if name == "cnn":  # Captum against a gradient taken here
        inp = torch.from_numpy(x["input"]).to(model.device).requires_grad_()
        out_x = model.module(inp)
        out_x[:, out.targets[0]].sum().backward()
        assert inp.grad is not None
        np.testing.assert_allclose(values[0], inp.grad[0].abs().cpu().numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_target_outside_the_classes_is_invalid_argument() -> None:
    model, config = loaded("mlp")
    task = ExplainTask(inputs=as_tensors(example("mlp", config)), target=10,
                       method=EXPLAIN_METHOD_INTEGRATED_GRADIENTS, n_steps=4)
    with pytest.raises(InvalidArgument, match="target 10"):
        explain(model, task)


def test_a_batch_mixing_inference_and_explanations_keeps_its_order() -> None:
    """worker.loop hands such a batch to run_with_explanations: inferences run in one
    forward, explanations one by one, a failing explanation is FAILED data."""
    model, config = loaded("mlp")
    x = as_tensors(example("mlp", config))

    def started(i: int, **task: Any) -> Started:
        kind = JobKind.JOB_KIND_EXPLAIN if "explain" in task else JobKind.JOB_KIND_INFER
        return Started(Delivery("mlp", f"{i}-0", f"j{i}"), 1,
                       JobEnvelope(job_id=f"j{i}", kind=kind, **task))

    batch = [started(0, infer=InferTask(inputs=x)),
             started(1, explain=ExplainTask(inputs=x, n_steps=8,
                                            method=EXPLAIN_METHOD_INTEGRATED_GRADIENTS)),
             started(2, infer=InferTask(inputs=x)),
             started(3, explain=ExplainTask(inputs=x, target=99, method=EXPLAIN_METHOD_SALIENCY))]
    results = run_with_explanations(model, batch, "w")
    assert [r.job_id for r in results] == ["j0", "j1", "j2", "j3"]
    assert [r.WhichOneof("output") for r in results[:3]] == ["infer", "explain", "infer"]
    assert results[3].state == JobState.JOB_STATE_FAILED
    assert (results[3].error.code, results[3].error.reason) == ("INVALID_ARGUMENT",
                                                                "INVALID_ARGUMENT")
    assert results[1].explain.convergence_deltas and results[0].batch_size == 2
