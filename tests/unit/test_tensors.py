"""maas.tensors: v2 datatypes and the raw little-endian bytes every maas process shares."""

from __future__ import annotations

import re

import numpy as np
import pytest

from maas import tensors
from maas.inference.grpc_service_pb2 import InferTensorContents

DATATYPES = sorted(tensors.NUMPY_DTYPES)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_round_trip_each_datatype(datatype: str) -> None:
    dtype = tensors.NUMPY_DTYPES[datatype]
    x = (np.arange(24) % 2 == 0) if datatype == "BOOL" else np.arange(24).astype(dtype)
    x = x.reshape(2, 3, 4)
    assert tensors.datatype_of(x) == datatype
    raw = tensors.to_raw(x)
    assert len(raw) == tensors.byte_size(datatype, x.shape) == x.size * dtype.itemsize
    back = tensors.from_raw(raw, datatype, [2, 3, 4])
    assert back.dtype == dtype and np.array_equal(back, x)


def test_from_raw_does_not_copy() -> None:
    raw = np.arange(6, dtype="<f4").tobytes()
    view = tensors.from_raw(raw, "FP32", (2, 3))
    assert not view.flags.writeable
    assert view.base is not None


def test_to_raw_is_row_major() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert tensors.to_raw(x.T) == np.ascontiguousarray(x.T).tobytes()
    assert tensors.to_raw(x[:, ::2]) == np.array([[0, 2], [3, 5]], np.float32).tobytes()


@pytest.mark.parametrize("datatype", ["FP32", "INT64", "UINT16", "FP16"])
def test_big_endian_arrays_are_sent_little_endian(datatype: str) -> None:
    little = np.arange(5).astype(tensors.NUMPY_DTYPES[datatype])
    big = little.astype(little.dtype.newbyteorder(">"))
    assert tensors.datatype_of(big) == datatype
    assert tensors.to_raw(big) == little.tobytes()


@pytest.mark.parametrize("dtype", ["complex64", "object", "<U3", "datetime64[s]"])
def test_no_datatype_for_other_dtypes(dtype: str) -> None:
    with pytest.raises(TypeError, match="no v2 datatype"):
        tensors.datatype_of(np.zeros(2, dtype=dtype))


def test_sizes() -> None:
    assert tensors.element_count([]) == 1
    assert tensors.element_count([0, 5]) == 0
    assert tensors.element_count([2, 3, 4]) == 24
    assert tensors.byte_size("BF16", [3, 2]) == 12
    assert tensors.byte_size("BOOL", [7]) == 7
    assert tensors.ITEMSIZE["FP64"] == 8


def test_contents_fields() -> None:
    """Every typed datatype names a real InferTensorContents field; FP16/BF16 have none."""
    fields = {f.name for f in InferTensorContents.DESCRIPTOR.fields}
    assert set(tensors.CONTENTS_FIELD.values()) <= fields
    assert "FP16" not in tensors.CONTENTS_FIELD and "BF16" not in tensors.CONTENTS_FIELD
    assert set(tensors.CONTENTS_FIELD) - {"BYTES"} == set(tensors.NUMPY_DTYPES) - {"FP16"}


@pytest.mark.parametrize(("datatype", "values"), [
    ("FP32", [0.5, -2.0, 3.25]), ("FP64", [1e300, -0.0]), ("INT8", [-128, 127]),
    ("INT16", [-32768, 5]), ("INT32", [-(1 << 31)]), ("INT64", [1 << 62, -3]),
    ("UINT8", [0, 255]), ("UINT16", [65535]), ("UINT32", [(1 << 32) - 1]),
    ("UINT64", [(1 << 64) - 1]), ("BOOL", [True, False]),
])
def test_contents_to_raw(datatype: str, values: list[object]) -> None:
    contents = InferTensorContents()
    getattr(contents, tensors.CONTENTS_FIELD[datatype]).extend(values)
    raw = tensors.contents_to_raw(getattr(contents, tensors.CONTENTS_FIELD[datatype]), datatype)
    assert raw == np.asarray(values, dtype=tensors.NUMPY_DTYPES[datatype]).tobytes()


@pytest.mark.parametrize(("datatype", "value"), [
    ("INT8", 300), ("INT8", -129), ("INT16", 40_000), ("UINT8", 256), ("UINT16", 70_000),
])
def test_contents_out_of_range_are_refused(datatype: str, value: int) -> None:
    """A value the datatype cannot hold must not wrap around silently (300 → 44 as INT8)."""
    contents = InferTensorContents()
    field = getattr(contents, tensors.CONTENTS_FIELD[datatype])
    field.append(value)
    with pytest.raises((OverflowError, ValueError)):
        tensors.contents_to_raw(field, datatype)


@pytest.mark.parametrize(("datatype", "values", "says"), [
    ("INT8", [1, 300, -500], "value 300 out of range for INT8 (-128 to 127)"),
    ("UINT8", [-1], "value -1 out of range for UINT8 (0 to 255)"),
    ("UINT64", [-1], "value -1 out of range for UINT64"),
    ("INT64", [1 << 63], f"value {1 << 63} out of range for INT64"),
    ("UINT32", [1 << 32], f"value {1 << 32} out of range for UINT32"),
])
def test_out_of_range_names_the_value(datatype: str, values: list[int], says: str) -> None:
    """Python ints (as the SDK passes them) are checked as proto fields are."""
    with pytest.raises(ValueError, match=re.escape(says)):
        tensors.contents_to_raw(values, datatype)


@pytest.mark.parametrize("dtype", [">i1", "|b1", ">u1"])
def test_single_byte_dtypes_have_no_byte_order(dtype: str) -> None:
    x = np.zeros(3, dtype=dtype)
    assert tensors.to_raw(x) == bytes(3)
