"""v2 datatypes and tensor bytes: the one codec shared by gateway, worker and SDK.

Tensors travel as raw little-endian row-major bytes everywhere inside maas; typed
`contents` of a v2 request are converted once, at the gateway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# v2 datatype → numpy dtype (little-endian). BF16 has no numpy dtype: raw bytes only.
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

# The inverse, for datatype_of: a dict look-up per tensor instead of a scan of the table.
_DATATYPE_OF: dict[np.dtype, str] = {dt: name for name, dt in NUMPY_DTYPES.items()}

ITEMSIZE: dict[str, int] = {name: dt.itemsize for name, dt in NUMPY_DTYPES.items()}
ITEMSIZE["BF16"] = 2

# Which InferTensorContents field carries each datatype (FP16/BF16: none, raw only).
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def element_count(shape: Sequence[int]) -> int:
    """Number of elements of a concrete shape."""
    return math.prod(shape)


def byte_size(datatype: str, shape: Sequence[int]) -> int:
    """Bytes of a raw tensor of this datatype and shape."""
    return ITEMSIZE[datatype] * element_count(shape)


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype name of a numpy array."""
    little = array.dtype.newbyteorder("<")  # byte order is to_raw's business, not the type's
    found = _DATATYPE_OF.get(little)
    if found is not None:
        return found
    for name, dt in NUMPY_DTYPES.items():  # an equal dtype that hashes apart (none known)
        if little == dt:
            return name
    raise TypeError(f"no v2 datatype for numpy dtype {array.dtype}")


def to_raw(array: np.ndarray) -> bytes:
    """Raw little-endian row-major bytes of an array."""
    dt = NUMPY_DTYPES[datatype_of(array)]
    return np.ascontiguousarray(array, dtype=dt).tobytes()


def from_raw(raw: bytes, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """A read-only array over raw bytes (no copy)."""
    return np.frombuffer(raw, dtype=NUMPY_DTYPES[datatype]).reshape(tuple(shape))


def contents_to_raw(values: Sequence[object], datatype: str) -> bytes:
    """Raw bytes from the values of a typed contents field.

    Integer fields are wider than most datatypes (INT8 travels in an int32 field); a value
    the datatype cannot hold is a ValueError naming it, never wrapped around (300 → 44).
    """
    dtype = NUMPY_DTYPES[datatype]
    if dtype.kind not in "iu":
        return np.asarray(values, dtype=dtype).tobytes()
    info = np.iinfo(dtype)
    try:
        wide = np.asarray(values, dtype=np.int64 if dtype.kind == "i" else np.uint64)
    except OverflowError:  # beyond even 64 bits, so beyond the datatype too
        wide = None
    if wide is None or (wide.size and (wide.min() < info.min or wide.max() > info.max)):
        bad = next(v for v in np.asarray(values, dtype=object).ravel()
                   if not info.min <= v <= info.max)
        raise ValueError(f"value {bad} out of range for {datatype} ({info.min} to {info.max})")
    return wide.astype(dtype).tobytes()
