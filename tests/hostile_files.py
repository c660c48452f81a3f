"""Hand-made hostile dataset and weights files: headers that lie about their sizes, labels
out of range, JSON headers that defeat `json.loads`. Shared by the fuzz and the regression
tests of the upload and RegisterModel paths."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from typing import Any

import numpy as np
from safetensors.numpy import save

from maas.v1 import dataset_service_pb2 as dpb


def npy_bytes(array: np.ndarray | None = None, *, header: dict[str, Any] | None = None,
              data: bytes | None = None) -> bytes:
    """An .npy file: `array` as numpy writes it, or a `header` of our own over `data`."""
    out = io.BytesIO()
    if header is None:
        assert array is not None
        np.lib.format.write_array(out, array, allow_pickle=False)
        return out.getvalue()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + (data or b"")


def npz_bytes(members: dict[str, bytes]) -> bytes:
    """A zip of .npy members, as numpy.savez lays it out."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, content in members.items():
            archive.writestr(f"{name}.npy", content)
    return out.getvalue()


def good_arrays(n: int = 4, width: int = 64) -> dict[str, np.ndarray]:
    return {"features": np.zeros((n, width), np.float32),
            "labels": np.arange(n, dtype=np.int64) % 2}


def npz_of(arrays: dict[str, np.ndarray]) -> bytes:
    return npz_bytes({k: npy_bytes(v) for k, v in arrays.items()})


def npz_declaring(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """Labels fine; `features` declares `shape` but holds 64 bytes."""
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    return npz_bytes({"features": npy_bytes(header=header, data=bytes(64)),
                      "labels": npy_bytes(np.zeros(2, np.int64))})


def npz_with_labels(labels: list[int]) -> bytes:
    return npz_of({"features": np.zeros((len(labels), 4), np.float32),
                   "labels": np.asarray(labels, np.int64)})


def safetensors_raw(header: bytes | str, body: bytes = b"",
                    length: int | None = None) -> bytes:
    """8-byte little-endian header length (`length` overrides it), header, body."""
    raw = header.encode() if isinstance(header, str) else header
    return struct.pack("<Q", len(raw) if length is None else length) + raw + body


def safetensors_declaring(shape: list[int], dtype: str = "F32") -> bytes:
    """`features` declares `shape` over 16 bytes of data (offsets 0..16)."""
    header = {"features": {"dtype": dtype, "shape": shape, "data_offsets": [0, 16]},
              "labels": {"dtype": "I64", "shape": [2], "data_offsets": [16, 32]}}
    return safetensors_raw(json.dumps(header), bytes(32))


HOSTILE_DATASETS: dict[str, tuple[str, bytes]] = {
    "good": ("npz", npz_of(good_arrays())),
    "good_safetensors": ("safetensors", save(good_arrays())),
    "npy_shape_1e12": ("npz", npz_declaring((10**12, 2))),
    "npy_shape_2e9_rows": ("npz", npz_declaring((2**31, 64))),
    "npy_object_dtype": ("npz", npz_declaring((2, 2), "|O")),
    "npy_negative_dim": ("npz", npz_declaring((-1, 2))),
    "labels_2e31": ("npz", npz_with_labels([0, 2**31 - 1])),
    "labels_65536": ("npz", npz_with_labels([0, 65536])),
    "labels_negative": ("npz", npz_with_labels([0, -1])),
    "not_a_zip": ("npz", b"PK\x03\x04" + bytes(60)),
    "safetensors_labels_2e31": ("safetensors", save({
        "features": np.zeros((2, 4), np.float32), "labels": np.asarray([0, 2**31 - 1])})),
    "safetensors_shape_1e12": ("safetensors", safetensors_declaring([10**12, 2])),
    "safetensors_length_2e64": ("safetensors", safetensors_raw("{}", length=2**64 - 1)),
    "safetensors_deep_json": ("safetensors", safetensors_raw("[" * 100_000)),
    "safetensors_huge_int": ("safetensors", safetensors_raw(
        '{"features": {"dtype": "F32", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 4]}}',
        bytes(4))),
}

HOSTILE_WEIGHTS: dict[str, bytes] = {
    "length_2e64": safetensors_raw("{}", length=2**64 - 1),
    "deep_json": safetensors_raw("[" * 100_000),
    "huge_int": safetensors_raw('{"w": {"dtype": "F32", "shape": [' + "9" * 5000
                                + '], "data_offsets": [0, 4]}}', bytes(4)),
    "huge_shape": safetensors_raw('{"w": {"dtype": "F32", "shape": [1000000000000, 2], '
                                  '"data_offsets": [0, 4]}}', bytes(4)),
    "negative_shape": safetensors_raw('{"w": {"dtype": "F32", "shape": [-2, -2], '
                                      '"data_offsets": [0, 16]}}', bytes(16)),
    "offsets_not_ints": safetensors_raw('{"w": {"dtype": "F32", "shape": [1], '
                                        '"data_offsets": ["a", 4]}}', bytes(4)),
    "entry_not_object": safetensors_raw('{"w": 5}', b""),
}


def upload_requests(name: str, file_format: str, data: bytes,
                    chunk_bytes: int = 1 << 16) -> list[dpb.UploadDatasetRequest]:
    """A well-formed upload (header with the right size and sha256, then chunks) of `data`."""
    header = dpb.UploadDatasetHeader(name=name, format=file_format, size_bytes=len(data),
                                     sha256=hashlib.sha256(data).hexdigest())
    chunks = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
    return [dpb.UploadDatasetRequest(header=header),
            *(dpb.UploadDatasetRequest(chunk=c) for c in chunks)]
