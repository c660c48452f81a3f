"""What the gateway records about each inference call: metrics and the log context.

Per call this is a few dict look-ups: the metric children of each label set are made once
(`labels()` takes a lock and builds its key every time), and the log fields are set on
their contextvars directly.
"""

from __future__ import annotations

import asyncio
import functools
import time
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from gateway.errors import classify
from maas.v1.model_service_pb2 import ModelVersion
from runtime import logs, metrics

UNKNOWN_MODEL = "_unknown"  # the label of calls that failed before their model was resolved
# Label sets whose metric children are kept: resolved models and versions, stable reasons.
MAX_CACHED_CHILDREN = 4096


@functools.lru_cache(maxsize=MAX_CACHED_CHILDREN)
def _succeeded(model: str, version: str) -> Any:
    return metrics.INFERENCE_SUCCESS.labels(model, version)


@functools.lru_cache(maxsize=MAX_CACHED_CHILDREN)
def _failed(model: str, reason: str) -> Any:
    return metrics.INFERENCE_FAILURE.labels(model, reason)


@functools.lru_cache(maxsize=MAX_CACHED_CHILDREN)
def _duration(model: str) -> Any:
    return metrics.REQUEST_DURATION_US.labels(model)


def failure_reason(exc: BaseException) -> str:
    """The stable reason of a failed call, as the client sees it (`classify`'s)."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return classify(exc).reason


class InferCall:
    """One call, as far as it got (a context manager: `observe_infer`). It counts its success
    or failure and its duration; its log lines carry its ids.

    Only resolved names become metric labels (a caller cannot mint new time series), without
    the tenant unless MAAS_METRICS_TENANT_LABELS=on (`metrics.model_label`).
    """

    __slots__ = ("_ids", "_started", "_tokens", "model", "version")

    def __init__(self, request_id: str, model: str) -> None:
        self.model = UNKNOWN_MODEL
        self.version = ""
        self._ids = (request_id, model[:256])
        self._tokens: list[tuple[ContextVar[Any], Token[Any]]] = []
        self._started = 0.0

    def resolved(self, version: ModelVersion) -> None:
        self.model, self.version = metrics.model_label(version.model), version.version

    def running(self, job_id: str, tenant: str, trace_id: str | None) -> None:
        """Its job is made: log lines carry the job's id, tenant and trace id too."""
        self._set(logs.job_id, job_id)
        self._set(logs.tenant, tenant)
        self._set(logs.trace_id, trace_id)

    def _set(self, var: ContextVar[Any], value: str | None) -> None:
        if value:  # empty values are not set (as `runtime.logs.log_context`)
            self._tokens.append((var, var.set(value)))

    def __enter__(self) -> InferCall:
        self._set(logs.request_id, self._ids[0])
        self._set(logs.model, self._ids[1])
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if exc is None:
                _succeeded(self.model, self.version).inc()
            else:  # counted, then raised on unchanged
                _failed(self.model, failure_reason(exc)).inc()
            _duration(self.model).observe((time.perf_counter() - self._started) * 1e6)
        finally:
            for var, token in reversed(self._tokens):
                var.reset(token)


def observe_infer(request_id: str, model: str) -> InferCall:
    """The call's record, as a context manager: counts the call's success or failure and its
    duration; logs inside it carry its ids."""
    return InferCall(request_id, model)
