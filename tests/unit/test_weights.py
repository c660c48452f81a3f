"""runtime.weights: safetensors headers read in pure Python, checked against an architecture."""

from __future__ import annotations

import hashlib
import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import save
from safetensors.torch import save as torch_save

from maas.errors import InvalidArgument
from runtime.architectures import get_architecture
from runtime.weights import MAX_VIOLATIONS, TensorEntry, check_weights, read_header, sha256_hex
from tests.hostile_files import HOSTILE_WEIGHTS

CNN = get_architecture("cnn")
CNN_CONFIG = CNN.resolve_config(None)


def cnn_arrays(config: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    shapes = CNN.param_shapes(CNN.resolve_config(config))
    return {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}


def hand_made(header: object, body: bytes = b"") -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def test_read_header_of_a_real_file() -> None:
    data = save({"w": np.zeros((2, 3), np.float32), "b": np.zeros(4, np.float16),
                 "i": np.zeros((1, 1, 5), np.int64)}, metadata={"format": "pt"})
    assert read_header(data) == {"w": TensorEntry("F32", (2, 3)), "b": TensorEntry("F16", (4,)),
                                 "i": TensorEntry("I64", (1, 1, 5))}


def test_read_header_of_a_torch_state_dict() -> None:
    torch.manual_seed(0)
    module = CNN.build(CNN_CONFIG)
    entries = read_header(torch_save(module.state_dict()))
    assert {k: e.shape for k, e in entries.items()} == CNN.param_shapes(CNN_CONFIG)
    assert {e.dtype for e in entries.values()} == {"F32"}
    check_weights(CNN, CNN_CONFIG, torch_save(module.state_dict()))


def test_scalar_and_empty_tensors() -> None:
    data = save({"s": np.zeros((), np.float32), "e": np.zeros((0, 3), np.float32)})
    assert read_header(data) == {"s": TensorEntry("F32", ()), "e": TensorEntry("F32", (0, 3))}


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()


GOOD = save({"w": np.zeros((2, 3), np.float32)})

NOT_SAFETENSORS = {
    "empty": b"",
    "seven_bytes": b"\x01\x00\x00\x00\x00\x00\x00",
    "header_longer_than_file": struct.pack("<Q", 1000) + b"{}",
    "huge_header_length": struct.pack("<Q", 1 << 63) + b"{}",
    "garbage": b"PK\x03\x04" + bytes(range(256)) * 4,
    "header_not_json": struct.pack("<Q", 5) + b"{nope",
    "header_not_utf8": struct.pack("<Q", 2) + b"\xff\xfe",
    "header_not_an_object": hand_made([1, 2]),
    "entry_without_dtype": hand_made({"w": {"shape": [1], "data_offsets": [0, 4]}}, bytes(4)),
    "entry_not_an_object": hand_made({"w": 3}),
    "shape_not_numbers": hand_made({"w": {"dtype": "F32", "shape": ["a"],
                                          "data_offsets": [0, 4]}}, bytes(4)),
    "offsets_past_the_end": hand_made({"w": {"dtype": "F32", "shape": [2],
                                             "data_offsets": [0, 8]}}, bytes(4)),
    "offsets_reversed": hand_made({"w": {"dtype": "F32", "shape": [0],
                                         "data_offsets": [4, 0]}}, bytes(4)),
    "size_does_not_fit_shape": hand_made({"w": {"dtype": "F32", "shape": [3],
                                                "data_offsets": [0, 8]}}, bytes(8)),
    "negative_dim": hand_made({"w": {"dtype": "F32", "shape": [-1],
                                     "data_offsets": [0, 4]}}, bytes(4)),
    "truncated_body": GOOD[:-1],
}


@pytest.mark.parametrize("name", sorted(NOT_SAFETENSORS))
def test_not_safetensors(name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_header(NOT_SAFETENSORS[name])
    assert caught.value.reason == "INVALID_WEIGHTS"
    assert [v.field for v in caught.value.violations] == ["weights"]
    assert caught.value.message.startswith("weights are not a valid safetensors file")


def test_metadata_is_not_a_tensor() -> None:
    assert set(read_header(save({"w": np.zeros(1, np.float32)}, metadata={"a": "b"}))) == {"w"}


def mismatch_fields(arrays: dict[str, np.ndarray], config: dict[str, int] | None = None,
                    ) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        check_weights(CNN, CNN.resolve_config(config), save(arrays))
    assert caught.value.reason == "WEIGHTS_MISMATCH"
    return {v.field: v.description for v in caught.value.violations}


def test_matching_weights_pass() -> None:
    check_weights(CNN, CNN_CONFIG, save(cnn_arrays()))
    check_weights(CNN, CNN.resolve_config({"num_classes": 3}), save(cnn_arrays({"num_classes": 3})))
    half = {k: v.astype(np.float16) for k, v in cnn_arrays().items()}
    check_weights(CNN, CNN_CONFIG, save(half))


def test_missing_tensor() -> None:
    arrays = cnn_arrays()
    del arrays["fc2.bias"]
    assert mismatch_fields(arrays) == {"weights.fc2.bias": "missing"}


def test_extra_tensor() -> None:
    arrays = {**cnn_arrays(), "fc3.weight": np.zeros((2, 2), np.float32)}
    assert mismatch_fields(arrays) == {"weights.fc3.weight": "not a parameter of the architecture"}


def test_mis_shaped_tensor() -> None:
    arrays = cnn_arrays()
    arrays["fc1.weight"] = np.zeros((50, 321), np.float32)
    assert mismatch_fields(arrays) == {"weights.fc1.weight": "shape [50, 321], expected [50, 320]"}


def test_weights_of_another_config() -> None:
    """Weights for 10 classes registered with num_classes=3: the head does not fit."""
    assert set(mismatch_fields(cnn_arrays(), {"num_classes": 3})) == {
        "weights.fc2.weight", "weights.fc2.bias"}


def test_integer_tensor() -> None:
    arrays = cnn_arrays()
    arrays["conv1.bias"] = np.zeros(10, np.int32)
    assert mismatch_fields(arrays) == {"weights.conv1.bias": "dtype I32 is not float"}


def test_weights_of_another_architecture() -> None:
    mlp = get_architecture("mlp")
    shapes = mlp.param_shapes(mlp.resolve_config(None))
    fields = mismatch_fields({k: np.zeros(s, np.float32) for k, s in shapes.items()})
    assert fields["weights.conv1.weight"] == "missing"
    assert fields["weights.layers.0.weight"] == "not a parameter of the architecture"
    assert len(fields) == len(shapes) + len(CNN.param_shapes(CNN_CONFIG))


def test_every_problem_is_listed() -> None:
    arrays = cnn_arrays()
    del arrays["conv1.weight"]
    arrays["conv2.bias"] = np.zeros(21, np.float32)
    arrays["extra"] = np.zeros(1, np.float32)
    assert set(mismatch_fields(arrays)) == {"weights.conv1.weight", "weights.conv2.bias",
                                            "weights.extra"}


def test_not_safetensors_is_reported_before_shapes() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_weights(CNN, CNN_CONFIG, b"not safetensors at all")
    assert caught.value.reason == "INVALID_WEIGHTS"


# --- hostile headers (issue 12) -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(HOSTILE_WEIGHTS))
def test_hostile_header_is_invalid_weights(name: str) -> None:
    """RecursionError (deep nesting), ValueError (an integer of 5,000 digits), OverflowError
    (Infinity as a dim): each was INTERNAL; now INVALID_WEIGHTS on `weights`."""
    with pytest.raises(InvalidArgument) as caught:
        read_header(HOSTILE_WEIGHTS[name])
    assert caught.value.reason == "INVALID_WEIGHTS"
    assert [v.field for v in caught.value.violations] == ["weights"]


def test_infinite_dim_is_invalid_weights() -> None:
    with pytest.raises(InvalidArgument) as caught:
        read_header(hand_made({"w": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}},
                              bytes(4)))
    assert caught.value.reason == "INVALID_WEIGHTS"


def test_thousands_of_unexpected_tensors_list_a_few() -> None:
    """The status travels in trailers: the violations are capped, the message counts all."""
    arrays = {**cnn_arrays(), **{f"extra.{i}." + "x" * 200: np.zeros(1, np.float32)
                                 for i in range(2000)}}
    with pytest.raises(InvalidArgument) as caught:
        check_weights(CNN, CNN_CONFIG, save(arrays))
    assert len(caught.value.violations) == MAX_VIOLATIONS
    assert all(len(v.field) < 100 for v in caught.value.violations)
    assert "2000 problems" in caught.value.message
