"""Settings: `MAAS_*` environment variables, read once at start into a frozen object.

Nothing reads the environment at import time; entry points call `Settings.from_env()`
and pass the result down. README.md's settings table lists the same names.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

MIB = 1024 * 1024
LOG_FORMATS = ("text", "json")
AUTH_MODES = ("off", "on")
MAX_MODEL_SHARDS = 64  # scheduler.keys.MAX_SHARDS
# A model id (`<tenant>/<name>`) or name, as scheduler/model_names.py checks them.
_MODEL_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

# Numeric settings that may be 0; the other integers must be >= 1 and floats > 0.
_MINIMUM: dict[str, float] = {
    "gateway_port": 0,  # 0: any free port
    "training_slots": 0,  # 0: serve only
    "max_queue_depth": 0,  # 0: no limit
    "max_queue_delay_microseconds": 0,  # 0: never wait to fill a batch
    "torch_threads": 0,  # 0: one per core
    "worker_model_memory_mb": 0,  # 0: no budget
    "artifact_cache_mb": 0,  # 0: no budget
    "redis_wait_replicas": 0,  # 0: acknowledged once the primary has the job
    "shutdown_grace_s": 0,  # 0: cancel in-flight calls at once
    "max_connection_age_s": 0,  # 0: no maximum connection age
    "max_tensor_elements": 0,  # 0: no limit
    "tenant_rate_per_s": 0,  # 0: unlimited
    "tenant_max_queued": 0,  # 0: no limit
    "fair_share_slots": 0,  # 0: no fair share
    "tenant_max_training": 0,  # 0: no limit
    "metrics_port": 0,  # 0: no /metrics endpoint
    "health_port": 0,  # 0: no health server (worker, scheduler)
}


def _names(value: str) -> tuple[str, ...]:
    return tuple(sorted({p.strip() for p in value.split(",") if p.strip()}))


@dataclass(frozen=True)
class Settings:
    """Every knob of every maas process. Field `x_y` is read from `MAAS_X_Y`."""

    # May carry a password (redis://:PASSWORD@host) and TLS (rediss://): never in a repr or log.
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    # A submit is acknowledged only once this many Redis replicas have it (WAIT, up to
    # redis_wait_timeout_ms; short of it the caller gets UNAVAILABLE and retries): what a
    # failover of the primary cannot lose. 0 = acknowledged once the primary has it (its
    # append-only file, fsynced).
    redis_wait_replicas: int = 0
    redis_wait_timeout_ms: int = 1000
    # Where weights and other artifacts live; shared by gateway and workers.
    data_dir: Path = Path("./maas-data")
    # Where artifacts live: "" = `<data_dir>/artifacts`, shared by every process; or
    # s3://bucket/prefix, S3-compatible object storage (endpoint and credentials from the
    # standard AWS_* variables), with `<data_dir>/artifacts` as each node's cache.
    artifact_url: str = ""
    # Size budget of a node's cache of object-storage artifacts (LRU); 0 = no budget.
    artifact_cache_mb: int = 10240
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 50051
    # Largest gRPC message on the gateway and the SDK.
    max_message_bytes: int = 64 * MIB
    # Most tensor elements (all inputs together) of one inference request; 0 = no limit.
    max_tensor_elements: int = 1 << 24
    # Largest dataset upload (and its arrays, uncompressed).
    max_dataset_bytes: int = 512 * MIB
    # Largest model version (weights or archive) UploadModel takes.
    max_model_bytes: int = 64 * 1024 * MIB
    # Seconds a resumable model upload (CreateModelUpload) lives without a new byte; then its
    # bytes are deleted (gateways sweep at start and as uploads come).
    upload_ttl_s: float = 86400.0
    # "on": every call but health and reflection needs an API key; "off": local development.
    auth: str = "off"
    # A file with an API key (`maas keys generate`) the gateway installs at start with every
    # scope, for tenant "admin": the first key of a cluster. "" = none.
    admin_key_file: str = ""
    # TLS on the gateway (PEM files): certificate chain and private key, both or neither.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # CA bundle (PEM) client certificates must chain to; set = mutual TLS, certificate required.
    tls_client_ca_file: str = ""
    # Calls a tenant may make per second (token bucket in Redis, a second's burst); 0 = no limit.
    tenant_rate_per_s: float = 0.0
    # Inference lease; the worker renews it every lease/3 while it works.
    infer_lease_ms: int = 3000
    max_attempts: int = 3
    # Most jobs queued or running per model and priority; beyond it a submit is refused with
    # UNAVAILABLE and a retry delay (0 = no limit).
    max_queue_depth: int = 100_000
    # Most jobs one tenant may have queued per model; beyond it RESOURCE_EXHAUSTED with a
    # QuotaFailure (0 = no limit).
    tenant_max_queued: int = 0
    # Fair share across tenants: the stream entries one tenant (of weight 1) may have waiting
    # per model; its further jobs wait in its own backlog, so a flood cannot starve another
    # tenant's trickle. Keep it >= 2 * MAAS_MAX_BATCH_SIZE. 0 = first come, first served.
    fair_share_slots: int = 64
    # Tenant weights of the fair share, "acme=3,beta=0.5" (unlisted tenants weigh 1).
    tenant_weights: str = ""
    # Retry backoff of a job whose worker was lost: base * 2^(attempt-1) up to the cap,
    # with jitter (times 0.5..1).
    retry_backoff_ms: int = 200
    retry_backoff_max_ms: int = 10_000
    # "on": a model request when no worker is alive is refused with UNAVAILABLE and a retry
    # delay; "off": it is queued (a cluster that scales workers from zero, e.g. with KEDA).
    require_live_worker: str = "on"
    # Deadline of a call that sets none, so no call can wait forever.
    default_deadline_s: float = 60.0
    # How long a finished job's record stays readable (async and training work).
    result_ttl_s: float = 3600.0
    # The same for synchronous inference, whose caller already has the answer: short, so
    # that thousands of requests per second do not fill Redis.
    infer_result_ttl_s: float = 60.0
    # Training lease (renewed by the worker's heartbeat) and attempts (a resume counts).
    train_lease_ms: int = 30000
    train_max_attempts: int = 5
    # Most training jobs one tenant may have queued or running at once; beyond it
    # RESOURCE_EXHAUSTED with a QuotaFailure (0 = no limit).
    tenant_max_training: int = 0
    # Training jobs a worker runs at once (each in its own subprocess); 0 = serve only.
    training_slots: int = 1
    # Most data-parallel replicas a training job may ask for (spec.replicas).
    train_max_replicas: int = 8
    # Most parameters a training job's model may have, estimated from its architecture and
    # config before it is queued (a bigger spec is INVALID_ARGUMENT).
    train_max_params: int = 100_000_000
    # How long a partial gang of replicas holds its workers before it is released and the
    # job waits in the queue again (all or none: no deadlock with fewer workers than replicas).
    train_gang_timeout_s: float = 30.0
    # The scheduler daemon's reaper period.
    reaper_interval_ms: int = 500
    # Triton's batching knobs, for every model a worker serves.
    max_batch_size: int = 32
    max_queue_delay_microseconds: int = 2000
    # "auto" picks CUDA when present, else CPU; or "cpu", "cuda:0", ...
    worker_device: str = "auto"
    # Memory budget of a worker's model cache; least-recently-used models are evicted
    # (and reloaded on demand) beyond it. 0 = unlimited.
    worker_model_memory_mb: int = 0
    # Models this worker serves, comma-separated model ids (`<tenant>/<name>`) or names (a
    # name pins the shared model and every tenant's of that name); empty = every model; all
    # prefixed with `!` = every model but those (a general fleet beside per-model pools).
    # Only the workers that serve a model read its jobs.
    worker_models: str = ""
    # Models that have a worker pool of their own (names or ids, comma-separated), scaled on
    # their own queue (`maas_queue_depth{model=...}`): the scheduler leaves their jobs out of
    # `maas_workers_wanted`, the general fleet's signal. Empty = every model counts.
    pooled_models: str = ""
    # Hot models whose inference queue is split over several queues in different hash slots
    # (so over several primaries of a Redis Cluster): `MODEL=N` pairs, comma-separated, a
    # MODEL being an id or a name (a name: the shared model and every tenant's of that
    # name), N in 1..64. Every gateway, worker and scheduler must be given the same value.
    model_shards: str = ""
    # torch intra-op threads per worker; 0 = one per core the worker may use.
    torch_threads: int = 1
    # Uploaded archives (code) run in sandboxed runner processes: the longest one forward
    # may take before its runner is killed (the jobs fail MODEL_TIMEOUT), the address space
    # a runner may map, how many runners (one per archive version) a worker keeps, after
    # how many timeouts or crashes a version is quarantined, and how long verifying an
    # archive may take.
    max_forward_ms: int = 10_000
    runner_memory_mb: int = 4096
    max_runners: int = 4
    quarantine_after: int = 3
    verify_timeout_s: float = 120.0
    # Seconds a gateway waits for in-flight calls on SIGTERM.
    shutdown_grace_s: float = 10.0
    # Seconds a gateway keeps a client's HTTP/2 connection before it asks the client (GOAWAY)
    # to open a new one, so clients of a Kubernetes Service spread onto new gateways (calls
    # in flight finish first); 0 = connections live as long as the client keeps them.
    max_connection_age_s: float = 300.0
    # Prometheus `/metrics` over HTTP on this port (of metrics_host); 0 = off.
    metrics_port: int = 0
    # Address `/metrics` listens on: loopback unless a scraper elsewhere must reach it
    # (deploy/k8s sets 0.0.0.0).
    metrics_host: str = "127.0.0.1"
    # "on": metric labels name the tenant of a model (`acme/digits`); "off": a tenant's model
    # is labelled `*/digits` (every tenant's `digits` added up), shared models by their name.
    metrics_tenant_labels: str = "off"
    # grpc.health.v1 of a worker or scheduler on this port ("" ready, "liveness"); 0 = off.
    # The gateway serves health on its own gRPC port and ignores it.
    health_port: int = 0
    log_format: str = "text"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        """ValueError naming the variable of the first value out of range."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, int | float) and (wanted := _out_of_range(f.name, value)):
                raise ValueError(f"MAAS_{f.name.upper()}={value!r}: must be {wanted}")
        for name in ("gateway_port", "metrics_port", "health_port"):
            if getattr(self, name) > 65535:
                raise ValueError(f"MAAS_{name.upper()}={getattr(self, name)}: "
                                 "a port is 0-65535")
        self._check_security()
        if self.artifact_url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,62}(/.*)?",
                                                  self.artifact_url):
            raise ValueError(f"MAAS_ARTIFACT_URL={self.artifact_url!r}: must be empty (the "
                             "local directory) or s3://bucket[/prefix]")
        self.tenant_weight_map  # noqa: B018 -- parses, raises ValueError when malformed
        self.model_shard_counts  # noqa: B018 -- likewise
        pins = self.worker_model_pins
        if len({p.startswith("!") for p in pins}) > 1 or "!" in pins:
            raise ValueError(f"MAAS_WORKER_MODELS={self.worker_models!r}: list the models to "
                             "serve (cnn,mlp) or, each with a `!`, the models not to serve "
                             "(!cnn,!mlp), not both")
        if self.require_live_worker not in AUTH_MODES:
            raise ValueError(f"MAAS_REQUIRE_LIVE_WORKER={self.require_live_worker!r}: must be "
                             "on or off")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"MAAS_LOG_FORMAT={self.log_format!r}: must be one of {LOG_FORMATS}")
        if self.log_level.upper() not in logging.getLevelNamesMapping():
            raise ValueError(f"MAAS_LOG_LEVEL={self.log_level!r}: must be DEBUG, INFO, WARNING, "
                             "ERROR or CRITICAL")

    def _check_security(self) -> None:
        if self.auth not in AUTH_MODES:
            raise ValueError(f"MAAS_AUTH={self.auth!r}: must be one of {AUTH_MODES}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("MAAS_TLS_CERT_FILE and MAAS_TLS_KEY_FILE: set both or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("MAAS_TLS_CLIENT_CA_FILE needs MAAS_TLS_CERT_FILE and "
                             "MAAS_TLS_KEY_FILE (mutual TLS is TLS first)")
        if self.metrics_tenant_labels not in AUTH_MODES:
            raise ValueError(f"MAAS_METRICS_TENANT_LABELS={self.metrics_tenant_labels!r}: "
                             "must be on or off")
        if not self.metrics_host.strip():
            raise ValueError("MAAS_METRICS_HOST='': name an address (127.0.0.1, 0.0.0.0, ...)")

    @property
    def tenant_weight_map(self) -> dict[str, float]:
        """MAAS_TENANT_WEIGHTS as {tenant: weight}."""
        weights: dict[str, float] = {}
        for item in filter(None, (p.strip() for p in self.tenant_weights.split(","))):
            tenant, sep, raw = item.partition("=")
            try:
                weight = float(raw) if sep and tenant.strip() else math.nan
            except ValueError:
                weight = math.nan
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"MAAS_TENANT_WEIGHTS: {item!r} is not tenant=weight with a "
                                 "weight > 0 (e.g. acme=3,beta=0.5)")
            weights[tenant.strip()] = weight
        return weights

    @property
    def model_shard_counts(self) -> dict[str, int]:
        """MAAS_MODEL_SHARDS as {model id or name: shards}."""
        counts: dict[str, int] = {}
        for item in filter(None, (p.strip() for p in self.model_shards.split(","))):
            model, sep, raw = (part.strip() for part in item.partition("="))
            count = int(raw) if sep and raw.isascii() and raw.isdigit() else 0
            if not (model and _MODEL_ID.fullmatch(model) and 1 <= count <= MAX_MODEL_SHARDS):
                raise ValueError(f"MAAS_MODEL_SHARDS: {item!r} is not model=N with a model id "
                                 f"or name and 1 <= N <= {MAX_MODEL_SHARDS} "
                                 "(e.g. cnn=4,acme/big=2)")
            counts[model] = count
        return counts

    @property
    def worker_model_pins(self) -> tuple[str, ...]:
        """MAAS_WORKER_MODELS as a tuple; empty: every model (scheduler.workers.serves)."""
        return _names(self.worker_models)

    @property
    def pooled_model_names(self) -> tuple[str, ...]:
        """MAAS_POOLED_MODELS as a tuple."""
        return _names(self.pooled_models)

    @property
    def is_auth_on(self) -> bool:
        return self.auth == "on"

    @property
    def is_tls_on(self) -> bool:
        return bool(self.tls_cert_file)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Settings from `MAAS_*` variables, then explicit overrides (e.g. CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get("MAAS_" + f.name.upper())
            if raw is None or raw == "":
                continue
            kind = type(getattr(cls, f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError as exc:
                raise ValueError(f"MAAS_{f.name.upper()}={raw!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]

    @property
    def artifact_dir(self) -> Path:
        """Weights and other stored files."""
        return self.data_dir / "artifacts"

    @property
    def gateway_target(self) -> str:
        return f"{self.gateway_host}:{self.gateway_port}"


def _out_of_range(name: str, value: float) -> str | None:
    """What a numeric setting must be, when `value` is not that; else None."""
    low = _MINIMUM.get(name, 1 if isinstance(value, int) else 0)
    is_strict = name not in _MINIMUM and isinstance(value, float)
    if math.isfinite(value) and (value > low if is_strict else value >= low):
        return None
    bound = f"{'>' if is_strict else '>='} {low}"
    return bound if math.isfinite(value) else f"a finite number {bound}"
