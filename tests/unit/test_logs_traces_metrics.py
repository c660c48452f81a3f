"""Log context, trace context and metrics helpers, without sockets."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from prometheus_client import REGISTRY

from gateway.observe import UNKNOWN_MODEL, failure_reason, observe_infer
from maas.errors import InvalidArgument, ModelNotFound
from maas.v1.model_service_pb2 import ModelVersion
from runtime import metrics, tracing
from runtime.logs import JsonFormatter, current_context, log_context
from runtime.queue.v1.queue_pb2 import JobEnvelope, JobResult
from scheduler.queue import Delivery, Started
from worker.observe import batch_scope, job_scope

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def json_line(message: str = "hello") -> dict[str, object]:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, message, None, None)
    return dict(json.loads(JsonFormatter("worker").format(record)))


def started(job_id: str, traceparent: str = "", tenant: str = "") -> Started:
    envelope = JobEnvelope(job_id=job_id, model="cnn", model_version="1", tenant=tenant)
    if traceparent:
        envelope.trace_context["traceparent"] = traceparent
    return Started(Delivery("cnn", "1-0", job_id), 1, envelope)


def test_json_lines_carry_the_context_only_while_set() -> None:
    assert "request_id" not in json_line()
    with log_context(request_id="r-1", model="cnn", tenant=""):
        with log_context(job_id="j-1"):
            doc = json_line()
            assert (doc["request_id"], doc["model"], doc["job_id"]) == ("r-1", "cnn", "j-1")
            assert "tenant" not in doc  # empty values are not set
        assert "job_id" not in json_line()
    assert current_context() == {}


def test_an_unknown_context_field_is_an_error() -> None:
    with pytest.raises(KeyError), log_context(no_such_field="x"):
        pass
    assert current_context() == {}


def test_a_batch_logs_its_job_ids_and_trace_ids() -> None:
    batch = [started("a", TRACEPARENT), started("b"), started("c", TRACEPARENT)]
    with batch_scope("cnn", "1", batch):
        doc = json_line()
    assert doc["job_ids"] == ["a", "b", "c"] and "job_id" not in doc
    assert doc["trace_id"] == [TRACE, TRACE] and doc["model"] == "cnn"
    with batch_scope("cnn", "1", [started("a", TRACEPARENT, tenant="t1")]):
        doc = json_line()
    assert (doc["job_id"], doc["trace_id"], doc["tenant"]) == ("a", TRACE, "t1")
    with job_scope(started("train-1")):
        assert json_line()["job_id"] == "train-1"


def test_trace_headers_are_taken_from_metadata() -> None:
    metadata = (("traceparent", TRACEPARENT), ("tracestate", "k=v"), ("x-other", "1"),
                ("traceparent-bin", b"\x00"), ("tracestate", "x" * 600))
    assert tracing.from_metadata(metadata) == {"traceparent": TRACEPARENT, "tracestate": "k=v"}
    assert tracing.from_metadata(None) == {}


@pytest.mark.parametrize(("traceparent", "expected"), [
    (TRACEPARENT, TRACE),
    ("", None),
    ("garbage", None),
    (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),  # all-zero trace id is invalid
    (TRACEPARENT.upper(), None),
])
def test_trace_id_of_a_traceparent(traceparent: str, expected: str | None) -> None:
    assert tracing.trace_id({"traceparent": traceparent}) == expected


def test_job_spans_run_without_opentelemetry() -> None:
    with tracing.job_spans("x", [{"traceparent": TRACEPARENT}], [{"a": 1}]):
        pass


@pytest.mark.parametrize(("exc", "reason"), [
    (ModelNotFound("m"), "MODEL_NOT_FOUND"), (InvalidArgument("bad"), "INVALID_ARGUMENT"),
    (asyncio.CancelledError(), "CANCELLED"), (ConnectionError(), "UNAVAILABLE"),
    (RuntimeError(), "INTERNAL"),
])
def test_failure_reasons(exc: BaseException, reason: str) -> None:
    assert failure_reason(exc) == reason


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_observe_infer_labels_only_resolved_models() -> None:
    success = ("maas_inference_request_success_total", {"model": "obs", "version": "3"})
    failed = ("maas_inference_request_failure_total",
              {"model": UNKNOWN_MODEL, "reason": "MODEL_NOT_FOUND"})
    before = sample(*success[:1], **success[1]), sample(*failed[:1], **failed[1])
    with observe_infer("r", "obs") as call:
        call.resolved(ModelVersion(model="obs", version="3"))
    with pytest.raises(ModelNotFound), observe_infer("r", "made-up-name"):
        raise ModelNotFound("no such model")
    assert sample(*success[:1], **success[1]) == before[0] + 1
    assert sample(*failed[:1], **failed[1]) == before[1] + 1
    assert sample("maas_inference_request_failure_total", model="made-up-name",
                  reason="MODEL_NOT_FOUND") == 0


def test_observe_batch() -> None:
    before = sample("maas_inference_queue_duration_us_count", model="obs-b")
    metrics.observe_batch("obs-b", [JobResult(queue_us=10, compute_us=5)] * 3, busy_s=0.25)
    assert sample("maas_inference_queue_duration_us_count", model="obs-b") == before + 3
    assert sample("maas_inference_compute_duration_us_sum", model="obs-b") >= 15
    assert sample("maas_batch_size_sum", model="obs-b") >= 3


def test_the_metric_names_the_issue_asks_for() -> None:
    names = metrics.exposed_names()
    assert {
        "maas_inference_request_success_total", "maas_inference_request_failure_total",
        "maas_inference_queue_duration_us_bucket", "maas_inference_compute_duration_us_bucket",
        "maas_queue_depth", "maas_queue_oldest_age_seconds", "maas_batch_size_bucket",
        "maas_worker_busy_seconds_total", "maas_training_jobs", "maas_redis_errors_total",
        "maas_leases_reclaimed_total", "maas_dead_letters_total",
    } <= names
    assert all(n.startswith("maas_") for n in names)


def test_metrics_port_zero_serves_nothing() -> None:
    assert metrics.serve(0) is None
