"""Serving the sequence architectures: gateway validation of tokens/lengths, and the worker's
batch of variable-length jobs (padded to the longest) against each job run alone."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from gateway.validation import infer_task
from maas import tensors
from maas.errors import InvalidArgument
from maas.inference.grpc_service_pb2 import ModelInferRequest
from maas.v1.model_service_pb2 import ModelVersion, TensorSpec
from runtime.architectures import get_architecture
from runtime.queue.v1.queue_pb2 import InferTask, JobState
from worker.cache import LoadedModel
from worker.executor import run_batch

CONFIG = {"vocab_size": 10, "max_len": 16, "num_classes": 3}


def version_of(name: str) -> ModelVersion:
    arch = get_architecture(name)
    config = arch.resolve_config({"transformer": CONFIG, "gpt": {"max_len": 16}}.get(
        name, {"vocab_size": 10}))
    return ModelVersion(
        model=name, version="1", architecture=name, config_json=json.dumps(config),
        inputs=[TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape)
                for s in arch.inputs(config)],
        outputs=[TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape)
                 for s in arch.outputs(config)])


TRANSFORMER = version_of("transformer")


def request(tokens: np.ndarray, lengths: Sequence[int]) -> ModelInferRequest:
    found = ModelInferRequest(model_name="transformer")
    for name, array in (("tokens", tokens), ("lengths", np.asarray(lengths, np.int64))):
        found.inputs.add(name=name, datatype="INT64", shape=array.shape)
        found.raw_input_contents.append(tensors.to_raw(array.astype(np.int64)))
    return found


def violations(tokens: np.ndarray, lengths: Sequence[int]) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        infer_task(request(tokens, lengths), TRANSFORMER)
    return [v.field for v in caught.value.violations]


def test_any_batch_and_sequence_length_is_accepted() -> None:
    for shape in ((1, 1), (3, 16), (40, 7)):
        task = infer_task(request(np.ones(shape, np.int64), [1] * shape[0]), TRANSFORMER)
        assert [list(t.shape) for t in task.inputs] == [list(shape), [shape[0]]]


@pytest.mark.parametrize(("tokens", "lengths", "field"), [
    (np.ones((2, 4)), [4], "inputs[1].shape[0]"),
    (np.ones((2, 4)), [4, 4, 4], "inputs[1].shape[0]"),
    (np.ones((2, 4)), [4, 0], "inputs[1]"),
    (np.ones((2, 4)), [5, 1], "inputs[1]"),
    (np.full((2, 4), 10), [4, 4], "inputs[0]"),
    (np.full((2, 4), -1), [4, 4], "inputs[0]"),
    (np.ones((1, 17)), [17], "inputs[0].shape[1]"),
])
def test_bad_sequences_are_invalid_argument(tokens: np.ndarray, lengths: list[int],
                                            field: str) -> None:
    assert violations(tokens, lengths) == [field]


def test_the_message_says_what_to_fix() -> None:
    with pytest.raises(InvalidArgument) as caught:
        infer_task(request(np.full((1, 3), 12), [3]), TRANSFORMER)
    assert "[0, 10)" in caught.value.message and "12" in caught.value.message


def _task(tokens: np.ndarray, lengths: np.ndarray) -> InferTask:
    return infer_task(request(tokens, lengths.tolist()), TRANSFORMER)


@pytest.mark.parametrize("name", ["rnn", "transformer", "gpt"])
def test_a_batch_of_different_lengths_gives_each_job_its_own_logits(name: str) -> None:
    version = version_of(name)
    arch = get_architecture(name)
    torch.manual_seed(0)
    module = arch.build(arch.resolve_config(json.loads(version.config_json))).eval()
    loaded = LoadedModel(version, module, torch.device("cpu"), 0, 0.0)
    rng = np.random.default_rng(0)
    tasks = []
    for rows, steps in ((2, 3), (1, 11), (3, 7), (1, 1)):
        tokens = rng.integers(0, 10, (rows, steps))
        tasks.append(_task(tokens, rng.integers(1, steps + 1, rows)))
    jobs = [(f"j{i}", 1, 0, task) for i, task in enumerate(tasks)]
    batched = run_batch(loaded, jobs, "w")
    for job, result in zip(jobs, batched, strict=True):
        alone = run_batch(loaded, [job], "w")[0]
        assert result.state == alone.state == JobState.JOB_STATE_SUCCEEDED
        assert result.batch_size == len(jobs)
        [got], [want] = result.infer.outputs, alone.infer.outputs
        assert got.name == "logits" and list(got.shape) == list(want.shape)
        diff = np.abs(tensors.from_raw(got.raw, got.datatype, got.shape)
                      - tensors.from_raw(want.raw, want.datatype, want.shape))
        assert diff.max() <= 1e-5
