"""What the gateway records about each inference call: metrics and the log context."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.errors import classify
from maas import metrics
from maas.logs import log_context
from maas.v1.model_service_pb2 import ModelVersion

UNKNOWN_MODEL = "_unknown"  # the label of calls that failed before their model was resolved


@dataclass
class InferCall:
    """One call, as far as it got: the model's label and version once the registry resolved
    them. Only resolved names become metric labels (a caller cannot mint new time series),
    without the tenant unless MAAS_METRICS_TENANT_LABELS=on (`metrics.model_label`)."""

    model: str = UNKNOWN_MODEL
    version: str = ""

    def resolved(self, version: ModelVersion) -> None:
        self.model, self.version = metrics.model_label(version.model), version.version


def failure_reason(exc: BaseException) -> str:
    """The stable reason of a failed call, as the client sees it (`classify`'s)."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return classify(exc).reason


@contextlib.contextmanager
def observe_infer(request_id: str, model: str) -> Iterator[InferCall]:
    """Counts the call's success or failure and its duration; logs carry its ids."""
    call = InferCall()
    started = time.perf_counter()
    try:
        with log_context(request_id=request_id, model=model[:256]):
            yield call
    except BaseException as exc:  # counted, then raised on unchanged
        metrics.INFERENCE_FAILURE.labels(call.model, failure_reason(exc)).inc()
        raise
    else:
        metrics.INFERENCE_SUCCESS.labels(call.model, call.version).inc()
    finally:
        metrics.REQUEST_DURATION_US.labels(call.model).observe(
            (time.perf_counter() - started) * 1e6)
