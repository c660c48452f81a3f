"""Explanation jobs: attributions of one output class to a model's inputs, with Captum.

Runs in the worker's torch thread (gradients on, never inference mode), one job at a time.
- Float inputs: Integrated Gradients or Saliency on the inputs themselves.
- A model with integer inputs: the integer input `tokens` is attributed through the module
  `embedding` (LayerIntegratedGradients / the gradient at the embedding's output), summed
  over the embedding dimension: one value per token. Other inputs (`lengths`) go to the
  model unchanged, in the baseline's forward too.
The target is one class for every row, or each row's predicted class. Integrated Gradients
also returns its convergence delta: sum(attributions) - (f(x) - f(baseline)) per row.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import (
    IntegratedGradients,
    LayerGradientXActivation,
    LayerIntegratedGradients,
    Saliency,
)

from maas import tensors
from maas.errors import (
    InvalidArgument,
    MaasError,
    ModelFailed,
    ModelNotExplainable,
)
from maas.v1.inference_service_pb2 import EXPLAIN_METHOD_SALIENCY
from runtime.logs import log_context
from runtime.queue.v1.queue_pb2 import (
    ExplainOutput,
    ExplainTask,
    JobError,
    JobKind,
    JobResult,
    JobState,
    Tensor,
)
from scheduler.queue import Started
from worker.cache import LoadedModel
from worker.executor import run_batch

log = logging.getLogger(__name__)

TOKEN_INPUT = "tokens"  # as gateway/explain.py: the integer input that holds token ids
EMBEDDING_MODULE = "embedding"
# Rows of one forward pass inside Integrated Gradients (batch x steps are split to fit).
INTERNAL_BATCH_ROWS = 1024


def is_explain(started: Started) -> bool:
    return started.envelope.kind == JobKind.JOB_KIND_EXPLAIN


@dataclass
class Problem:
    """What the explanation attributes: inputs (or one layer) and what stays fixed."""

    forward: Any  # forward(*attributed, *fixed) → logits [B, C]
    attributed: list[torch.Tensor]
    baselines: list[torch.Tensor]
    fixed: list[torch.Tensor]
    names: list[str]
    layer: torch.nn.Module | None  # the embedding, for token inputs


def _tensor(t: Tensor, device: torch.device) -> torch.Tensor:
    array = np.array(tensors.from_raw(t.raw, t.datatype, t.shape))  # writable copy
    return torch.from_numpy(array).to(device)


def _problem(model: LoadedModel, task: ExplainTask) -> Problem:
    order = [s.name for s in model.version.inputs]
    given = {t.name: _tensor(t, model.device) for t in task.inputs}
    inputs = [given[n] for n in order]
    if all(x.is_floating_point() for x in inputs):
        chosen, layer = list(range(len(order))), None
    else:
        layer = getattr(model.module, EMBEDDING_MODULE, None)
        if TOKEN_INPUT not in order or not isinstance(layer, torch.nn.Module):
            raise ModelNotExplainable(
                f"model {model.version.model!r} has integer inputs but no integer input "
                f"{TOKEN_INPUT!r} read by a submodule {EMBEDDING_MODULE!r}: nothing to "
                "attribute them through")
        chosen = [order.index(TOKEN_INPUT)]
    rest = [i for i in range(len(order)) if i not in chosen]
    baselines = {t.name: _tensor(t, model.device) for t in task.baselines}
    bases = [baselines[order[i]].expand_as(inputs[i]).contiguous() if order[i] in baselines
             else torch.zeros_like(inputs[i]) for i in chosen]
    module = model.module

    def forward(*args: torch.Tensor) -> torch.Tensor:
        full: list[torch.Tensor] = [args[0]] * len(order)
        for i, x in zip(chosen + rest, args, strict=True):
            full[i] = x
        out = module(*full)
        return out[0] if isinstance(out, tuple) else out  # type: ignore[no-any-return]

    return Problem(forward, [inputs[i] for i in chosen], bases, [inputs[i] for i in rest],
                   [order[i] for i in chosen], layer)


@contextlib.contextmanager
def _gradients() -> Iterator[None]:
    """Gradients on; cuDNN off (its RNN backward needs training mode, and modules stay in
    eval mode: dropout and batch-norm statistics must not change)."""
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        yield


def _targets(p: Problem, task: ExplainTask) -> tuple[torch.Tensor, torch.Tensor]:
    """(target per row, f(x)[target] per row)."""
    with torch.no_grad():
        logits = p.forward(*p.attributed, *p.fixed)
    if logits.dim() != 2:
        raise ModelNotExplainable(f"the model's first output is {list(logits.shape)}; "
                                  "explanations need logits [batch, classes]")
    if task.HasField("target"):
        if not 0 <= task.target < logits.shape[1]:
            raise InvalidArgument(f"target {task.target} is not a class of the model "
                                  f"(0..{logits.shape[1] - 1})")
        targets = torch.full((logits.shape[0],), task.target, dtype=torch.long,
                             device=logits.device)
    else:
        targets = logits.argmax(dim=1)
    return targets, logits.gather(1, targets[:, None])[:, 0]


def _attribute(p: Problem, task: ExplainTask,
               targets: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Attributions (one per attributed input) and, for IG, the convergence delta."""
    extra = tuple(p.fixed) or None
    if task.method == EXPLAIN_METHOD_SALIENCY:
        if p.layer is None:
            for x in p.attributed:
                x.requires_grad_()
            found = Saliency(p.forward).attribute(tuple(p.attributed), target=targets,
                                                  abs=True, additional_forward_args=extra)
        else:  # the gradient at the embedding's output
            found = LayerGradientXActivation(p.forward, p.layer, multiply_by_inputs=False
                                             ).attribute(tuple(p.attributed), target=targets,
                                                         additional_forward_args=extra).abs()
        return list(found) if isinstance(found, tuple) else [found], None
    rows = p.attributed[0].shape[0]
    chunk = None if rows * task.n_steps <= INTERNAL_BATCH_ROWS else max(rows, INTERNAL_BATCH_ROWS)
    method = (IntegratedGradients(p.forward) if p.layer is None
              else LayerIntegratedGradients(p.forward, p.layer))
    found, delta = method.attribute(tuple(p.attributed), baselines=tuple(p.baselines),
                                    target=targets, additional_forward_args=extra,
                                    n_steps=task.n_steps, internal_batch_size=chunk,
                                    return_convergence_delta=True)
    return list(found) if isinstance(found, tuple) else [found], delta


def explain(model: LoadedModel, task: ExplainTask) -> ExplainOutput:
    """The attributions of one task (raises MaasError for what the caller can fix)."""
    p = _problem(model, task)
    with _gradients():
        targets, at_input = _targets(p, task)
        found, delta = _attribute(p, task, targets)
    if p.layer is not None:
        found = [a.sum(dim=-1) for a in found]  # [B, T, E] → one value per token
    out = ExplainOutput(targets=targets.tolist(), target_outputs=at_input.tolist())
    for name, a in zip(p.names, found, strict=True):
        array = a.detach().to("cpu", torch.float32).numpy()
        out.attributions.add(name=name, datatype="FP32", shape=array.shape,
                             raw=tensors.to_raw(array))
    if delta is not None:
        with torch.no_grad():
            at_base = p.forward(*p.baselines, *p.fixed).gather(1, targets[:, None])[:, 0]
        out.convergence_deltas.extend(delta.detach().double().cpu().tolist())
        out.baseline_outputs.extend(at_base.tolist())
    return out


def explain_job(model: LoadedModel, started: Started, worker_id: str) -> JobResult:
    """One explanation job → its result; a failure is data (FAILED + error), never raised."""
    job_id = started.delivery.job_id
    began = time.time()
    result = JobResult(job_id=job_id, worker_id=worker_id, attempt=started.attempt,
                       batch_size=1, queue_us=max(0, int(began * 1e6)
                                                  - started.envelope.enqueue_unix_ms * 1000))
    try:
        result.explain.CopyFrom(explain(model, started.envelope.explain))
        result.state = JobState.JOB_STATE_SUCCEEDED
    except Exception as exc:  # the per-job boundary
        with log_context(job_id=job_id, model=model.version.model):
            log.warning("explanation %s failed in %s: %s", job_id, model.version.model, exc)
        err = exc if isinstance(exc, MaasError) else ModelFailed(f"the model raised: {exc}")
        result.state = JobState.JOB_STATE_FAILED
        result.error.CopyFrom(JobError(code=err.code.name, reason=err.reason,
                                       message=err.message))
    result.compute_us = int((time.time() - began) * 1e6)
    return result


def run_with_explanations(model: LoadedModel, started: Sequence[Started],
                          worker_id: str) -> list[JobResult]:
    """A batch with explanation jobs: inference jobs in one forward (executor.run_batch),
    explanations one by one; results in the batch's order."""
    infer = [s for s in started if not is_explain(s)]
    results: dict[str, JobResult] = {}
    if infer:
        jobs = [(s.delivery.job_id, s.attempt, s.envelope.enqueue_unix_ms, s.envelope.infer)
                for s in infer]
        results.update((r.job_id, r) for r in run_batch(model, jobs, worker_id))
    for s in started:
        if is_explain(s):
            results[s.delivery.job_id] = explain_job(model, s, worker_id)
    return [results[s.delivery.job_id] for s in started]
