"""Uploaded dataset files read safely: .npz (never unpickled) and safetensors bytes to named
arrays, each header checked before numpy allocates what it declares, and sizes bounded
(no zip bombs). Every problem is an INVALID_ARGUMENT naming the field; runtime/datasets.py
makes a validated Dataset of the arrays.
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import IO, Any

import numpy as np

from maas.errors import FieldViolation, InvalidArgument
from runtime.weights import ITEMSIZE, read_header

ARRAYS = ("features", "labels", "lengths")


def invalid_dataset(field: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"invalid dataset, {field}: {why}",
                           violations=(FieldViolation(field, why),))


def check_size(nbytes: int, max_bytes: int) -> None:
    if nbytes > max_bytes:
        raise invalid_dataset("dataset", f"{nbytes} bytes exceed the limit of {max_bytes}")


def npz_arrays(data: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """The arrays of .npz bytes (`features` and `labels`, `lengths` when present).

    max_bytes bounds both the archive and its arrays uncompressed.
    """
    check_size(len(data), max_bytes)
    if not data.startswith(b"PK"):
        raise invalid_dataset("dataset", "not an .npz archive (no zip signature)")
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise invalid_dataset("dataset", f"not a readable .npz archive ({exc})") from exc
    with npz:
        check_size(sum(info.file_size for info in npz.zip.infolist()), max_bytes)
        present = [key for key in ARRAYS if key in npz.files]
        for key in present:
            _check_npy_header(npz.zip, key)
        arrays = {key: _read_npz_array(npz, key) for key in present}
        for key in ("features", "labels"):
            if key not in arrays:
                raise invalid_dataset(key, f"missing; the archive has arrays "
                                           f"{sorted(npz.files)}")
    return arrays


def _read_npy_header(member: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f".npy format version {version} (1.0 and 2.0 are read)")
    return shape, dtype


def _check_npy_header(archive: zipfile.ZipFile, key: str) -> None:
    """INVALID_ARGUMENT on `key` unless its .npy header declares an array whose bytes are
    exactly the member's: read before numpy allocates what the header declares."""
    name = key if key in archive.namelist() else key + ".npy"  # as NpzFile looks it up
    info = archive.getinfo(name)
    try:
        with archive.open(info) as member:
            if member.read(6) != b"\x93NUMPY":
                return  # not an array: numpy hands back its bytes, from_arrays refuses them
            member.seek(0)
            shape, dtype = _read_npy_header(member)
            data_bytes = info.file_size - member.tell()
    except (ValueError, SyntaxError, RecursionError, TypeError, OSError, EOFError,
            zipfile.BadZipFile) as exc:
        raise invalid_dataset(key, f"has an unreadable .npy header ({str(exc)[:200]})") from exc
    if dtype.hasobject:
        raise invalid_dataset(key, "holds Python objects (only numeric arrays are read)")
    if any(d < 0 for d in shape):
        raise invalid_dataset(key, f"declares a negative dimension: shape {list(shape)[:8]}")
    declared = math.prod(shape) * dtype.itemsize
    if declared != data_bytes:
        raise invalid_dataset(key, f"declares {dtype.str} of shape {list(shape)[:8]} ({declared} "
                                   f"bytes) but holds {data_bytes} bytes")


def _read_npz_array(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise invalid_dataset(key, f"cannot be read ({exc})") from exc


def safetensors_arrays(data: bytes, max_bytes: int) -> dict[str, np.ndarray]:
    """The tensors of safetensors bytes, as arrays."""
    from safetensors.numpy import load

    check_size(len(data), max_bytes)
    _check_safetensors_header(data)
    try:
        arrays = load(data)
    except Exception as exc:  # safetensors raises its own SafetensorError for any bad input
        raise invalid_dataset("dataset", f"not a readable safetensors file ({exc})") from exc
    return arrays


def _check_safetensors_header(data: bytes) -> None:
    """INVALID_ARGUMENT unless the header's tensors have known dtypes and shapes that fit
    their data offsets inside the file: read before anything is allocated."""
    try:
        entries = read_header(data)
    except InvalidArgument as err:
        why = err.violations[0].description if err.violations else err.message
        raise invalid_dataset("dataset", f"not a readable safetensors file ({why})") from None
    for name, entry in entries.items():
        if entry.dtype not in ITEMSIZE:
            raise invalid_dataset(name[:64], f"dtype {entry.dtype[:16]!r} is not one of "
                                             f"{sorted(ITEMSIZE)}")
