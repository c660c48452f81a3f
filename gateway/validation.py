"""Checks a v2 ModelInferRequest against a model version and converts it to raw tensors.

Every problem becomes a google.rpc.BadRequest field violation; all of them are reported
at once (up to MAX_VIOLATIONS), so a client fixes its request in one go. Names and shapes
from the request are shortened in messages: the status must fit in gRPC's trailers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TypeAlias

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import Message

from gateway.bounds import MAX_PRIORITY, check_priority
from maas import tensors
from maas.errors import FieldViolation, InvalidArgument, MessageTooLarge, TooManyElements, shown
from maas.inference.grpc_service_pb2 import InferParameter, ModelInferRequest
from maas.v1.model_service_pb2 import ModelVersion, TensorSpec
from runtime.architectures import Architecture, Config, get_architecture
from runtime.queue.v1.queue_pb2 import InferTask, Tensor


def check_message_size(request: Message, limit: int) -> None:
    """RESOURCE_EXHAUSTED naming the setting when a request is over MAAS_MAX_MESSAGE_BYTES
    (gRPC's own hard limit sits above it, so this is the message a caller sees)."""
    if (size := request.ByteSize()) > limit:
        raise MessageTooLarge(
            f"request is {size} bytes, over the gateway's limit of {limit} bytes "
            "(MAAS_MAX_MESSAGE_BYTES); split the batch or raise the setting on the gateway "
            "and the client")

MAX_DIM = 1 << 31
# Shapes of at most this many dims have their elements counted in one product (small).
MAX_EXACT_DIMS = 16
# Violations listed one by one; a request with thousands of bad inputs is told how many more.
MAX_VIOLATIONS = 10


RepeatedTensors: TypeAlias = RepeatedCompositeFieldContainer[Tensor]
# Architectures whose check_inputs is the default check no values: no arrays are made.
_NO_VALUE_CHECK = Architecture.check_inputs


class _Problems:
    def __init__(self) -> None:
        self.items: list[FieldViolation] = []
        self.count = 0

    def add(self, field: str, description: str) -> None:
        self.count += 1
        if len(self.items) < MAX_VIOLATIONS:
            self.items.append(FieldViolation(field, description))

    def summary(self) -> str:
        listed = "; ".join(f"{v.field}: {v.description}" for v in self.items[:3])
        more = self.count - min(self.count, 3)
        return f"{listed} (and {more} more)" if more else listed


def _shape(shape: Sequence[int]) -> str:
    """A request's shape for a message: at most 8 dims are written out."""
    dims = list(shape)
    return str(dims) if len(dims) <= 8 else f"[{', '.join(map(str, dims[:8]))}, …]"


def _check_shape(p: _Problems, where: str, shape: Sequence[int], spec: TensorSpec) -> bool:
    wants = spec.shape
    if len(shape) != len(wants):
        p.add(f"{where}.shape", f"shape {_shape(shape)} has {len(shape)} dims; "
              f"{spec.name!r} takes {list(wants)} (-1 = any size)")
        return False
    ok = True
    for axis, (got, want) in enumerate(zip(shape, wants, strict=True)):
        if got < 1 or got > MAX_DIM or (want != -1 and got != want):
            p.add(f"{where}.shape[{axis}]",
                  f"dim {got} does not fit {list(wants)} (dims >= 1; -1 = any size)")
            ok = False
    return ok


def _raw_from_contents(p: _Problems, where: str, inp: ModelInferRequest.InferInputTensor,
                       count: int) -> bytes | None:
    field = tensors.CONTENTS_FIELD.get(inp.datatype)
    if field is None:
        p.add(f"{where}.contents", f"{inp.datatype} can only be sent in raw_input_contents")
        return None
    values = getattr(inp.contents, field)
    if len(values) != count:
        p.add(f"{where}.contents.{field}",
              f"has {len(values)} values; shape {_shape(inp.shape)} needs {count}")
        return None
    try:
        return tensors.contents_to_raw(values, inp.datatype)
    except ValueError as exc:  # a value the datatype cannot hold, e.g. 300 as INT8
        p.add(f"{where}.contents.{field}", str(exc))
        return None


def _check_input(p: _Problems, i: int, inp: ModelInferRequest.InferInputTensor,
                 spec: TensorSpec, raw: bytes | None, into: RepeatedTensors, *,
                 has_bytes: bool) -> None:
    """Adds the input to `into` as a raw tensor: raw contents as the bytes that arrived,
    typed contents converted. Without `has_bytes` (blobs that cannot be matched to inputs)
    only its datatype and shape are checked: its size is unknowable."""
    datatype, shape = inp.datatype, tuple(inp.shape)
    if datatype != spec.datatype:
        p.add(f"inputs[{i}].datatype", f"{inp.name!r} is {spec.datatype}, got {shown(datatype)}")
        return
    if not _check_shape(p, f"inputs[{i}]", shape, spec) or not has_bytes:
        return
    count = math.prod(shape)
    if raw is None:
        raw = _raw_from_contents(p, f"inputs[{i}]", inp, count)
    elif len(raw) != count * tensors.ITEMSIZE[datatype]:
        p.add(f"raw_input_contents[{i}]",
              f"has {len(raw)} bytes; {datatype} {_shape(shape)} needs "
              f"{count * tensors.ITEMSIZE[datatype]}")
        return
    if raw is not None:
        into.add(name=inp.name, datatype=datatype, shape=shape, raw=raw)


@functools.lru_cache(maxsize=1024)
def _architecture(name: str, config_json: str) -> tuple[Architecture, Config] | None:
    """A version's architecture and resolved config, when it checks input values (registered
    versions always have an architecture; most check no values)."""
    try:
        arch = get_architecture(name)
    except InvalidArgument:
        return None
    if arch.check_inputs is _NO_VALUE_CHECK:
        return None
    try:
        return arch, arch.resolve_config(config_json)
    except InvalidArgument:
        return None


def _check_values(p: _Problems, request: ModelInferRequest, version: ModelVersion,
                  inputs: Sequence[Tensor]) -> None:
    """What the architecture checks in the values (lengths per row, token ids in range)."""
    found = _architecture(version.architecture, version.config_json)
    if found is None:
        return
    arch, config = found
    arrays = {t.name: tensors.from_raw(t.raw, t.datatype, t.shape) for t in inputs}
    index = {inp.name: i for i, inp in enumerate(request.inputs)}
    for name, below, why in arch.check_inputs(config, arrays):
        p.add(f"inputs[{index[name]}]" + (f".{below}" if below else ""), why)


def _check_batch(p: _Problems, inputs: Sequence[Tensor], specs: dict[str, TensorSpec]) -> None:
    if len(inputs) < 2:  # one input cannot disagree with itself
        return
    batches = {t.shape[0] for t in inputs if specs[t.name].shape[:1] == [-1]}
    if len(batches) > 1:
        p.add("inputs", f"inputs disagree on the batch dimension: {sorted(batches)}")


def _check_inputs(p: _Problems, request: ModelInferRequest, version: ModelVersion,
                  specs: dict[str, TensorSpec], into: RepeatedTensors) -> None:
    inputs, raws = request.inputs, request.raw_input_contents
    has_bytes = not raws or len(raws) == len(inputs)
    if not has_bytes:
        p.add("raw_input_contents", f"has {len(raws)} blobs for {len(inputs)} inputs "
              "(one blob per input, in order)")
    seen: set[str] = set()
    for i, inp in enumerate(inputs):
        name = inp.name
        spec = specs.get(name)
        if name in seen:
            p.add(f"inputs[{i}].name", f"input {shown(name)} is given twice")
        elif spec is None:
            p.add(f"inputs[{i}].name", f"model {version.model!r} has no input "
                  f"{shown(name)}; its inputs: {sorted(specs)}")
        elif raws and inp.HasField("contents"):
            p.add(f"inputs[{i}].contents",
                  "set together with raw_input_contents: send one or the other")
        else:
            _check_input(p, i, inp, spec, raws[i] if raws and has_bytes else None, into,
                         has_bytes=has_bytes)
        seen.add(name)
    for name in sorted(specs.keys() - seen):
        spec = specs[name]
        p.add("inputs", f"missing input {name!r} ({spec.datatype} {list(spec.shape)})")


def check_element_count(request: ModelInferRequest, max_elements: int) -> None:
    """RESOURCE_EXHAUSTED when the inputs' shapes hold more than `max_elements` (0 = any)."""
    if not max_elements:
        return
    total = 0
    for inp in request.inputs:
        shape = inp.shape
        if len(shape) <= MAX_EXACT_DIMS and min(shape, default=0) >= 0:
            count = min(math.prod(shape), max_elements + 1)  # a few dims: no huge product
        else:
            count = 1
            for dim in shape:
                count = min(count * max(int(dim), 0), max_elements + 1)  # no huge products
        total += count
        if total > max_elements:
            raise TooManyElements(
                f"the request's inputs hold more than {max_elements} elements, the gateway's "
                "limit (MAAS_MAX_TENSOR_ELEMENTS); split the batch or raise the setting")


def infer_task(request: ModelInferRequest, version: ModelVersion, *,
               max_elements: int = 0, into: InferTask | None = None) -> InferTask:
    """The queue task of a valid request (written into `into`, e.g. an envelope's, when
    given: no copy); INVALID_ARGUMENT listing every problem otherwise, RESOURCE_EXHAUSTED
    (TooManyElements) when it is over `max_elements` (0 = no limit)."""
    check_element_count(request, max_elements)
    task = InferTask() if into is None else into
    p = _Problems()
    specs = {s.name: s for s in version.inputs}
    _check_inputs(p, request, version, specs, task.inputs)
    if request.outputs:
        outputs = {s.name for s in version.outputs}
        for j, out in enumerate(request.outputs):
            if out.name not in outputs:
                p.add(f"outputs[{j}].name", f"model {version.model!r} has no output "
                      f"{shown(out.name)}; its outputs: {sorted(outputs)}")
            task.output_names.append(out.name)
    if not p.items:
        _check_values(p, request, version, task.inputs)
    if not p.items:
        _check_batch(p, task.inputs, specs)
    if p.items:
        raise InvalidArgument(f"bad request for model {version.model!r} version "
                              f"{version.version}: {p.summary()}", violations=tuple(p.items))
    task.request_id = request.id
    return task


def priority_of(request: ModelInferRequest) -> int:
    """The v2 `priority` parameter (1 highest, 0 default), as tritonclient sends it; the
    same range as maas.v1's `priority` (gateway/bounds.py)."""
    if "priority" not in request.parameters:
        return 0
    param: InferParameter = request.parameters["priority"]
    kind = param.WhichOneof("parameter_choice")
    if kind not in ("uint64_param", "int64_param"):
        raise InvalidArgument(
            f"parameter 'priority' must be an integer from 0 (default) to {MAX_PRIORITY} "
            f"(1 = highest); got a {kind or 'parameter with no value'}",
            violations=(FieldViolation("parameters.priority", "not an integer"),))
    return check_priority(int(getattr(param, kind)), "parameters.priority",
                          what="parameter 'priority'")
