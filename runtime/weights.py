"""Safetensors weights: read the header in pure Python and check it against an architecture.

A safetensors file is an 8-byte little-endian header length, a JSON header
{name: {dtype, shape, data_offsets}}, then the tensor bytes. Reading it never unpickles.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from maas.errors import FieldViolation, InvalidWeights, WeightsMismatch, shown
from runtime.architectures import Architecture, Config

_MAX_HEADER_BYTES = 100 * 1024 * 1024
# Field violations listed in a WEIGHTS_MISMATCH status (the message counts them all): the
# status travels in gRPC trailers, which a peer refuses past 8-16 KiB.
MAX_VIOLATIONS = 16
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class TensorEntry:
    dtype: str
    shape: tuple[int, ...]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (never the whole file in memory)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _bad(why: str) -> InvalidWeights:
    return InvalidWeights(f"weights are not a valid safetensors file: {why}",
                          violations=(FieldViolation("weights", why),))


def _entry(name: str, info: object, body_bytes: int) -> TensorEntry:
    try:
        dtype = str(info["dtype"])  # type: ignore[index]
        shape = tuple(int(d) for d in info["shape"])  # type: ignore[index]
        begin, end = (int(x) for x in info["data_offsets"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError, OverflowError) as exc:
        raise _bad(f"tensor {shown(name)} has a malformed entry") from exc
    if any(d < 0 for d in shape):
        raise _bad(f"tensor {shown(name)} has a negative dimension")
    count = math.prod(shape)
    size = ITEMSIZE.get(dtype, 0)
    if not (0 <= begin <= end <= body_bytes) or (size and end - begin != size * count):
        raise _bad(f"tensor {shown(name)} has data offsets that do not fit its shape")
    return TensorEntry(dtype, shape)


def read_header(data: bytes | Path) -> dict[str, TensorEntry]:
    """The tensors of a safetensors file (its bytes, or a path: then only the header is
    read); INVALID_ARGUMENT when it is not one."""
    if isinstance(data, Path):
        with data.open("rb") as f:
            total = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            head = prefix + f.read(min(n, _MAX_HEADER_BYTES))
    else:
        total, head = len(data), data
    if total < 8:
        raise _bad("shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", head[:8])
    if n > min(_MAX_HEADER_BYTES, total - 8):
        raise _bad(f"header length {n} exceeds the file")
    try:
        header = json.loads(head[8 : 8 + n])
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError too
        raise _bad(f"header is not JSON ({str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise _bad("header is not a JSON object")
    body_bytes = total - 8 - n
    return {name: _entry(name, info, body_bytes) for name, info in header.items()
            if name != "__metadata__"}


def check_weights(arch: Architecture, config: Config, data: bytes | Path) -> None:
    """INVALID_ARGUMENT listing every missing, unexpected or mis-shaped tensor."""
    found = read_header(data)
    expected = arch.param_shapes(config)
    violations: list[FieldViolation] = []
    for name, shape in expected.items():
        entry = found.get(name)
        if entry is None:
            violations.append(FieldViolation(f"weights.{name}", "missing"))
        elif entry.shape != shape:
            violations.append(FieldViolation(
                f"weights.{name}", f"shape {shown(list(entry.shape))}, expected {list(shape)}"))
        elif entry.dtype not in ("F32", "F16", "BF16", "F64"):
            violations.append(FieldViolation(f"weights.{name}",
                                             f"dtype {entry.dtype[:16]} is not float"))
    violations += [FieldViolation(f"weights.{_cut(name)}", "not a parameter of the architecture")
                   for name in sorted(set(found) - set(expected))]
    if violations:
        listed = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        raise WeightsMismatch(
            f"weights do not fit architecture {arch.name!r} ({len(violations)} problems: {listed})",
            violations=tuple(violations[:MAX_VIOLATIONS]),
        )


def _cut(name: str) -> str:
    return name if len(name) <= 64 else name[:64] + "…"
