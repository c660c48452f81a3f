"""TorchScript and torch.export archives, inspected in pure Python: no torch, nothing unpickled.

Both are zip files under one root folder. TorchScript (torch.jit.save) holds `code/` (the
TorchScript source), `data.pkl` and `version`; torch.export (torch.export.save, `.pt2`) holds
`archive_format` = "pt2", `models/model.json` and tensors described by JSON configs. The
gateway checks the layout before storing an archive; the worker checks it again before
torch loads it, so that no file torch would unpickle with Python's pickle ever reaches it
(see `check_export_layout`). Tensor metadata is the user's: Triton's config JSON or
maas TensorSpecs.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from maas.errors import FieldViolation, InvalidArchive, InvalidArgument, shown
from maas.tensors import NUMPY_DTYPES
from maas.v1.model_service_pb2 import ModelFormat
from runtime.architectures import TensorSpec

TORCHSCRIPT = ModelFormat.MODEL_FORMAT_TORCHSCRIPT
TORCH_EXPORT = ModelFormat.MODEL_FORMAT_TORCH_EXPORT
# The file name each format has in Triton's layout (`file:<version>/<name>`).
FILE_NAMES = {TORCHSCRIPT: "model.pt", TORCH_EXPORT: "model.pt2"}
PLATFORMS = {TORCHSCRIPT: "pytorch_libtorch", TORCH_EXPORT: "torch_export"}
MAX_TENSORS = 64
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_EXPORT_CONFIGS = ("data/weights/model_weights_config.json",
                   "data/constants/model_constants_config.json")
# Files torch.export.load would read with torch.load / pickle: refused wherever they appear.
_EXPORT_LEGACY = ("data/weights/model.pt", "data/constants/model.pt")


def _bad(why: str, field: str = "archive") -> InvalidArchive:
    return InvalidArchive(f"{field} is not a usable model archive: {why}",
                          violations=(FieldViolation(field, why),))


def _entries(archive: zipfile.ZipFile, field: str) -> dict[str, zipfile.ZipInfo]:
    """Path below the single root folder → entry."""
    infos = archive.infolist()
    roots = {i.filename.split("/", 1)[0] for i in infos}
    if len(roots) != 1 or any("/" not in i.filename for i in infos):
        raise _bad("its files must sit in one root folder, as torch.jit.save and "
                   "torch.export.save write them", field)
    return {i.filename.split("/", 1)[1]: i for i in infos}


def _json(archive: zipfile.ZipFile, info: zipfile.ZipInfo, field: str) -> Any:
    if info.file_size > MAX_CONFIG_BYTES:
        raise _bad(f"{info.filename} is over {MAX_CONFIG_BYTES} bytes", field)
    try:
        return json.loads(archive.read(info))
    except (ValueError, zipfile.BadZipFile) as exc:
        raise _bad(f"{info.filename} is not readable JSON ({exc})", field) from exc


def check_export_layout(archive: zipfile.ZipFile, entries: Mapping[str, zipfile.ZipInfo],
                        field: str = "archive") -> None:
    """A .pt2 whose every tensor is raw bytes: torch.export.load then unpickles nothing but
    the sample inputs (which it reads with weights_only=True; the worker forces that)."""
    if "models/model.json" not in entries:
        raise _bad("a torch.export archive needs models/model.json (one program named "
                   "'model', as torch.export.save writes it)", field)
    legacy = [name for name in _EXPORT_LEGACY if name in entries]
    if legacy:
        raise _bad(f"{legacy[0]} is a pickled legacy weights file; re-save the program with "
                   "torch.export.save of this torch version", field)
    for name in _EXPORT_CONFIGS:
        if name not in entries:
            raise _bad(f"{name} is missing", field)
        config = _json(archive, entries[name], field).get("config", {})
        for fqn, payload in config.items():
            path = str(payload.get("path_name", ""))
            if payload.get("use_pickle") or not path.startswith(("weight_", "tensor_")):
                raise _bad(f"{shown(fqn)} is stored pickled ({shown(path)}); only plain tensor "
                           "weights and constants are accepted (no script objects)", field)


# What TorchScript's serialized code (`code/**.py`) may not contain, checked without torch:
# methods torch runs while loading, and operators of other namespaces than aten and prim.
_SETSTATE = re.compile(r"^\s*def __setstate__\b", re.MULTILINE)
_NAMESPACE_OP = re.compile(r"\bops\.([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_DENIED_BUILTINS = re.compile(r"\btorch\.(from_file|save|load)\s*\(")
ALLOWED_NAMESPACES = frozenset({"aten", "prim"})
MAX_CODE_BYTES = 64 * 1024 * 1024


_DEF = re.compile(r"^\s*def\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


def _where(text: str, offset: int, name: str) -> str:
    """`forward, code/__torch__.py line 8`: the method and line of an offset in a file."""
    methods = [m.group(1) for m in _DEF.finditer(text, 0, offset)]
    line = text.count("\n", 0, offset) + 1
    return f"{methods[-1] if methods else 'module'}, {name} line {line}"


def _code_violations(name: str, text: str) -> list[str]:
    found = [f"method __setstate__ runs while the archive loads and is not allowed "
             f"({_where(text, m.start() + len(m.group(0)), name)})"
             for m in _SETSTATE.finditer(text)]
    for m in _NAMESPACE_OP.finditer(text):
        if m.group(1) not in ALLOWED_NAMESPACES:
            found.append(f"operator {m.group(1)}::{m.group(2)} is not allowed (unknown "
                         f"namespace; {_where(text, m.start(), name)})")
    found += [f"operator aten::{m.group(1)} is not allowed ({_where(text, m.start(), name)})"
              for m in _DENIED_BUILTINS.finditer(text)]
    return found


def check_code(data: bytes | Path) -> list[str]:
    """What a TorchScript archive's code may not do, found by reading it (no torch): a
    `__setstate__` (torch would run it while loading), operators of another namespace than
    aten and prim, torch.from_file / save / load. [] for torch.export archives, whose graph
    is checked once loaded, and for clean code. The operator allowlist on the loaded graph
    (worker/sandbox/allowlist.py) is the full check; this one runs before torch sees it."""
    found: list[str] = []
    with zipfile.ZipFile(_file(data)) as archive:
        entries = _entries(archive, "archive")
        if "archive_format" in entries:
            return []
        code = [(n, i) for n, i in entries.items() if n.startswith("code/") and n.endswith(".py")]
        if sum(i.file_size for _, i in code) > MAX_CODE_BYTES:
            return [f"its code is over {MAX_CODE_BYTES} bytes"]
        for name, info in sorted(code):
            text = archive.read(info).decode("utf-8", errors="replace")
            found += _code_violations(name, text)
    return found


def _file(data: bytes | Path) -> io.BytesIO | Path:
    return data if isinstance(data, Path) else io.BytesIO(data)


def archive_format(data: bytes | Path, field: str = "archive") -> ModelFormat.ValueType:
    """TORCHSCRIPT or TORCH_EXPORT by the zip's layout (the bytes, or a file's path: then
    only the zip's directory and small entries are read); INVALID_ARGUMENT for anything
    else."""
    try:
        with zipfile.ZipFile(_file(data)) as archive:
            entries = _entries(archive, field)
            if "archive_format" in entries:
                if archive.read(entries["archive_format"]).strip() != b"pt2":
                    raise _bad("archive_format is not 'pt2'", field)
                check_export_layout(archive, entries, field)
                return TORCH_EXPORT
            if ("data.pkl" in entries and "version" in entries
                    and any(n.startswith("code/") for n in entries)):
                return TORCHSCRIPT
    except zipfile.BadZipFile as exc:
        raise _bad(f"not a zip file ({exc})", field) from exc
    raise _bad("neither a TorchScript archive (torch.jit.save: <root>/code/, <root>/data.pkl) "
               "nor a torch.export archive (torch.export.save: <root>/archive_format)", field)


def check_specs(specs: Iterable[TensorSpec], field: str) -> list[TensorSpec]:
    """Names unique and non-empty, v2 datatypes, dims >= 1 or -1; at least one tensor."""
    found = list(specs)
    problems: list[FieldViolation] = []
    if not 1 <= len(found) <= MAX_TENSORS:
        problems.append(FieldViolation(field, f"give 1 to {MAX_TENSORS} tensors"))
    names = [s.name for s in found]
    for i, s in enumerate(found[:MAX_TENSORS]):
        where = f"{field}[{i}]"
        if not s.name or len(s.name) > 128 or names.count(s.name) > 1:
            problems.append(FieldViolation(f"{where}.name", "empty, too long or repeated"))
        if s.datatype not in NUMPY_DTYPES:
            problems.append(FieldViolation(f"{where}.datatype", f"{shown(s.datatype)} is not "
                                           f"one of {sorted(NUMPY_DTYPES)}"))
        if not s.shape or len(s.shape) > 8 or any(d < 1 and d != -1 for d in s.shape):
            problems.append(FieldViolation(f"{where}.shape",
                                           "1 to 8 dims, each >= 1 or -1 (variable)"))
    if problems:
        listed = "; ".join(f"{v.field}: {v.description}" for v in problems[:3])
        raise InvalidArgument(f"bad tensor metadata ({listed})", violations=tuple(problems))
    return found


def _triton_tensor(entry: object, batched: bool, field: str) -> TensorSpec:
    if not isinstance(entry, dict):
        raise _config_error(f"{field} entries must be objects", field)
    try:
        dims = [int(d) for d in entry.get("dims", [])]
        name, datatype = str(entry["name"]), str(entry.get("data_type", ""))
    except (KeyError, TypeError, ValueError) as exc:
        raise _config_error(f"{field} entries need name, data_type and dims ({exc})",
                            field) from exc
    datatype = datatype.removeprefix("TYPE_")
    return TensorSpec(name, datatype, tuple([-1, *dims] if batched else dims))


def _config_error(why: str, field: str) -> InvalidArgument:
    return InvalidArgument(f"config: {why}; expected Triton's model config, e.g. "
                           '{"max_batch_size": 8, "input": [{"name": "input", "data_type": '
                           '"TYPE_FP32", "dims": [4]}], "output": [...]}',
                           violations=(FieldViolation(f"config.{field}", why),))


def triton_tensors(config_json: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) from Triton's config JSON; with max_batch_size > 0 the batch
    dimension (-1) is prepended to `dims`, as Triton does."""
    try:
        config = json.loads(config_json)
    except ValueError as exc:
        raise _config_error(f"not JSON ({exc})", "json") from exc
    if not isinstance(config, dict):
        raise _config_error("not a JSON object", "json")
    batched = int(config.get("max_batch_size", 0) or 0) > 0
    found = []
    for field in ("input", "output"):
        entries = config.get(field)
        if not isinstance(entries, list):
            raise _config_error(f"'{field}' must be a list of tensors", field)
        found.append(check_specs([_triton_tensor(e, batched, field) for e in entries],
                                 f"config.{field}"))
    return found[0], found[1]
