"""One forward pass for a batch of inference jobs, split back into one result per job.

Runs in the worker's torch thread, never on the event loop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from maas import tensors
from maas.v1.model_service_pb2 import ModelVersion
from runtime.logs import log_context
from runtime.queue.v1.queue_pb2 import InferOutput, InferTask, JobError, JobResult, JobState, Tensor
from worker.cache import LoadedModel

log = logging.getLogger(__name__)


def _input(task: InferTask, name: str) -> np.ndarray:
    t = next(t for t in task.inputs if t.name == name)
    return tensors.from_raw(t.raw, t.datatype, t.shape)  # a read-only view, no copy


def _stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The jobs' arrays of one input along dim 0; where a variable dim (-1, e.g. a sequence)
    differs between jobs, each is padded with 0 to the batch's largest. One copy: the result
    owns writable memory that torch can share."""
    first = arrays[0].shape[1:]
    if all(a.shape[1:] == first for a in arrays):
        return np.concatenate(arrays)
    dims = np.max([a.shape for a in arrays], axis=0)
    out = np.zeros((sum(a.shape[0] for a in arrays), *dims[1:]), dtype=arrays[0].dtype)
    row = 0
    for a in arrays:
        out[(slice(row, row + a.shape[0]), *(slice(0, d) for d in a.shape[1:]))] = a
        row += a.shape[0]
    return out


def batch_inputs(names: Sequence[str], tasks: Sequence[InferTask]) -> list[np.ndarray]:
    """One array per input name: the jobs' arrays stacked (padded) along dim 0."""
    return [_stack([_input(task, n) for task in tasks]) for n in names]


def split_outputs(version: ModelVersion, tasks: Sequence[InferTask],
                  outputs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """The batch's outputs (in the version's output order) cut back into one dict per job."""
    host = {spec.name: o for spec, o in zip(version.outputs, outputs, strict=True)}
    first = version.inputs[0].name
    sizes = [next(t for t in task.inputs if t.name == first).shape[0] for task in tasks]
    bounds = np.cumsum([0, *sizes])
    return [{k: v[bounds[i]:bounds[i + 1]] for k, v in host.items()} for i in range(len(tasks))]


def _forward(model: LoadedModel, tasks: Sequence[InferTask]) -> list[dict[str, np.ndarray]]:
    names = [s.name for s in model.version.inputs]
    batch = [torch.from_numpy(a).to(model.device, non_blocking=True)
             for a in batch_inputs(names, tasks)]
    with torch.inference_mode():
        out = model.module(*batch)
    outputs = out if isinstance(out, tuple) else (out,)
    return split_outputs(model.version, tasks, [o.detach().to("cpu").numpy() for o in outputs])


def _tensor(name: str, array: np.ndarray) -> Tensor:
    datatype = tensors.datatype_of(array)
    raw = np.ascontiguousarray(array, dtype=tensors.NUMPY_DTYPES[datatype]).tobytes()
    return Tensor(name=name, datatype=datatype, shape=array.shape, raw=raw)


def infer_output(task: InferTask, arrays: dict[str, np.ndarray]) -> InferOutput:
    """The outputs a job asked for (all, in the version's order, when it named none)."""
    return InferOutput(outputs=[_tensor(n, arrays[n]) for n in task.output_names or arrays])


def run_batch(model: LoadedModel, jobs: Sequence[tuple[str, int, int, InferTask]],
              worker_id: str) -> list[JobResult]:
    """jobs: (job id, attempt, enqueue unix ms, task). One forward; on failure, one each."""
    started = time.time()
    tasks = [j[3] for j in jobs]
    try:
        per_job: list[dict[str, np.ndarray] | Exception] = list(_forward(model, tasks))
    except Exception as batch_error:  # the per-job boundary: isolate the job that fails
        per_job = [batch_error] if len(jobs) == 1 else [_alone(model, task) for task in tasks]
    compute_us = int((time.time() - started) * 1e6)
    started_us = int(started * 1e6)
    batch_size = len(jobs)
    results = []
    for (job_id, attempt, enqueue_ms, task), outcome in zip(jobs, per_job, strict=True):
        queue_us = max(0, started_us - enqueue_ms * 1000)
        if isinstance(outcome, Exception):
            with log_context(job_id=job_id, model=model.version.model):  # the torch thread
                log.warning("job %s failed in %s: %s", job_id, model.version.model, outcome)
            results.append(JobResult(
                job_id=job_id, worker_id=worker_id, attempt=attempt, batch_size=batch_size,
                compute_us=compute_us, queue_us=queue_us, state=JobState.JOB_STATE_FAILED,
                error=JobError(code="INTERNAL", reason="MODEL_FAILED",
                               message=f"the model raised: {outcome}")))
        else:
            results.append(JobResult(
                job_id=job_id, worker_id=worker_id, attempt=attempt, batch_size=batch_size,
                compute_us=compute_us, queue_us=queue_us, state=JobState.JOB_STATE_SUCCEEDED,
                infer=infer_output(task, outcome)))
    return results


def _alone(model: LoadedModel, task: InferTask) -> dict[str, np.ndarray] | Exception:
    """One job's own forward, after its batch failed: its outputs, or what it raised."""
    try:
        return _forward(model, [task])[0]
    except Exception as exc:  # the per-job boundary
        return exc
