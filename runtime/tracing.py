"""W3C trace context (`traceparent`, `tracestate`) carried from a caller to the worker.

The gateway copies the call's gRPC metadata into the job envelope's `trace_context`; the
worker logs its trace id and, when `opentelemetry-api` is installed, runs the job in a span
whose parent is the caller's. Without an SDK and exporter such spans cost next to nothing;
maas depends on neither.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

HEADERS = ("traceparent", "tracestate")
# version-traceid-parentid-flags; an all-zero trace id is invalid.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")

try:
    from opentelemetry import propagate, trace
except ImportError:  # optional: no spans, only log fields
    propagate = trace = None

HAS_OPENTELEMETRY = trace is not None


def from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """The trace headers of a call's invocation metadata (keys are lower case in gRPC)."""
    return {key: str(value) for key, value in metadata or ()
            if key in HEADERS and isinstance(value, str) and len(value) <= 512}


def trace_id(carrier: Mapping[str, str]) -> str | None:
    """The 32-hex trace id of a valid `traceparent`, else None."""
    match = _TRACEPARENT.match(carrier.get("traceparent", ""))
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)


def trace_ids(carriers: Iterable[Mapping[str, str]]) -> list[str]:
    return [t for c in carriers if (t := trace_id(c))]


@contextlib.contextmanager
def job_spans(name: str, carriers: Sequence[Mapping[str, str]],
              attributes: Sequence[Mapping[str, str | int]]) -> Iterator[None]:
    """One span per job of a batch, each a child of its caller's span (OpenTelemetry only)."""
    if trace is None or propagate is None:
        yield
        return
    tracer = trace.get_tracer("maas.worker")
    spans = [tracer.start_span(name, context=propagate.extract(dict(carrier)),
                               kind=trace.SpanKind.CONSUMER, attributes=dict(attrs))
             for carrier, attrs in zip(carriers, attributes, strict=True)]
    try:
        yield
    finally:
        for span in spans:
            span.end()
