"""The gateway's side of a generation, without sockets: a GenerateRequest checked against the
model (every bad field named at once), and a v2 request with Triton's tensor names turned
into one (BYTES decoding, defaults, bad tensors)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from gateway.decoupled import generate_request, is_generation
from gateway.plane.generation_request import generate_task
from maas.errors import InvalidArgument
from maas.inference import grpc_service_pb2 as pb
from maas.v1.generation_service_pb2 import GenerateRequest
from maas.v1.model_service_pb2 import ModelVersion

GPT = ModelVersion(model="adder", version="1", architecture="gpt",
                   config_json=json.dumps({"max_len": 32}))


def fields(err: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in err.value.violations]


def test_a_good_request_becomes_a_task_with_a_seed() -> None:
    task = generate_task(GenerateRequest(model="adder", prompt="17+25=", max_tokens=8), GPT)
    assert (task.prompt, task.max_tokens, task.top_p, task.temperature) == ("17+25=", 8, 1, 0)
    assert task.seed > 0  # drawn: a retried job makes the same tokens
    seeded = generate_task(GenerateRequest(prompt="x", max_tokens=1, seed=0), GPT)
    assert seeded.seed == 0


def test_every_bad_field_is_named_at_once() -> None:
    request = GenerateRequest(model="adder", prompt="", max_tokens=0, temperature=-1,
                              top_k=-3, top_p=1.5, stop=[""] + ["x"] * 3)
    with pytest.raises(InvalidArgument) as err:
        generate_task(request, GPT)
    assert fields(err) == ["prompt", "max_tokens", "temperature", "top_k", "top_p", "stop[0]"]
    assert "max_tokens must be 1..4096" in err.value.message


def test_the_prompt_must_leave_room_in_max_len() -> None:
    generate_task(GenerateRequest(prompt="x" * 30, max_tokens=1), GPT)  # 31 + 1 token = 32
    with pytest.raises(InvalidArgument) as err:
        generate_task(GenerateRequest(prompt="x" * 31, max_tokens=1), GPT)
    assert fields(err) == ["prompt"] and "at most 30 bytes" in err.value.message


def test_too_many_stop_strings_and_nan_temperature() -> None:
    with pytest.raises(InvalidArgument) as err:
        generate_task(GenerateRequest(prompt="x", max_tokens=1, temperature=float("nan"),
                                      stop=["a"] * 17), GPT)
    assert fields(err) == ["temperature", "stop"]


def _bytes_input(name: str, *values: bytes) -> tuple[pb.ModelInferRequest.InferInputTensor,
                                                        bytes]:
    raw = b"".join(struct.pack("<I", len(v)) + v for v in values)
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype="BYTES",
                                                 shape=[len(values)]), raw


def _v2(*inputs: tuple[pb.ModelInferRequest.InferInputTensor, bytes]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="adder", id="r1")
    for tensor, raw in inputs:
        request.inputs.append(tensor)
        request.raw_input_contents.append(raw)
    return request


def _number(name: str, datatype: str, value: float) -> tuple[
        pb.ModelInferRequest.InferInputTensor, bytes]:
    array = np.array([value], dtype={"INT32": "<i4", "FP32": "<f4", "UINT64": "<u8",
                                     "BOOL": "bool", "INT64": "<i8"}[datatype])
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype,
                                                 shape=[1]), array.tobytes()


def test_triton_tensor_names_become_a_generate_request() -> None:
    request = _v2(_bytes_input("text_input", "17+25=€".encode()),
                  _number("max_tokens", "INT32", 5), _number("temperature", "FP32", 0.5),
                  _number("top_k", "INT32", 3), _number("top_p", "FP32", 0.25),
                  _number("random_seed", "UINT64", 9), _bytes_input("stop_words", b"\n", b"."),
                  _number("stream", "BOOL", 0))
    assert is_generation(request)
    out, is_streaming = generate_request(request)
    assert (out.prompt, out.max_tokens, out.temperature, out.top_k, out.top_p, out.seed) == (
        "17+25=€", 5, 0.5, 3, 0.25, 9)
    assert list(out.stop) == ["\n", "."] and out.request_id == "r1" and not is_streaming


def test_defaults_and_typed_contents() -> None:
    request = pb.ModelInferRequest(model_name="adder")
    request.inputs.add(name="text_input", datatype="BYTES", shape=[1]).contents.bytes_contents \
        .append(b"hi")
    out, is_streaming = generate_request(request)
    assert (out.prompt, out.max_tokens, is_streaming) == ("hi", 16, True)
    assert not out.HasField("seed") and not out.HasField("top_p")
    assert not is_generation(pb.ModelInferRequest(model_name="adder"))


@pytest.mark.parametrize(("inputs", "field"), [
    ((_bytes_input("text_input", b"a", b"b"),), "inputs['text_input']"),
    ((_bytes_input("text_input", b"\xff"),), "inputs['text_input']"),
    ((_bytes_input("text_input", b"a"), _number("max_tokens", "INT64", 1 << 40)),
     "inputs['max_tokens']"),
    ((_bytes_input("text_input", b"a"), _bytes_input("max_tokens", b"8")),
     "inputs['max_tokens']"),
])
def test_bad_tensors_are_invalid_argument(inputs: tuple[tuple[
        pb.ModelInferRequest.InferInputTensor, bytes], ...], field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        generate_request(_v2(*inputs))
    assert fields(err) == [field]


def test_a_truncated_bytes_tensor_is_invalid_argument() -> None:
    tensor, raw = _bytes_input("text_input", b"hello")
    with pytest.raises(InvalidArgument):
        generate_request(_v2((tensor, raw[:6])))
