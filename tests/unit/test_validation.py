"""gateway.validation: every violation of a v2 request, and the raw tensors of a good one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
import numpy as np
import pytest

from gateway.errors import to_status
from gateway.validation import MAX_DIM, MAX_VIOLATIONS, infer_task, priority_of
from maas.errors import InvalidArgument
from maas.inference.grpc_service_pb2 import ModelInferRequest
from maas.v1.model_service_pb2 import ModelVersion, TensorSpec
from runtime.architectures import get_architecture

Spec = tuple[str, str, Sequence[int]]


def version_of(architecture: str, config: dict[str, object] | None = None) -> ModelVersion:
    """The ModelVersion the gateway stores for an architecture (as RegisterModel builds it)."""
    arch = get_architecture(architecture)
    resolved = arch.resolve_config(config)

    def specs(found: Sequence[object]) -> list[TensorSpec]:
        return [TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape)  # type: ignore[attr-defined]
                for s in found]

    return ModelVersion(model=architecture, version="1", architecture=architecture,
                        inputs=specs(arch.inputs(resolved)),
                        outputs=specs(arch.outputs(resolved)))


def hand_built(inputs: Sequence[Spec], outputs: Sequence[Spec] = (("y", "FP32", (-1, 1)),),
               ) -> ModelVersion:
    return ModelVersion(
        model="m", version="3",
        inputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in inputs],
        outputs=[TensorSpec(name=n, datatype=d, shape=s) for n, d, s in outputs])


MLP = version_of("mlp")
CNN = version_of("cnn")
FP16_MODEL = hand_built([("x", "FP16", (-1, 4))])
TWO_INPUTS = hand_built([("a", "FP32", (-1, 2)), ("b", "INT64", (-1, 3))])


def raw_request(*tensors: tuple[str, str, Sequence[int], bytes], model: str = "mlp",
                ) -> ModelInferRequest:
    request = ModelInferRequest(model_name=model)
    for name, datatype, shape, raw in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        request.raw_input_contents.append(raw)
    return request


def mlp_raw(shape: Sequence[int] = (2, 64), datatype: str = "FP32", nbytes: int | None = None,
            name: str = "input") -> ModelInferRequest:
    size = 4 * int(np.prod(shape)) if nbytes is None else nbytes
    return raw_request((name, datatype, shape, bytes(max(size, 0))))


def mlp_typed(count: int, shape: Sequence[int] = (2, 64),
              datatype: str = "FP32") -> ModelInferRequest:
    request = ModelInferRequest(model_name="mlp")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=shape)
    tensor.contents.fp32_contents.extend([1.0] * count)
    return request


def with_(request: ModelInferRequest,
          change: Callable[[ModelInferRequest], object]) -> ModelInferRequest:
    change(request)
    return request


def fields_of(request: ModelInferRequest, version: ModelVersion = MLP) -> set[str]:
    with pytest.raises(InvalidArgument) as caught:
        infer_task(request, version)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.reason == "INVALID_ARGUMENT"
    assert caught.value.violations
    return {v.field for v in caught.value.violations}


VIOLATIONS: dict[str, tuple[Callable[[], ModelInferRequest], ModelVersion, set[str]]] = {
    "wrong_shape": (lambda: mlp_raw((2, 63)), MLP, {"inputs[0].shape[1]"}),
    "fixed_dims_wrong": (lambda: raw_request(("input", "FP32", (1, 1, 28, 27), bytes(3024))),
                         CNN, {"inputs[0].shape[3]"}),
    "two_dims_wrong": (lambda: raw_request(("input", "FP32", (1, 2, 27, 28), bytes(6048))),
                       CNN, {"inputs[0].shape[1]", "inputs[0].shape[2]"}),
    "wrong_rank": (lambda: mlp_raw((2, 64, 1)), MLP, {"inputs[0].shape"}),
    "scalar": (lambda: mlp_raw((), nbytes=4), MLP, {"inputs[0].shape"}),
    "zero_dim": (lambda: mlp_raw((0, 64)), MLP, {"inputs[0].shape[0]"}),
    "negative_dim": (lambda: mlp_raw((-1, 64), nbytes=256), MLP, {"inputs[0].shape[0]"}),
    "dim_too_large": (lambda: mlp_raw((MAX_DIM + 1, 64), nbytes=256), MLP,
                      {"inputs[0].shape[0]"}),
    "wrong_datatype": (lambda: mlp_raw(datatype="FP64", nbytes=1024), MLP,
                       {"inputs[0].datatype"}),
    "unknown_datatype": (lambda: mlp_raw(datatype="FLOAT", nbytes=512), MLP,
                         {"inputs[0].datatype"}),
    "raw_one_byte_short": (lambda: mlp_raw(nbytes=511), MLP, {"raw_input_contents[0]"}),
    "raw_one_byte_long": (lambda: mlp_raw(nbytes=513), MLP, {"raw_input_contents[0]"}),
    "raw_empty": (lambda: mlp_raw(nbytes=0), MLP, {"raw_input_contents[0]"}),
    # Two blobs for one input: the blob count is the one problem (the input was sent raw,
    # so nothing about its typed contents applies).
    "raw_blob_count": (lambda: with_(mlp_raw(), lambda r: r.raw_input_contents.append(b"")),
                       MLP, {"raw_input_contents"}),
    "contents_with_raw": (
        lambda: with_(mlp_raw(), lambda r: r.inputs[0].contents.fp32_contents.append(1.0)),
        MLP, {"inputs[0].contents"}),
    "typed_too_few": (lambda: mlp_typed(127), MLP, {"inputs[0].contents.fp32_contents"}),
    "typed_too_many": (lambda: mlp_typed(129), MLP, {"inputs[0].contents.fp32_contents"}),
    "typed_none": (lambda: mlp_typed(0), MLP, {"inputs[0].contents.fp32_contents"}),
    "typed_in_the_wrong_field": (
        lambda: with_(ModelInferRequest(model_name="mlp"), lambda r: r.inputs.add(
            name="input", datatype="FP32", shape=[1, 64]).contents.fp64_contents.extend(
                [0.0] * 64)),
        MLP, {"inputs[0].contents.fp32_contents"}),
    "fp16_typed_wrong_model": (lambda: mlp_typed(128, datatype="FP16"), MLP,
                               {"inputs[0].datatype"}),
    "fp16_typed": (
        lambda: with_(ModelInferRequest(model_name="m"), lambda r: r.inputs.add(
            name="x", datatype="FP16", shape=[1, 4]).contents.fp32_contents.extend([0.0] * 4)),
        FP16_MODEL, {"inputs[0].contents"}),
    "missing_input": (lambda: ModelInferRequest(model_name="mlp"), MLP, {"inputs"}),
    "unknown_input": (lambda: mlp_raw(name="image"), MLP, {"inputs[0].name", "inputs"}),
    "duplicate_input": (
        lambda: raw_request(("input", "FP32", (1, 64), bytes(256)),
                            ("input", "FP32", (1, 64), bytes(256))),
        MLP, {"inputs[1].name"}),
    "unknown_output": (lambda: with_(mlp_raw(), lambda r: r.outputs.add(name="logits")), MLP,
                       {"outputs[0].name"}),
    "second_output_unknown": (
        lambda: with_(mlp_raw(), lambda r: [r.outputs.add(name=n) for n in ("output", "x")]),
        MLP, {"outputs[1].name"}),
    "batch_disagrees": (
        lambda: raw_request(("a", "FP32", (2, 2), bytes(16)), ("b", "INT64", (3, 3), bytes(72)),
                            model="m"),
        TWO_INPUTS, {"inputs"}),
    "one_of_two_missing": (lambda: raw_request(("a", "FP32", (2, 2), bytes(16)), model="m"),
                           TWO_INPUTS, {"inputs"}),
    "every_problem_at_once": (
        lambda: with_(raw_request(("a", "FP64", (2, 2), bytes(32)),
                                  ("c", "FP32", (1,), bytes(4)), model="m"),
                      lambda r: r.outputs.add(name="z")),
        TWO_INPUTS, {"inputs[0].datatype", "inputs[1].name", "inputs", "outputs[0].name"}),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_violation_names_the_field(name: str) -> None:
    build, version, expected = VIOLATIONS[name]
    assert fields_of(build(), version) == expected


def test_message_summarises_the_first_violations() -> None:
    with pytest.raises(InvalidArgument) as caught:
        infer_task(mlp_raw((2, 63)), MLP)
    message = caught.value.message
    assert "'mlp'" in message and "version 1" in message
    assert "inputs[0].shape[1]: dim 63 does not fit [-1, 64]" in message


def test_valid_raw_request_keeps_the_bytes() -> None:
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    request = raw_request(("input", "FP32", (3, 64), x.tobytes()))
    request.id = "req-7"
    request.outputs.add(name="output")
    task = infer_task(request, MLP)
    assert task.request_id == "req-7"
    assert list(task.output_names) == ["output"]
    [tensor] = task.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("input", "FP32", [3, 64])
    assert tensor.raw == x.tobytes()


def test_valid_typed_request_becomes_raw() -> None:
    x = np.random.default_rng(1).random((2, 64), dtype=np.float32)
    request = ModelInferRequest(model_name="mlp")
    request.inputs.add(name="input", datatype="FP32",
                       shape=[2, 64]).contents.fp32_contents.extend(x.ravel().tolist())
    [tensor] = infer_task(request, MLP).inputs
    assert tensor.raw == x.tobytes()
    assert np.array_equal(np.frombuffer(tensor.raw, "<f4").reshape(2, 64), x)


@pytest.mark.parametrize(("datatype", "field", "values", "dtype"), [
    ("INT64", "int64_contents", [-5, 0, 1 << 40], "<i8"),
    ("INT32", "int_contents", [-(1 << 31), 0, (1 << 31) - 1], "<i4"),
    ("INT8", "int_contents", [-128, 0, 127], "<i1"),
    ("UINT8", "uint_contents", [0, 7, 255], "<u1"),
    ("UINT64", "uint64_contents", [0, 1, (1 << 64) - 1], "<u8"),
    ("BOOL", "bool_contents", [True, False, True], "bool"),
    ("FP64", "fp64_contents", [0.5, -1.25, 1e300], "<f8"),
])
def test_typed_contents_of_each_datatype(datatype: str, field: str, values: list[object],
                                         dtype: str) -> None:
    version = hand_built([("x", datatype, (-1, 3))])
    request = ModelInferRequest(model_name="m")
    getattr(request.inputs.add(name="x", datatype=datatype, shape=[1, 3]).contents,
            field).extend(values)
    [tensor] = infer_task(request, version).inputs
    assert tensor.raw == np.asarray(values, dtype=dtype).tobytes()


@pytest.mark.parametrize(("datatype", "field", "value"), [
    ("INT8", "int_contents", 300),
    ("INT16", "int_contents", -40_000),
    ("UINT8", "uint_contents", 256),
])
def test_typed_value_out_of_range_is_invalid_argument(datatype: str, field: str,
                                                      value: int) -> None:
    """A value the datatype cannot hold is the client's mistake, not an INTERNAL error."""
    version = hand_built([("x", datatype, (-1, 1))])
    request = ModelInferRequest(model_name="m")
    getattr(request.inputs.add(name="x", datatype=datatype, shape=[1, 1]).contents,
            field).append(value)
    assert fields_of(request, version) == {f"inputs[0].contents.{field}"}


def test_raw_fp16_is_accepted() -> None:
    x = np.arange(8, dtype="<f2").reshape(2, 4)
    [tensor] = infer_task(raw_request(("x", "FP16", (2, 4), x.tobytes()), model="m"),
                          FP16_MODEL).inputs
    assert tensor.raw == x.tobytes()


def test_two_inputs_in_any_order() -> None:
    a, b = np.ones((2, 2), "<f4"), np.arange(6, dtype="<i8").reshape(2, 3)
    task = infer_task(raw_request(("b", "INT64", (2, 3), b.tobytes()),
                                  ("a", "FP32", (2, 2), a.tobytes()), model="m"), TWO_INPUTS)
    assert {t.name: t.raw for t in task.inputs} == {"a": a.tobytes(), "b": b.tobytes()}


def test_out_of_range_value_is_named() -> None:
    request = ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="INT8", shape=[1, 3]).contents.int_contents.extend(
        [1, 300, -500])
    with pytest.raises(InvalidArgument) as caught:
        infer_task(request, hand_built([("x", "INT8", (-1, 3))]))
    [violation] = caught.value.violations
    assert violation.description == "value 300 out of range for INT8 (-128 to 127)"


def test_blob_count_mismatch_still_checks_each_input() -> None:
    """Names, datatypes and shapes are still checked; only the sizes cannot be."""
    request = raw_request(("input", "FP32", (2, 63), bytes(504)), ("image", "FP64", (2,), b""))
    request.raw_input_contents.append(b"")
    assert fields_of(request) == {"raw_input_contents", "inputs[0].shape[1]", "inputs[1].name"}


# --- what a bad request echoes must fit in gRPC's trailers -----------------------------------

LONG = "n" * 10_000
TRAILER_LIMIT = 8 * 1024  # gRPC's default soft limit on metadata a peer accepts


def many_unknown_inputs() -> ModelInferRequest:
    return raw_request(*((f"in{i}-{LONG[:200]}", "FP32", (2, 64), b"") for i in range(2000)))


HUGE: dict[str, Callable[[], ModelInferRequest]] = {
    "long_input_name": lambda: mlp_raw(name=LONG),
    "long_duplicate_name": lambda: raw_request(*[(LONG, "FP32", (1, 64), bytes(256))] * 2),
    "long_output_name": lambda: with_(mlp_raw(), lambda r: r.outputs.add(name=LONG)),
    "long_datatype": lambda: mlp_raw(datatype=LONG),
    "many_dims": lambda: mlp_raw((1,) * 5000, nbytes=4),
    "many_typed_values_wrong": lambda: mlp_typed(10_000, shape=(1,) * 3000),
    "many_unknown_inputs": many_unknown_inputs,
    "many_unknown_outputs": lambda: with_(mlp_raw(), lambda r: [
        r.outputs.add(name=f"out{i}-{LONG[:100]}") for i in range(2000)]),
}


@pytest.mark.parametrize("name", sorted(HUGE))
def test_the_status_of_a_huge_bad_request_fits(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        infer_task(HUGE[name](), MLP)
    assert 0 < len(caught.value.violations) <= MAX_VIOLATIONS
    status = to_status(caught.value)
    size = len(status.details.encode()) + sum(
        len(k) + len(v) for k, v in status.trailing_metadata)
    assert size < TRAILER_LIMIT / 2, caught.value.message[:300]


def test_more_problems_than_listed_are_counted() -> None:
    with pytest.raises(InvalidArgument) as caught:
        infer_task(many_unknown_inputs(), MLP)
    # 2000 unknown inputs, and `input` missing: 3 in the summary, the rest counted.
    assert caught.value.message.endswith("(and 1998 more)")


# --- priority -------------------------------------------------------------------------------

def with_priority(set_it: Callable[[ModelInferRequest], object]) -> ModelInferRequest:
    request = ModelInferRequest(model_name="mlp")
    set_it(request)
    return request


def test_priority_default_is_zero() -> None:
    assert priority_of(ModelInferRequest(model_name="mlp")) == 0


@pytest.mark.parametrize(("kind", "value"), [
    ("uint64_param", 1), ("uint64_param", 0), ("int64_param", 7),
    ("uint64_param", 1_000_000),
])
def test_priority_integer(kind: str, value: int) -> None:
    request = with_priority(lambda r: setattr(r.parameters["priority"], kind, value))
    assert priority_of(request) == value


@pytest.mark.parametrize(("kind", "value"), [
    ("string_param", "high"), ("string_param", "1"), ("bool_param", True),
    ("double_param", 1.0), ("int64_param", -1), ("uint64_param", 1_000_001),
    ("uint64_param", (1 << 64) - 1),
])
def test_priority_bad(kind: str, value: object) -> None:
    request = with_priority(lambda r: setattr(r.parameters["priority"], kind, value))
    with pytest.raises(InvalidArgument) as caught:
        priority_of(request)
    assert [v.field for v in caught.value.violations] == ["parameters.priority"]


def test_priority_with_no_value_is_bad() -> None:
    request = ModelInferRequest(model_name="mlp")
    request.parameters["priority"].SetInParent()
    with pytest.raises(InvalidArgument):
        priority_of(request)


def test_other_parameters_are_ignored() -> None:
    request = ModelInferRequest(model_name="mlp")
    request.parameters["timeout"].int64_param = 5
    request.parameters["sequence_id"].string_param = "s"
    assert priority_of(request) == 0
