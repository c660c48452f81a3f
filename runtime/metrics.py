"""Prometheus metrics of every maas process, and the `/metrics` endpoint that serves them.

Names follow Triton's (`nv_inference_request_success` → `maas_inference_request_success_total`)
where the meaning is the same, so dashboards carry over. Each process exports what it sees:

- gateway: request success/failure and end-to-end duration (what clients experienced);
- worker: queue and compute durations, batch sizes, busy time, lost leases, jobs handed
  back to a worker with the memory for them, training jobs it ran;
- scheduler: queue depth and age per model stream, reclaimed leases, training jobs by state.

Dead letters and expired jobs are counted where they happen (the worker's START, the
scheduler's REAP): sum them over processes. Gauges of the scheduler are exported by every
replica: aggregate them with `max`, not `sum`. deploy/grafana/maas-dashboard.json reads
only these names (a test checks it).

Tenant names stay out of labels unless MAAS_METRICS_TENANT_LABELS=on (`model_label`): a
tenant's model `acme/digits` is labelled `*/digits`, the sum over every tenant's `digits`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from runtime.queue.v1.queue_pb2 import JobResult
from runtime.settings import Settings

log = logging.getLogger(__name__)

# Microseconds, 100 us to 60 s: inference is fast, but a queued job may wait for a worker.
DURATION_US_BUCKETS = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
                       250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
                       30_000_000, 60_000_000)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# --- gateway ------------------------------------------------------------------------------
INFERENCE_SUCCESS = Counter(
    "maas_inference_request_success", "Inference requests answered with a result.",
    ["model", "version"])
INFERENCE_FAILURE = Counter(
    "maas_inference_request_failure",
    "Inference requests that failed, by the error's reason (MODEL_NOT_FOUND, ...).",
    ["model", "reason"])
REQUEST_DURATION_US = Histogram(
    "maas_inference_request_duration_us",
    "Gateway-side duration of an inference request, from arrival to answer (us).",
    ["model"], buckets=DURATION_US_BUCKETS)

# --- worker -------------------------------------------------------------------------------
QUEUE_DURATION_US = Histogram(
    "maas_inference_queue_duration_us",
    "Time a job waited between enqueue and the start of its forward pass (us).",
    ["model"], buckets=DURATION_US_BUCKETS)
COMPUTE_DURATION_US = Histogram(
    "maas_inference_compute_duration_us",
    "Time of the forward pass that ran the job (us; shared by a batch's jobs).",
    ["model"], buckets=DURATION_US_BUCKETS)
BATCH_SIZE = Histogram(
    "maas_batch_size", "Jobs run together in one forward pass.", ["model"],
    buckets=BATCH_SIZE_BUCKETS)
EXEC_COUNT = Counter(
    "maas_inference_exec_count", "Forward passes (batches) run by the worker.", ["model"])
WORKER_BUSY_SECONDS = Counter(
    "maas_worker_busy_seconds", "Seconds the worker spent running batches (load + forward).")
WORKER_LOST_LEASES = Counter(
    "maas_worker_lost_leases",
    "Jobs whose lease the reaper took while this worker ran them: their results were "
    "dropped and they run again. 0 in a healthy cluster.", ["model"])
WORKER_JOBS_HANDED_BACK = Counter(
    "maas_worker_jobs_handed_back",
    "Jobs this worker handed back to the queue unrun (attempt refunded) because their "
    "version's weights exceed its model memory while a live worker's budget fits them.",
    ["model"])
TRAINING_FINISHED = Counter(
    "maas_training_jobs_finished",
    "Training job attempts that ended on this worker: SUCCEEDED, FAILED, CANCELLED, "
    "HANDED_BACK (drain), REQUEUED (attempt failed) or LEASE_LOST.", ["state"])
WORKER_MODEL_MEMORY_BYTES = Gauge(
    "maas_worker_model_memory_bytes",
    "Memory the models loaded on this worker use (their weights, as its model cache counts "
    "them).")
WORKER_MODEL_MEMORY_BUDGET_BYTES = Gauge(
    "maas_worker_model_memory_budget_bytes",
    "This worker's model memory budget (MAAS_WORKER_MODEL_MEMORY_MB); 0 = none.")
TRAINING_SAMPLES_PER_SECOND = Gauge(
    "maas_training_samples_per_second",
    "Throughput of the training job running on this worker (its latest progress report; "
    "0 when none runs).")

# --- scheduler ----------------------------------------------------------------------------
QUEUE_DEPTH = Gauge(
    "maas_queue_depth", "Jobs in a model's stream: not yet read plus leased (lag + pending).",
    ["model"])
QUEUE_OLDEST_AGE_SECONDS = Gauge(
    "maas_queue_oldest_age_seconds",
    "Age of the oldest job still in a model's stream (queued or leased); 0 when empty.",
    ["model"])
WORKERS_WANTED = Gauge(
    "maas_workers_wanted",
    "Worker replicas the queues ask for, over every model and priority: one per "
    "MAAS_MAX_BATCH_SIZE inference jobs queued or leased (rounded up), plus the replicas of "
    "each queued or running training job (a gang of N asks for N). KEDA's trigger.")
TRAINING_JOBS = Gauge(
    "maas_training_jobs", "Training jobs by state: queued (not yet leased) or running.",
    ["state"])
LEASES_RECLAIMED = Counter(
    "maas_leases_reclaimed", "Expired leases the scheduler reclaimed (requeued, expired, "
    "dead-lettered or dropped jobs).", ["model"])

# --- several processes --------------------------------------------------------------------
DEAD_LETTERS = Counter(
    "maas_dead_letters", "Jobs dead-lettered after losing their worker max_attempts times.",
    ["model"])
JOBS_EXPIRED = Counter(
    "maas_jobs_expired", "Jobs whose deadline passed before they could run.", ["model"])
REDIS_ERRORS = Counter(
    "maas_redis_errors", "Redis calls that failed with a transient error (then retried).",
    ["process"])

ALL: tuple[Any, ...] = (
    INFERENCE_SUCCESS, INFERENCE_FAILURE, REQUEST_DURATION_US, QUEUE_DURATION_US,
    COMPUTE_DURATION_US, BATCH_SIZE, EXEC_COUNT, WORKER_BUSY_SECONDS, WORKER_LOST_LEASES,
    WORKER_JOBS_HANDED_BACK, WORKER_MODEL_MEMORY_BYTES, WORKER_MODEL_MEMORY_BUDGET_BYTES,
    TRAINING_FINISHED, TRAINING_SAMPLES_PER_SECOND, QUEUE_DEPTH, QUEUE_OLDEST_AGE_SECONDS,
    WORKERS_WANTED, TRAINING_JOBS, LEASES_RECLAIMED, DEAD_LETTERS, JOBS_EXPIRED, REDIS_ERRORS)


# Tenant names are customer data: off by default, a label shows `*` where the tenant was.
HIDDEN_TENANT = "*"


@dataclass
class _LabelPolicy:
    is_showing_tenants: bool = False


_POLICY = _LabelPolicy()


def show_tenants(is_on: bool) -> None:
    """Whether labels name tenants (MAAS_METRICS_TENANT_LABELS=on); set once at start."""
    _POLICY.is_showing_tenants = is_on


def model_label(model: str) -> str:
    """The `model` label of a model id (`<tenant>/<name>`, or `<name>` when shared).

    With tenant labels off a tenant's model is `*/<name>`: the same-named models of every
    tenant add up into one series, apart from the shared model of that name. `*` can never
    be a tenant name, so the label cannot be mistaken for one.
    """
    _, sep, name = model.rpartition("/")
    if not sep or _POLICY.is_showing_tenants:
        return model
    return f"{HIDDEN_TENANT}/{name}"


def tenant_label(tenant: str) -> str:
    """The `tenant` label of a tenant: its name when tenant labels are on, else `*`
    ("" stays "": the shared namespace)."""
    return tenant if not tenant or _POLICY.is_showing_tenants else HIDDEN_TENANT


def exposed_names() -> set[str]:
    """Every series name the metrics above expose (`_total`, `_bucket`, `_sum`, ...)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created")}
    return {family.name + suffix for metric in ALL for family in metric.collect()
            for suffix in suffixes[family.type]}


@dataclass(frozen=True)
class _BatchSeries:
    """The worker's per-model series of one `model` label, looked up once (`.labels()`
    takes a lock and builds a key: a batch would pay it twice per job)."""

    queue_us: Histogram
    compute_us: Histogram
    batch_size: Histogram
    exec_count: Counter


_BATCH_SERIES: dict[str, _BatchSeries] = {}


def _batch_series(label: str) -> _BatchSeries:
    found = _BATCH_SERIES.get(label)
    if found is None:
        found = _BATCH_SERIES[label] = _BatchSeries(
            QUEUE_DURATION_US.labels(label), COMPUTE_DURATION_US.labels(label),
            BATCH_SIZE.labels(label), EXEC_COUNT.labels(label))
    return found


def observe_batch(model: str, results: Sequence[JobResult], busy_s: float) -> None:
    """A worker ran one batch: its jobs' durations, its size, the worker's busy time."""
    series = _batch_series(model_label(model))
    for result in results:
        series.queue_us.observe(result.queue_us)
        series.compute_us.observe(result.compute_us)
    series.batch_size.observe(len(results))
    series.exec_count.inc()
    WORKER_BUSY_SECONDS.inc(busy_s)


def serve(port: int, host: str = "127.0.0.1") -> Any:
    """Serves `/metrics` over HTTP in a daemon thread; port 0 = disabled (returns None).
    Returns the HTTP server (call `.shutdown()` to stop it)."""
    if port == 0:
        return None
    server, _ = start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)
    return server


def start(settings: Settings) -> Any:
    """A process's metrics as its settings ask: the label policy
    (MAAS_METRICS_TENANT_LABELS), then `/metrics` on MAAS_METRICS_HOST:MAAS_METRICS_PORT."""
    show_tenants(settings.metrics_tenant_labels == "on")
    return serve(settings.metrics_port, settings.metrics_host)
