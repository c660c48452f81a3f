"""What the worker records around a job or a batch: log context, trace spans."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

from runtime import tracing
from runtime.logs import log_context
from scheduler.queue import Started

log = logging.getLogger(__name__)


@contextlib.contextmanager
def batch_scope(model: str, version: str, started: Sequence[Started]) -> Iterator[None]:
    """Log lines inside carry the batch's job ids and trace ids; with OpenTelemetry, each
    job runs in a span whose parent is its caller's (`traceparent` from the gateway)."""
    single = len(started) == 1
    # The envelopes' maps as they are: a trace id is one look-up; OpenTelemetry's spans
    # (when installed) get copies.
    traces = tracing.trace_ids([s.envelope.trace_context for s in started])
    if tracing.HAS_OPENTELEMETRY:
        carriers = [dict(s.envelope.trace_context) for s in started]
        attributes: list[dict[str, str | int]] = [
            {"maas.job_id": s.delivery.job_id, "maas.model": model,
             "maas.model_version": version, "maas.attempt": s.attempt,
             "maas.batch_size": len(started)} for s in started]
    else:
        carriers, attributes = [], []
    with (log_context(model=model, job_id=started[0].delivery.job_id if single else None,
                      job_ids=None if single else [s.delivery.job_id for s in started],
                      tenant=started[0].envelope.tenant if single else None,
                      trace_id=(traces[0] if traces else None) if single else traces),
          tracing.job_spans("maas.worker.infer", carriers, attributes)):
        log.debug("running %d jobs of %s:%s", len(started), model, version)
        yield


@contextlib.contextmanager
def job_scope(started: Started) -> Iterator[None]:
    """The log context of one job (training): its id, tenant, model and trace id."""
    envelope = started.envelope
    with log_context(job_id=started.delivery.job_id, tenant=envelope.tenant,
                     model=envelope.model, trace_id=tracing.trace_id(envelope.trace_context)):
        yield
