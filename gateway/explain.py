"""maas.v1.InferenceService.Explain: checks the request, queues an explanation job (worker/
explain.py runs it with Captum) and waits for its attributions like ModelInfer waits.

Every problem of the request is one google.rpc.BadRequest field violation, all reported at
once: the inputs as ModelInfer checks them, then method, target, n_steps and baselines.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from gateway.inference import caller_of
from gateway.plane.inference import Caller, InferencePlane
from gateway.validation import check_message_size, infer_task
from maas import tensors
from maas.errors import FieldViolation, InvalidArgument, shown
from maas.inference import grpc_service_pb2 as v2
from maas.v1 import inference_service_pb2 as pb
from maas.v1.model_service_pb2 import ModelVersion
from runtime.logs import log_context
from runtime.queue.v1.queue_pb2 import ExplainTask, JobKind, Tensor
from runtime.settings import Settings
from runtime.tracing import trace_id
from scheduler.registry import ModelRegistry

DEFAULT_STEPS = 50
MAX_STEPS = 1000
# An integer input of this name holds token ids: the worker attributes it through the
# model's `embedding` module (worker/explain.py). Other integer inputs are not attributed.
TOKEN_INPUT = "tokens"
FLOAT_TYPES = frozenset({"FP16", "BF16", "FP32", "FP64"})


def is_attributed(name: str, datatype: str) -> bool:
    return datatype in FLOAT_TYPES or name == TOKEN_INPUT


def _check_target(request: pb.ExplainRequest, version: ModelVersion) -> list[FieldViolation]:
    if not request.HasField("target"):
        return []
    classes = version.outputs[0].shape[-1] if version.outputs and version.outputs[0].shape else -1
    if request.target < 0 or 0 < classes <= request.target:
        return [FieldViolation("target", f"class {request.target} is not in [0, {classes}) "
                               f"(the classes of output {version.outputs[0].name!r})"
                               if classes > 0 else f"class {request.target} is negative")]
    return []


def _check_baseline(j: int, b: pb.Tensor, inputs: dict[str, pb.Tensor],
                    version: ModelVersion) -> FieldViolation | None:
    where = f"baselines[{j}]"
    specs = {s.name: s for s in version.inputs}
    spec, given = specs.get(b.name), inputs.get(b.name)
    if spec is None:
        return FieldViolation(f"{where}.name", f"model {version.model!r} has no input "
                              f"{shown(b.name)}; its inputs: {sorted(specs)}")
    if not is_attributed(spec.name, spec.datatype):
        return FieldViolation(f"{where}.name", f"input {spec.name!r} ({spec.datatype}) is not "
                              f"attributed: only float inputs and {TOKEN_INPUT!r} take a baseline")
    if b.datatype != spec.datatype:
        return FieldViolation(f"{where}.datatype",
                              f"{spec.name!r} is {spec.datatype}, got {shown(b.datatype)}")
    want = list(given.shape) if given is not None else None
    if want is not None and list(b.shape) not in (want, [1, *want[1:]]):
        return FieldViolation(f"{where}.shape", f"shape {shown(list(b.shape))} is neither the "
                              f"input's {want} nor {[1, *want[1:]]} (one baseline for all rows)")
    if want is not None and len(b.raw) != tensors.byte_size(b.datatype, b.shape):
        return FieldViolation(f"{where}.raw", f"has {len(b.raw)} bytes; {b.datatype} "
                              f"{list(b.shape)} needs {tensors.byte_size(b.datatype, b.shape)}")
    return None


def _check_options(request: pb.ExplainRequest, version: ModelVersion) -> list[FieldViolation]:
    found: list[FieldViolation] = []
    if request.method not in pb.ExplainMethod.values():
        found.append(FieldViolation("method", f"unknown method {request.method}; use "
                                    "EXPLAIN_METHOD_INTEGRATED_GRADIENTS or _SALIENCY"))
    if not 0 <= request.n_steps <= MAX_STEPS:
        found.append(FieldViolation("n_steps", f"{request.n_steps} is not in [0, {MAX_STEPS}] "
                                    f"(0 = {DEFAULT_STEPS})"))
    found += _check_target(request, version)
    inputs = {t.name: t for t in request.inputs}
    seen: set[str] = set()
    for j, b in enumerate(request.baselines):
        if b.name in seen:
            found.append(FieldViolation(f"baselines[{j}].name", f"{shown(b.name)} given twice"))
        elif (problem := _check_baseline(j, b, inputs, version)) is not None:
            found.append(problem)
        seen.add(b.name)
    return found


def explain_task(request: pb.ExplainRequest, version: ModelVersion, *,
                 max_elements: int = 0) -> ExplainTask:
    """The queue task of a valid request; INVALID_ARGUMENT listing every problem otherwise."""
    problems = _check_options(request, version)
    as_v2 = v2.ModelInferRequest(model_name=request.model, model_version=request.model_version)
    for t in request.inputs:
        as_v2.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        as_v2.raw_input_contents.append(t.raw)
    try:
        inputs: Sequence[Tensor] = infer_task(as_v2, version, max_elements=max_elements).inputs
    except InvalidArgument as err:
        problems = [*err.violations, *problems]
        inputs = ()
    if problems:
        listed = "; ".join(f"{v.field}: {v.description}" for v in problems[:3])
        raise InvalidArgument(f"bad Explain request for model {version.model!r} version "
                              f"{version.version}: {listed}", violations=tuple(problems))
    method = request.method or pb.EXPLAIN_METHOD_INTEGRATED_GRADIENTS
    task = ExplainTask(inputs=inputs, method=method, n_steps=request.n_steps or DEFAULT_STEPS,
                       baselines=[Tensor(name=b.name, datatype=b.datatype, shape=b.shape,
                                         raw=b.raw) for b in request.baselines])
    if request.HasField("target"):
        task.target = request.target
    return task


class Explainer:
    """Explain without the servicer: request → job → response, run by the InferencePlane."""

    def __init__(self, settings: Settings, registry: ModelRegistry,
                 plane: InferencePlane) -> None:
        self._settings = settings
        self._registry = registry
        self._plane = plane

    async def explain(self, request: pb.ExplainRequest,
                      context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        return await self.explain_for(request, caller_of(context))

    async def explain_for(self, request: pb.ExplainRequest, caller: Caller) -> pb.ExplainResponse:
        check_message_size(request, self._settings.max_message_bytes)
        version = await self._registry.resolve_visible(caller.tenant, request.model,
                                                       request.model_version)
        await self._registry.check_serving(version)  # UNAVAILABLE once unloaded
        task = explain_task(request, version, max_elements=self._settings.max_tensor_elements)
        envelope = self._plane.envelope(version, caller, JobKind.JOB_KIND_EXPLAIN)
        envelope.explain.CopyFrom(task)
        with log_context(job_id=envelope.job_id, tenant=envelope.tenant,
                         trace_id=trace_id(envelope.trace_context)):
            result = await self._plane.run_job(envelope, version)
        out = result.explain
        return pb.ExplainResponse(
            model=request.model, model_version=version.version, method=task.method,
            attributions=[pb.Tensor(name=t.name, datatype=t.datatype, shape=t.shape, raw=t.raw)
                          for t in out.attributions],
            targets=out.targets, convergence_deltas=out.convergence_deltas,
            target_outputs=out.target_outputs, baseline_outputs=out.baseline_outputs)
