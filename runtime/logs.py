"""Logging setup for entry points only: text or one JSON object per line (MAAS_LOG_FORMAT).

The JSON lines carry the request's context, set with `log_context` where a request or job is
handled (the gateway's ModelInfer, the worker's batch): request_id, job_id (job_ids for a
batch), tenant, model and the W3C trace id, each only when set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextvars import ContextVar, Token
from typing import Any

from runtime.settings import Settings

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("job_id", default=None)
job_ids: ContextVar[list[str] | None] = ContextVar("job_ids", default=None)
tenant: ContextVar[str | None] = ContextVar("tenant", default=None)
model: ContextVar[str | None] = ContextVar("model", default=None)
trace_id: ContextVar[str | list[str] | None] = ContextVar("trace_id", default=None)
CONTEXT: dict[str, ContextVar[Any]] = {
    v.name: v for v in (request_id, job_id, job_ids, tenant, model, trace_id)}


@contextlib.contextmanager
def log_context(**values: object) -> Iterator[None]:
    """Sets context fields (empty values are skipped) for the log lines inside the block."""
    tokens: list[tuple[ContextVar[Any], Token[Any]]] = []
    try:
        for name, value in values.items():
            if value not in (None, "", []):
                var = CONTEXT[name]
                tokens.append((var, var.set(value)))
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def current_context() -> dict[str, object]:
    """The context fields set now."""
    return {name: value for name, var in CONTEXT.items() if (value := var.get()) is not None}


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self._process = process_name

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "process": self._process,
            "logger": record.name,
            "message": record.getMessage(),
            **current_context(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def configure_logging(settings: Settings, process_name: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(process_name))
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s {process_name} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
